"WalkCallback inside fastai's loop: optimizers, schedules, mixed precision, accumulation, clipping, freezing, export."
from functools import partial
import numpy as np, pytest, torch
from torch import nn
from fastcore.test import test_close as close
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.schedule import fit_one_cycle, fit_flat_cos  # patches Learner
from fastai.callback.tracker import SaveModelCallback
from fastai.callback.training import GradientAccumulation, GradientClip
from fastai.learner import load_learner
from fastai.optimizer import SGD, Adam, RAdam, Lookahead, OptimWrapper, ranger
from walkopt.callback import WalkCallback
from walkopt.test_utils import tiny_learner, ReplayLrs, fit_quietly, optimizer_state

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

def max_gap(a, b):
    "Largest difference between two sequences of tensors"
    return max((x - y).abs().max().item() for x, y in zip(a, b))

OPTIMIZERS = dict(
    sgd=SGD, sgd_momentum=partial(SGD, mom=0.9), adam=Adam, radam=RAdam, ranger=partial(ranger, k=3),
    lookahead_sgd=lambda ps, lr: Lookahead(SGD(ps, lr, mom=0.9), k=2),
    torch_sgd=partial(OptimWrapper, opt=partial(torch.optim.SGD, momentum=0.9)),
    torch_adamw=partial(OptimWrapper, opt=torch.optim.AdamW))

@pytest.mark.parametrize('name', OPTIMIZERS)
def test_walk_is_the_optimizers_step_replayed(name):
    "Plain training on the walk's learning rates reaches the same weights and optimizer state"
    opt_func = OPTIMIZERS[name]
    walked = fit_quietly(tiny_learner(opt_func=opt_func, bn=False, dropout=0., cbs=WalkCallback()), 2)
    h = walked.walk.history
    assert len(h) == 16 and len(set(h['lr'])) > 2  # the walk really chose different step sizes
    plain = fit_quietly(tiny_learner(opt_func=opt_func, bn=False, dropout=0., cbs=ReplayLrs(h['lr'])), 2)
    assert max_gap(walked.model.parameters(), plain.model.parameters()) < 1e-5
    ws, ps = ([v.double() for s in optimizer_state(l) for v in s.values()] for l in (walked, plain))
    assert len(ws) == len(ps) > 0 and max_gap(ws, ps) < 1e-4
    if isinstance(walked.opt, Lookahead):
        assert walked.opt.count == plain.opt.count == 16
        assert max_gap([p for pg in walked.opt.slow_weights for p in pg], [p for pg in plain.opt.slow_weights for p in pg]) < 1e-5

def random_state_after_fit(cbs):
    fit_quietly(tiny_learner(cbs=cbs))  # with dropout: the training forwards draw random numbers
    return [torch.get_rng_state()] + ([torch.cuda.get_rng_state()] if torch.cuda.is_available() else [])

def test_walk_draws_no_training_random_numbers():
    "Same seed, same random stream with or without the walk: same batches, masks and augmentations"
    for a, b in zip(random_state_after_fit([]), random_state_after_fit([WalkCallback()])): assert torch.equal(a, b)

class BuffersAfterWalk(Callback):
    "Checks, after every walk, that the buffers are as the training forward left them"
    order = WalkCallback.order + 1
    def before_fit(self): self.checked = 0
    def after_backward(self): self.before = [b.detach().clone() for b in self.model.buffers()]
    def after_step(self):
        assert all(torch.equal(b, s) for b, s in zip(self.model.buffers(), self.before))
        self.checked += 1

def test_trials_leave_batchnorm_buffers_alone():
    learn = fit_quietly(tiny_learner(cbs=[WalkCallback(), BuffersAfterWalk()]))
    assert learn.buffers_after_walk.checked == 8
    assert learn.model[1].num_batches_tracked.item() == 8

class RandomProbe(nn.Module):
    "Identity that records one random draw per forward, as dropout would"
    def __init__(self): super().__init__(); self.draws = []
    def forward(self, x):
        if self.training: self.draws.append(torch.rand(1).item())
        return x

