"""The walk's behaviours on a GPU: they run whenever CUDA is at hand (skipped otherwise).

`WALKOPT_GPU_TEST_DEVICE=cpu python -m pytest tests/test_gpu.py` runs the ones that make sense on a CPU there, to
check the tests themselves on a machine without a GPU.
"""
import contextlib, os, warnings
from functools import partial
import numpy as np, pytest, torch
from torch import nn
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.optimizer import SGD, Lookahead, OptimWrapper
from walkopt.core import all_finite, losses_along
from walkopt.callback import WalkCallback
from walkopt.test_utils import tiny_learner, fit_quietly, ReplayLrs, nan_loss_at, optimizer_state, run_hooks_inside, max_gap

DEVICE = os.environ.get('WALKOPT_GPU_TEST_DEVICE', 'cuda')
pytestmark = pytest.mark.skipif(DEVICE == 'cuda' and not torch.cuda.is_available(), reason='needs a CUDA GPU')
cuda_only = pytest.mark.skipif(DEVICE != 'cuda', reason='CUDA only')

@pytest.fixture(autouse=True)
def deterministic(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', True)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)

@contextlib.contextmanager
def sync_debug_errors():
    "Within: any CUDA operation that synchronises with the host raises"
    torch.cuda.set_sync_debug_mode('error')
    try: yield
    finally: torch.cuda.set_sync_debug_mode('default')

LOOKAHEAD = lambda ps, lr: Lookahead(SGD(ps, lr, mom=0.9), k=2)
SYNC_CASES = {'default': ({}, None), 'vmap': (dict(trials='vmap'), None), 'every 2': (dict(every=2, smooth=0.5), None),
              'lag 0': (dict(judge_lag=0), None), 'AdamW': ({}, partial(OptimWrapper, opt=torch.optim.AdamW)),
              'Lookahead': ({}, LOOKAHEAD), 'fp16': ({}, 'fp16'), 'bf16': ({}, 'bf16')}

@cuda_only
@pytest.mark.parametrize('case', SYNC_CASES)
def test_walk_hooks_never_synchronise(case):
    "Every per-batch hook of the walk, over whole fits from the first step, under `set_sync_debug_mode('error')`"
    kw, setup = SYNC_CASES[case]
    learn = tiny_learner(device=DEVICE, cbs=(walk := WalkCallback(**kw)), **({'opt_func': setup} if callable(setup) else {}))
    if setup == 'fp16': learn.to_fp16()
    if setup == 'bf16': learn.to_bf16()
    run_hooks_inside(walk, sync_debug_errors)
    fit_quietly(learn, 2)
    assert next(learn.model.parameters()).is_cuda and len(walk.history) > 0
    print(f"{case}: {walk.result_copy.blocked} of {len(walk.history)} steps waited for a walk's result, {walk.result_copy.waited * 1e3:.2f} ms in all")

class StepsReached(Callback):
    "Counts iterations whose step survived MixedPrecision's overflow check"
    order = MixedPrecision.order + 5
    def before_fit(self): self.n = 0
    def before_step(self): self.n += 1

@cuda_only
@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
def test_mixed_precision(amp):
    learn = tiny_learner(device=DEVICE, cbs=[WalkCallback(accept=None), StepsReached()])  # the lowest loss wins
    learn.to_fp16() if amp == 'fp16' else learn.to_bf16()
    fit_quietly(learn, 2)
    h = learn.walk.history
    assert len(h) == learn.steps_reached.n > 0  # an overflowed fp16 iteration is skipped, not walked
    assert np.isfinite(h['loss']).all() and (h['loss'] <= h['base_loss']).all()
    assert learn.model[1].num_batches_tracked.item() == 16

@pytest.mark.parametrize('opt_func', [partial(OptimWrapper, opt=torch.optim.AdamW), LOOKAHEAD],
                         ids=['torch_adamw', 'lookahead'])
def test_the_walk_is_the_optimizers_step_replayed(opt_func):
    walked = fit_quietly(tiny_learner(device=DEVICE, opt_func=opt_func, bn=False, dropout=0., cbs=WalkCallback()), 2)
    plain = fit_quietly(tiny_learner(device=DEVICE, opt_func=opt_func, bn=False, dropout=0., cbs=ReplayLrs(walked.walk.history['lr'])), 2)
    assert max_gap(walked.model.parameters(), plain.model.parameters()) < 1e-5
    assert len(set(walked.walk.history['lr'])) > 2

def test_an_undone_step():
    learn = nan_loss_at(tiny_learner(device=DEVICE, cbs=WalkCallback()), {2, 5})
    with warnings.catch_warnings(): warnings.simplefilter('ignore'); fit_quietly(learn)
    assert learn.walk.history['skipped'].tolist() == [i in (2, 5) for i in range(8)]
    for s in optimizer_state(learn): assert s['step'].item() == 6
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())

def test_loop_and_vmap_agree_without_dropout():
    "(With dropout they need not: CUDA's fused dropout draws another mask under `vmap`)"
    loop, vmap = (fit_quietly(tiny_learner(device=DEVICE, dropout=0., cbs=WalkCallback(trials=t)), 2) for t in ('loop', 'vmap'))
    assert vmap.walk.history['lr'].tolist() == loop.walk.history['lr'].tolist()
    np.testing.assert_allclose(np.stack(vmap.walk.history['losses']), np.stack(loop.walk.history['losses']), rtol=1e-4)

def test_same_seed_same_walk():
    runs = [fit_quietly(tiny_learner(device=DEVICE, cbs=WalkCallback()), 2) for _ in range(2)]
    assert runs[0].walk.history.equals(runs[1].walk.history)
    assert all(torch.equal(a, b) for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters()))

def test_all_finite_checks_values_not_norms():
    big = [torch.full((10_000,), 1000., dtype=torch.float16, device=DEVICE), torch.full((10_000,), 1e36, device=DEVICE)]
    assert all_finite(big).item()
    for bad in (float('nan'), float('inf')):
        assert not all_finite([*big, torch.tensor([1., bad], device=DEVICE)]).item()

@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two GPUs')
def test_dataparallel_replicas_draw_one_mask_per_walk():
    "Replicas on GPUs without parameters draw from their own generators: forked too, one mask for all candidates"
    torch.manual_seed(0)
    model = nn.DataParallel(nn.Sequential(nn.Linear(8, 64), nn.Dropout(0.5), nn.Linear(64, 1)).cuda(), device_ids=[0, 1])
    params = list(model.parameters())
    x, y = torch.randn(64, 8, device='cuda'), torch.randn(64, 1, device='cuda')
    states = [torch.cuda.get_rng_state(d) for d in (0, 1)]
    same = [p.detach().clone() for p in params]
    losses = losses_along(params, same, [torch.zeros_like(p) for p in params], [1., 1., 1.],
                          lambda: nn.functional.mse_loss(model(x), y), model)
    assert len(set(losses.mean(1).tolist())) == 1  # the same point, the same masks on both GPUs (a row per candidate)
    assert all(torch.equal(torch.cuda.get_rng_state(d), s) for d, s in zip((0, 1), states))