def test_one_dropout_mask_per_walk():
    learn = tiny_learner(cbs=WalkCallback())
    learn.model.insert(0, probe := RandomProbe())
    fit_quietly(learn)
    draws = np.array(probe.draws).reshape(8, 11)  # per iteration: the training forward, then 10 trials
    assert (draws[:, 1:] == draws[:, 1:2]).all()  # all candidates of an iteration see the same random numbers
    assert len(set(draws[:, 1])) == 8  # and each iteration new ones

def test_adam_state_advances_once_per_iteration():
    learn = fit_quietly(tiny_learner(cbs=WalkCallback()), 2)
    for p in learn.model.parameters(): assert learn.opt.state[p]['step'] == 16

def test_frozen_parameters_never_move():
    learn = fit_quietly(tiny_learner(bn=False, cbs=WalkCallback()))  # leaves zeroed, non-None gradients behind
    learn.freeze()
    frozen = [p.detach().clone() for p in learn.opt.param_lists[0]]
    trained = [p.detach().clone() for p in learn.opt.param_lists[1]]
    fit_quietly(learn, 1)
    assert all(torch.equal(p, q) for p, q in zip(learn.opt.param_lists[0], frozen))
    assert max_gap(learn.opt.param_lists[1], trained) > 0

def test_discriminative_lrs_keep_their_ratio():
    walked = fit_quietly(tiny_learner(bn=False, dropout=0., cbs=WalkCallback()), 1, lr=slice(1e-4, 1e-2))
    plain = fit_quietly(tiny_learner(bn=False, dropout=0., cbs=ReplayLrs(walked.walk.history['lr'])), 1, lr=slice(1e-4, 1e-2))
    assert max_gap(walked.model.parameters(), plain.model.parameters()) < 1e-5
    close([h['lr'] for h in walked.opt.hypers], [1e-4, 1e-2])  # the user's lrs are back after fit

@pytest.mark.parametrize('method', ['fit_one_cycle', 'fit_flat_cos'])
def test_schedule_keeps_its_shape_around_the_walked_scale(method):
    walked = fit_quietly(tiny_learner(cbs=WalkCallback()), 2, method, 1e-3)
    plain = fit_quietly(tiny_learner(), 2, method, 1e-3)
    h = walked.walk.history
    unit = walked.walk.mults.index(1.)
    centre = np.array([lrs[unit] for lrs in h['lrs']])
    close(centre / h['scale'].values, plain.recorder.lrs, eps=1e-10)  # the schedule, times the walk's scale
    close(walked.recorder.lrs, h['lr'].tolist())                   # Recorder logs the walked lr
    close(walked.recorder.hps['lr'], h['lr'].tolist())             # and so does ParamScheduler (plot_sched)

def test_fine_tune():
    "freeze + fit_one_cycle, then unfreeze + fit_one_cycle on discriminative lrs"
    learn = tiny_learner(bn=False, cbs=WalkCallback())
    learn.create_opt()
    frozen_phase = []
    body = lambda: [p.detach().cpu().clone() for p in learn.opt.param_lists[0]]  # fit moves the model to the GPU
    learn.add_cb(Callback(after_fit=lambda cb: frozen_phase.append(body())))
    start = body()
    fit_quietly(learn, 1, 'fine_tune', base_lr=1e-3, freeze_epochs=1)
    assert all(torch.equal(p, q) for p, q in zip(start, frozen_phase[0]))  # the body did not move while frozen
    h = learn.walk.history
    assert len(h) == 8 and (h['loss'] <= h['base_loss']).all()
    assert max_gap(body(), start) > 0  # and did after unfreezing

def test_history_restarts_each_fit_while_scale_carries_over():
    learn = fit_quietly(tiny_learner(lr=1e-5, cbs=WalkCallback()), 1)
    scale = learn.walk.scale
    assert scale > 1
    fit_quietly(learn, 1)
    h = learn.walk.history
    assert h['iter'].tolist() == list(range(8))
    assert h['scale'].iloc[0] == scale

def test_gradient_accumulation_walks_only_when_the_optimizer_steps():
    learn = fit_quietly(tiny_learner(cbs=[WalkCallback(), GradientAccumulation(n_acc=32)]))  # batches of 16
    assert learn.walk.history['iter'].tolist() == [1, 3, 5, 7]
    for p in learn.model.parameters(): assert learn.opt.state[p]['step'] == 4

def test_gradient_clip_is_applied_before_the_walk():
    clip = lambda: GradientClip(max_norm=0.05)
    walked = fit_quietly(tiny_learner(bn=False, dropout=0., lr=1e-2, opt_func=SGD, cbs=[WalkCallback(), clip()]))
    plain = fit_quietly(tiny_learner(bn=False, dropout=0., lr=1e-2, opt_func=SGD, cbs=[ReplayLrs(walked.walk.history['lr']), clip()]))
    assert max_gap(walked.model.parameters(), plain.model.parameters()) < 1e-5
    unclipped = fit_quietly(tiny_learner(bn=False, dropout=0., lr=1e-2, opt_func=SGD, cbs=ReplayLrs(walked.walk.history['lr'])))
    assert not max_gap(walked.model.parameters(), unclipped.model.parameters()) < 1e-3  # far off, or diverged (nan)

class AutocastProbe(nn.Module):
    "Identity that records whether autocast was on, for the input's device, at each forward"
    def __init__(self): super().__init__(); self.seen = []
    def forward(self, x): self.seen.append(torch.is_autocast_enabled(x.device.type)); return x

class Autocast(Callback):
    "MixedPrecision's autocast handling (bf16), on whichever device the data is: the CPU too"
    order = MixedPrecision.order
    def before_batch(self):
        self.ac = torch.autocast(self.dls.device.type if self.dls.device else 'cpu', dtype=torch.bfloat16)
        self.ac.__enter__()
    def after_loss(self): self.ac.__exit__(None, None, None)

@pytest.mark.parametrize('autocast', [False, True])
def test_trials_run_under_the_training_forwards_autocast(autocast):
    learn = tiny_learner(cbs=[WalkCallback()] + ([Autocast()] if autocast else []))
    learn.model.insert(0, probe := AutocastProbe())
    fit_quietly(learn)
    assert probe.seen[:88] == [autocast] * 88  # 8 batches x (1 training + 10 trial forwards), then validation

def test_export_and_load_learner(tmp_path):
    learn = fit_quietly(tiny_learner(lr=1e-5, cbs=WalkCallback(n_lrs=5, factor=2.)), 1)
    learn.path = tmp_path
    n = len(learn.walk.history)
    learn.export('walk.pkl')
    assert len(learn.walk.history) == n  # export leaves the live history alone
    loaded = load_learner(tmp_path / 'walk.pkl')
    assert isinstance(loaded.walk, WalkCallback)
    assert loaded.walk.scale == learn.walk.scale and loaded.walk.mults == learn.walk.mults
    assert len(loaded.walk.history) == 0  # history is not pickled, like Recorder's
    x = torch.randn(4, 1)
    learn.model.eval(); loaded.model.eval()  # load_learner puts the model on the CPU
    close(loaded.model(x), learn.model(x.to(learn.dls.device)).cpu())

class StepsReached(Callback):
    "Counts iterations whose step survived MixedPrecision's overflow check"
    order = MixedPrecision.order + 5
    def before_fit(self): self.n = 0
    def before_step(self): self.n += 1

@gpu
@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
def test_mixed_precision_on_gpu(amp):
    learn = tiny_learner(cbs=[WalkCallback(), StepsReached()])
    learn.to_fp16() if amp == 'fp16' else learn.to_bf16()
    fit_quietly(learn, 2)
    h = learn.walk.history
    assert len(h) == learn.steps_reached.n > 0  # an overflowed fp16 iteration is skipped, not walked
    assert np.isfinite(h['loss']).all() and (h['loss'] <= h['base_loss']).all()
    assert learn.model[1].num_batches_tracked.item() == 16

@pytest.mark.parametrize('kw', [dict(judge_lag=-1), dict(judge_lag=1.5), dict(trials='graph'), dict(trial_size=0), dict(trial_size=2.5), dict(smooth=1.), dict(smooth=-0.1), dict(every=0), dict(every=1.5),
                                dict(walk_until=0.), dict(walk_until=1.5),
                                dict(settle_factor=0.), dict(settle_factor=float('inf'))])
def test_option_errors_name_the_option(kw):
    with pytest.raises(ValueError, match=list(kw)[0]): WalkCallback(**kw)

def test_every_walks_one_step_in_n_and_steps_at_the_walked_lr_between():
    learn = fit_quietly(tiny_learner(cbs=WalkCallback(every=3)))
    h = learn.walk.history
    assert h['iter'].tolist() == [0, 3, 6]
    for p in learn.model.parameters(): assert learn.opt.state[p]['step'] == 8  # every iteration stepped once
    lrs = learn.recorder.lrs
    next_scale = lambda r: r['scale'] * (r['lr'] / r['lrs'][5] if r['lr'] else 0.25)  # after the walk at row r
    close([lrs[1], lrs[2]], [1e-3 * next_scale(h.iloc[0])] * 2)

@pytest.mark.parametrize('settle_factor', [1., 2.])
def test_walk_until_stops_walking_and_settles_on_the_latter_half(settle_factor):
    learn = fit_quietly(tiny_learner(cbs=WalkCallback(walk_until=0.5, settle_factor=settle_factor)), 2)
    h = learn.walk.history
    assert h['iter'].tolist() == list(range(8))
    walked = np.exp(np.log(h['scale'].iloc[4:]).mean())  # geometric mean of walks 4..7's centres
    close(learn.recorder.lrs[8:], [1e-3 * walked * settle_factor] * 8)
    close(learn.walk.scale, walked)  # the next fit walks on from the walked centre, not the settled one
    assert learn.opt.hypers[-1]['walk_settled'] == 0

def test_settling_keeps_within_the_scale_bounds():
    learn = fit_quietly(tiny_learner(cbs=WalkCallback(walk_until=0.5, settle_factor=1e9, max_scale=50.)), 2)
    close(learn.recorder.lrs[8:], [1e-3 * 50.] * 8)

def test_repeated_fit_walks_do_not_compound_the_settle_factor():
    learn = fit_quietly(tiny_learner(), 2, 'fit_walk', pct_walk=0.5)
    h = learn.walk.history
    walked = np.exp(np.log(h['scale'].iloc[len(h) // 2:]).mean())
    fit_quietly(learn, 2, 'fit_walk', pct_walk=0.5)
    close(learn.walk.history['scale'].iloc[0], walked)  # the next fit walks on from the walked centre, not 4x it

@pytest.mark.parametrize('saved_after, settles_again', [(2, False), (1, True)])
def test_resumed_run_settles_once(tmp_path, saved_after, settles_again):
    "Saved mid-fit after the settle (epoch 2 of 4) it is not applied twice; saved before it (epoch 1), it still happens"
    learn = tiny_learner(cbs=[WalkCallback(walk_until=0.5), SaveModelCallback(every_epoch=True, with_opt=True, fname='m')])
    learn.path = tmp_path
    fit_quietly(learn, 4)
    resumed = tiny_learner(cbs=WalkCallback(walk_until=0.5))
    resumed.path = tmp_path
    resumed.load(f'm_{saved_after}', with_opt=True)
    saved = resumed.opt.hypers[-1]['walk_scale']
    fit_quietly(resumed, 4, start_epoch=saved_after + 1)
    close(resumed.recorder.lrs, [1e-3 * saved * (4 if settles_again else 1)] * 8 * (3 - saved_after))

def test_fit_walk_resumes_from_start_epoch():
    learn = fit_quietly(tiny_learner(), 4, 'fit_walk', start_epoch=2)
    assert len(learn.recorder.lrs) == 16  # epochs 2 and 3 only

class InputProbe(nn.Module):
    "Identity that records the first input value of each forward"
    def __init__(self): super().__init__(); self.seen = []
    def forward(self, x): self.seen.append(x[0, 0].item()); return x

class ShapeProbe(nn.Module):
    "Identity that records the batch size of each forward"
    def __init__(self): super().__init__(); self.sizes = []
    def forward(self, x): self.sizes.append(len(x)); return x

def test_trial_size_cuts_tensors_in_any_batch_structure():
    cb = WalkCallback(trial_size=2)
    x, y = torch.arange(10.).reshape(5, 2), torch.tensor(3.)
    xb, yb = cb._trial_batch(({'ids': x, 'n': 7}, [x]), (y,))
    assert xb[0]['ids'].shape == (2, 2) and xb[0]['n'] == 7 and xb[1][0].shape == (2, 2) and yb[0] is y

def test_vmap_refuses_syncbatchnorm_by_name():
    learn = tiny_learner(cbs=WalkCallback(trials='vmap'))
    learn.model[1] = nn.SyncBatchNorm(16)
    with pytest.raises(ValueError, match='SyncBatchNorm'): fit_quietly(learn)

@pytest.mark.parametrize('lag, judged_on', [(0, range(8)), (1, [0, 0, 1, 2, 3, 4, 5, 6]), (3, [0, 0, 0, 0, 1, 2, 3, 4])])
def test_judge_lag_judges_on_the_batch_that_far_back(lag, judged_on):
    learn = tiny_learner(cbs=WalkCallback(judge_lag=lag))
    learn.model.insert(0, probe := InputProbe())
    fit_quietly(learn)
    seen = np.array(probe.seen[:88]).reshape(8, 11)  # per iteration: the training forward, then 10 trials
    assert (seen[:, 1:] == seen[list(judged_on), :1]).all()  # before `lag` batches exist: the oldest there is

@pytest.mark.parametrize('lag', [0, 8])
def test_vmap_trials_take_the_same_walk_as_the_loop(lag):
    "BatchNorm and dropout included: same winners, same losses, same weights, running statistics untouched"
    loop, vmap = (fit_quietly(tiny_learner(cbs=WalkCallback(judge_lag=lag, trials=t)), 2) for t in ('loop', 'vmap'))
    assert vmap.walk.history['lr'].tolist() == loop.walk.history['lr'].tolist()
    np.testing.assert_allclose(np.stack(vmap.walk.history['losses']), np.stack(loop.walk.history['losses']), rtol=1e-5)
    assert max_gap([*vmap.model.parameters(), *vmap.model.buffers()], [*loop.model.parameters(), *loop.model.buffers()]) < 1e-5
    assert vmap.model[1].num_batches_tracked.item() == 16

def test_trial_size_judges_on_the_first_samples_only():
    learn = tiny_learner(cbs=WalkCallback(trial_size=5))
    learn.model.insert(0, probe := ShapeProbe())
    fit_quietly(learn)
    sizes = np.array(probe.sizes[:88]).reshape(8, 11)  # per iteration: the training forward, then 10 trials
    assert (sizes[:, 0] == 16).all() and (sizes[:, 1:] == 5).all()

def test_smooth_moves_the_centre_part_of_the_way():
    learn = fit_quietly(tiny_learner(lr=1e-4, cbs=WalkCallback(smooth=0.5)))
    h = learn.walk.history
    for (_, r), nxt in zip(h.iloc[:-1].iterrows(), h['scale'].iloc[1:]):
        target = r['scale'] * (r['lr'] / r['lrs'][5] if r['lr'] else 0.25)
        close(nxt, (r['scale'] * target) ** 0.5)

def test_fit_walk_walks_then_anneals():
    learn = tiny_learner(lr=1e-4)
    fit_quietly(learn, 2, 'fit_walk', pct_walk=0.3)
    h = learn.walk.history
    assert h['iter'].tolist() == [0, 1, 2, 3, 4]  # pct_train < 0.3 of 16 iterations
    lrs = np.array(learn.recorder.lrs[5:])
    assert (np.diff(lrs) < 0).all() and lrs[-1] < lrs[0] / 20  # a cosine from the walked lr down
    close(lrs[0] / (1e-4 * learn.walk.scale * 4), 1., eps=0.05)  # settled at 4x the walked centre
    assert learn.walk.walk_until == 1.  # the walk is left as it was, for later fits

@gpu
@pytest.mark.parametrize('trials', ['loop', 'vmap'])
def test_walk_iterations_do_not_synchronise_on_gpu(trials):
    "After a run's first step (which reads once: see `walk_to_best`), nothing in the walk's `before_step` waits for the GPU"
    walk = WalkCallback(trials=trials)
    original, calls = walk.before_step, []
    def before_step():
        calls.append(1)
        if len(calls) > 1: torch.cuda.set_sync_debug_mode('error')
        try: return original()
        finally: torch.cuda.set_sync_debug_mode('default')
    walk.before_step = before_step
    learn = fit_quietly(tiny_learner(cbs=walk), 2)
    assert next(learn.model.parameters()).is_cuda and len(learn.walk.history) == 16

class Branchy(nn.Module):
    "Identity with data-dependent control flow, which `torch.func.vmap` refuses"
    def forward(self, x): return x if x.sum() > -1e30 else -x

def test_auto_trials_use_the_loop_on_a_cpu_without_timing():
    learn = fit_quietly(tiny_learner(cbs=WalkCallback()))
    assert learn.walk.trials == 'auto' and learn.walk.trial_path == 'loop'
    assert learn.walk._timings == {'loop': [], 'vmap': []}

def timed_walk(vmap_seconds:float) -> WalkCallback:
    "A walk whose 'auto' times its paths on a CPU too, with a clock on which a vmap walk takes `vmap_seconds` (a loop walk 1)"
    walk, now = WalkCallback(), [0.]
    walk.timed_devices = ('cpu',)
    def clock(device):
        now[0] += 0.5 * (vmap_seconds if walk._timings['loop'] and len(walk._timings['loop']) > walk.timed_walks else 1.)
        return now[0]
    walk._clock = clock
    return walk

@pytest.mark.parametrize('vmap_seconds,chosen', [(0.5, 'vmap'), (0.95, 'loop')])
def test_auto_trials_time_both_paths_then_keep_the_clearly_faster(vmap_seconds, chosen):
    walk = timed_walk(vmap_seconds)
    learn = fit_quietly(tiny_learner(cbs=walk), 2)
    assert [len(t) for t in walk._timings.values()] == [4, 4] and walk.trial_path == chosen
    assert len(learn.walk.history) == 16  # every iteration walked, timed or not
    first = walk._timings
    learn.freeze()  # other trainable parameters: 'auto' times again
    fit_quietly(learn, 2)
    assert walk._timings is not first and [len(t) for t in walk._timings.values()] == [4, 4]
    assert walk._timed_for[1] < sum(p.numel() for p in learn.model.parameters())

def test_auto_trials_fall_back_to_the_loop_when_vmap_cannot_run_the_model():
    walk = WalkCallback()
    walk.timed_devices = ('cpu',)
    learn = tiny_learner(cbs=walk)
    learn.model.append(Branchy())
    with pytest.warns(UserWarning, match='vmap cannot run this model'): fit_quietly(learn, 2)
    assert walk.trial_path == 'loop' and len(learn.walk.history) == 16 and len(walk._timings['vmap']) == 0

def test_fit_walk_uses_a_walk_subclass_already_there():
    class MyWalk(WalkCallback): pass
    learn = fit_quietly(tiny_learner(cbs=MyWalk()), 2, 'fit_walk')
    assert [type(cb) for cb in learn.cbs if isinstance(cb, WalkCallback)] == [MyWalk]
    assert len(learn.my_walk.history) == 5  # walked while under 30% of 16 iterations (0-4), then settled

def test_fit_walk_uses_a_walk_passed_in_cbs():
    learn = tiny_learner()
    learn.fit_walk(2, cbs=[walk := WalkCallback()])
    assert len(walk.history) == 5 and not any(isinstance(cb, WalkCallback) for cb in learn.cbs)
