"The walk never corrupts a run: non-finite values, interrupts, resume, determinism, bad input."
import warnings
from functools import partial
import numpy as np, pytest, torch
from torch import nn
from fastcore.test import test_close as close
from fastai.callback.core import Callback
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
from fastai.losses import MSELossFlat
from fastai.optimizer import OptimWrapper, Lookahead, SGD
from walkopt.callback import WalkCallback
from walkopt.core import HostCopy, walk_to_best, walk_multipliers
from walkopt.test_utils import (tiny_learner, fit_quietly, optimizer_state, SnapshotBeforeStep, FailingLoss, nan_loss_at, LateHostCopy,
                                 ReplayLrs, allocations, max_gap)

def same_state(a, b): return all(a_.keys() == b_.keys() and all(torch.equal(a_[k], b_[k]) for k in a_) for a_, b_ in zip(a, b))

def test_nonfinite_gradient_stays_put_without_stepping_and_warns_once():
    learn = nan_loss_at(tiny_learner(cbs=[WalkCallback(), probe := SnapshotBeforeStep()]), {2, 5})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        fit_quietly(learn)
    walk_warnings = [w for w in caught if 'non-finite gradient' in str(w.message)]
    assert len(walk_warnings) == 1  # once per fit
    h = learn.walk.history
    assert h['skipped'].tolist() == [i in (2, 5) for i in range(8)]
    assert (h.loc[h['skipped'], 'lr'] == 0).all() and h.loc[h['skipped'], 'loss'].isna().all()
    for p in learn.model.parameters(): assert learn.opt.state[p]['step'] == 6  # the optimizer stepped only 6 times
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    params_at_2 = probe.states[2]['tensors'][:5]
    params_at_3 = probe.states[3]['tensors'][:5]
    assert all(torch.equal(a, b) for a, b in zip(params_at_2, params_at_3))  # iteration 2 did not move the weights
    assert h['scale'].iloc[2] == h['scale'].iloc[3]  # nor the grid centre

def test_interrupt_mid_walk_leaves_the_optimizers_own_step_and_the_users_lrs():
    "Interrupted in a trial, the run is where a plain step at the optimizer's lr would have put it, not at a candidate"
    learn = tiny_learner(dropout=0., cbs=[WalkCallback(), probe := SnapshotBeforeStep()])
    learn.loss_func = FailingLoss(fail_at=16, exc=KeyboardInterrupt())  # in the middle of the second walk
    with pytest.raises(KeyboardInterrupt): fit_quietly(learn)
    assert len(learn.walk.history) == 1
    assert [h['lr'] for h in learn.opt.hypers] == [learn.lr] * 2  # not left at the walk's scaled lr
    plain = tiny_learner(dropout=0., cbs=ReplayLrs([learn.walk.history['lr'][0], learn.lr * learn.walk.scale, 0.]))
    plain.loss_func = FailingLoss(fail_at=3, exc=KeyboardInterrupt())  # after its second step
    with pytest.raises(KeyboardInterrupt): fit_quietly(plain)
    n = len(list(learn.model.parameters()))
    assert max((a - b).abs().max() for a, b in zip(learn.model.parameters(), plain.model.parameters())) < 1e-5  # rounding of m*step
    for a, b in zip(optimizer_state(learn), optimizer_state(plain)):  # Adam's moments and step count: one step on
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert all(torch.equal(t, s) for t, s in zip(learn.model.buffers(), probe.states[1]['tensors'][n:]))

def test_resume_continues_from_the_same_grid_centre(tmp_path):
    learn = fit_quietly(tiny_learner(lr=1e-5, cbs=WalkCallback()))
    learn.path = tmp_path
    scale = learn.walk.scale
    assert scale > 10
    learn.save('walked', with_opt=True)
    resumed = tiny_learner(lr=1e-5, cbs=WalkCallback())
    resumed.path = tmp_path
    resumed.load('walked', with_opt=True)
    fit_quietly(resumed)
    assert resumed.walk.history['scale'].iloc[0] == scale

def test_with_save_model_and_early_stopping(tmp_path):
    learn = tiny_learner(lr=1e-4, cbs=[WalkCallback(), SaveModelCallback(fname='best'), EarlyStoppingCallback(patience=1)])
    learn.path = tmp_path
    fit_quietly(learn, 4)
    assert (tmp_path / 'models' / 'best.pth').exists()
    assert len(learn.walk.history) > 0 and learn.walk.history['iter'].iloc[0] == 0

def walked(copy=HostCopy):
    "History and weights of a seeded 2-epoch walk on the CPU, with a host copy made by `copy`"
    walk = WalkCallback()
    walk.host_copy = copy
    learn = fit_quietly(tiny_learner(cbs=walk), 2)
    return learn.walk.history, [p.detach().clone() for p in learn.model.parameters()]

def test_same_seed_same_walk_however_late_the_results_reach_the_host():
    "Default options: the same history and the same weights, bit for bit, whether each walk's result lands at once or late"
    runs = [walked(), walked(), walked(copy=partial(LateHostCopy, lag=0)), walked(copy=partial(LateHostCopy, lag=1))]  # landed / waited for
    for history, weights in runs[1:]:
        assert history.equals(runs[0][0])
        assert all(torch.equal(a, b) for a, b in zip(weights, runs[0][1]))

def test_refuses_an_optimizer_it_cannot_drive():
    learn = tiny_learner(opt_func=partial(OptimWrapper, opt=torch.optim.LBFGS), cbs=WalkCallback())
    learn.splitter = lambda m: list(m.parameters())  # LBFGS takes a single parameter group
    with pytest.raises(ValueError, match='cannot drive LBFGS'): fit_quietly(learn)

def test_refuses_a_model_with_nothing_to_train():
    learn = tiny_learner(cbs=WalkCallback())
    for p in learn.model.parameters(): p.requires_grad_(False)
    with pytest.raises(ValueError, match='no trainable parameters'): fit_quietly(learn)

def test_refuses_a_loss_that_is_not_a_scalar():
    learn = tiny_learner(cbs=WalkCallback())
    learn.loss_func = MSELossFlat(reduction='none')
    with pytest.raises(ValueError, match='needs a scalar loss'): fit_quietly(learn)

def test_an_undone_first_step_leaves_no_optimizer_state_behind():
    "Undoing a run's first step must remove the state it created: Rprop's step sizes would otherwise be stuck at 0"
    learn = nan_loss_at(tiny_learner(opt_func=partial(OptimWrapper, opt=torch.optim.Rprop), cbs=WalkCallback()), {0})
    with warnings.catch_warnings(): warnings.simplefilter('ignore'); fit_quietly(learn)
    assert learn.walk.history['skipped'].tolist() == [True] + [False] * 7
    for s in optimizer_state(learn):
        assert s['step'].item() == 7 and s['step_size'].max() > 1e-5  # as if it had started a batch later (not stuck near 1e-6)

@pytest.mark.parametrize('nan_at', [{2, 5}, {1}])  # with k=2, the undone step at iteration 1 lands on a sync
def test_an_undone_step_neither_counts_nor_syncs_in_lookahead(nan_at):
    lookahead = lambda ps, lr: Lookahead(SGD(ps, lr, mom=0.9), k=2)
    learn = nan_loss_at(tiny_learner(opt_func=lookahead, cbs=[WalkCallback(), probe := SnapshotBeforeStep()]), nan_at)
    with warnings.catch_warnings(): warnings.simplefilter('ignore'); fit_quietly(learn)
    assert learn.opt.count == 8 - len(nan_at)
    n = len(list(learn.model.parameters()))  # (BatchNorm's statistics did see the real forward)
    for i in nan_at:  # the undone iteration moved no weight, its Lookahead sync included
        assert all(torch.equal(a, b) for a, b in zip(probe.states[i]['tensors'][:n], probe.states[i + 1]['tensors'][:n]))

class FailingCopy(HostCopy):
    "A `HostCopy` that fails on its second push"
    pushes = 0
    def push(self, t):
        FailingCopy.pushes += 1
        if FailingCopy.pushes == 2: raise RuntimeError('bookkeeping failed')
        super().push(t)

def test_an_error_after_the_walk_leaves_the_users_lrs():
    walk = WalkCallback()
    walk.host_copy = FailingCopy
    learn = tiny_learner(cbs=walk)
    with pytest.raises(RuntimeError, match='bookkeeping'): fit_quietly(learn)
    assert [h['lr'] for h in learn.opt.hypers] == [learn.lr] * 2

def test_refuses_a_model_split_over_devices():
    learn = tiny_learner(cbs=WalkCallback())
    learn.dls.device = None  # fastai then leaves the model where it is
    learn.model[4].to('meta')
    with pytest.raises(ValueError, match=r'several devices \(cpu, meta\)'): fit_quietly(learn)

def test_refuses_an_optimizer_that_steps_other_weights_than_the_models():
    "Trials evaluate the model: if the optimizer moves copies, every walk would stay put and training silently stop"
    learn = tiny_learner(cbs=WalkCallback())
    copies = [nn.Parameter(p.detach().clone()) for p in learn.model.parameters()]
    learn.splitter = lambda m: [copies]
    with pytest.raises(ValueError, match="parameters are not the model's"): fit_quietly(learn)

def test_a_large_finite_step_is_kept():
    "10,000 fp32 values of 1e36 are finite (their norm is not): the step is not undone as non-finite"
    w = nn.Parameter(torch.zeros(10_000))
    w.grad = torch.ones(10_000)
    def step(): w.data.add_(1e36)
    walk = walk_to_best([w], lambda: (w * 1e-36).mean(), step, walk_multipliers(3, 2.))
    assert walk.finite.item() and walk.winner.item() == 0  # finite; staying put has the lowest loss

def bytes_live_at_first_trial(state:bool) -> int:
    "Bytes a walk of one 1M-weight Adam layer holds beyond what it started with, at the moment its first trial runs"
    torch.manual_seed(0)
    layer = nn.Linear(1000, 1000, bias=False)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    x = torch.randn(8, 1000)
    layer(x).square().mean().backward(); opt.step(); layer(x).square().mean().backward()
    marker = []
    def loss_fn():
        if not marker: marker.append(torch.empty(12345, dtype=torch.uint8))  # a size to find among the allocations
        return layer(x).square().mean()
    deltas = allocations(lambda: walk_to_best(list(layer.parameters()), loss_fn, opt.step, walk_multipliers(3, 2.), layer,
                                              opt.state if state else None))
    return sum(deltas[:deltas.index(12345)])

def test_the_optimizer_state_copy_is_gone_before_the_trials():
    "During the trials the walk holds the start and the step (2 copies of the weights), not Adam's 2 moments beside them"
    weights = 4 * 1000 * 1000
    assert bytes_live_at_first_trial(state=True) < 2.2 * weights
    assert abs(bytes_live_at_first_trial(state=True) - bytes_live_at_first_trial(state=False)) < 0.05 * weights

class InterruptAt(Callback):
    "Raises `KeyboardInterrupt` at `after_batch` of batch `n` of an epoch: after its step, before the next batch"
    order = 90
    def __init__(self, n): self.n = n
    def after_batch(self):
        if self.training and self.iter == self.n: raise KeyboardInterrupt()

def test_after_an_interrupted_fit_the_next_fit_steps_at_its_own_lr():
    learn = tiny_learner(cbs=[WalkCallback(), InterruptAt(3)])
    with pytest.raises(KeyboardInterrupt): fit_quietly(learn)
    learn.remove_cb(InterruptAt)
    fit_quietly(learn, 1, lr=0.5)
    h, unit = learn.walk.history, learn.walk.mults.index(1.)
    assert [lrs[unit] / scale for lrs, scale in zip(h['lrs'], h['scale'])] == pytest.approx([0.5] * 8)

def test_a_walk_removed_after_an_interrupted_fit_leaves_fastai_its_own_step():
    "The walk takes fastai's step in its place during a fit; an interrupt leaves that in the Learner, which then steps plainly"
    learn = tiny_learner(cbs=[walk := WalkCallback(), InterruptAt(3)])
    with pytest.raises(KeyboardInterrupt): fit_quietly(learn)
    assert '_step' in learn.__dict__ and len(learn.metrics) == 1  # the fit's end never came
    learn.remove_cbs([InterruptAt, walk])
    assert '_step' not in learn.__dict__ and learn.metrics == []  # it crashed the next fit: its column asked for the epoch
    before = [p.detach().clone() for p in learn.model.parameters()]
    fit_quietly(learn, 1, lr=1e-2)
    assert len(walk.history) == 4 and len(learn.recorder.values[-1]) == 2  # train and valid loss, no walk_lr
    assert max_gap(before, learn.model.parameters()) > 1e-3  # fastai's own step moved the weights

def test_an_interrupted_undo_is_finished_before_lr_find_saves_the_optimizer():
    learn = nan_loss_at(tiny_learner(cbs=[WalkCallback(), InterruptAt(2)]), {2})
    with pytest.raises(KeyboardInterrupt): fit_quietly(learn)  # iteration 2's step was undone on the device, its count not yet
    learn.remove_cb(InterruptAt)
    with learn.no_logging(): learn.lr_find(num_it=5, show_plot=False)  # saves the optimizer, then loads it back
    assert all(s['step'] == 2 for s in optimizer_state(learn))

def test_a_checkpoint_saved_after_the_settle_starts_a_new_fit_from_the_walked_centre(tmp_path):
    learn = tiny_learner(cbs=[WalkCallback(walk_until=0.5, settle_factor=4.), SaveModelCallback(every_epoch=True, with_opt=True, fname='m')])
    learn.path = tmp_path
    fit_quietly(learn, 2)
    learn.load('m_1', with_opt=True)  # saved after the settle: the optimizer holds the settled scale
    walked = learn.opt.hypers[-1]['walk_walked']
    assert learn.opt.hypers[-1]['walk_settled'] == 1 and learn.opt.hypers[-1]['walk_scale'] == pytest.approx(4 * walked)
    fit_quietly(learn, 2)
    h = learn.walk.history
    assert h['scale'].iloc[0] == walked  # a new fit walks on from the walked centre, not from 4x it
    settled = 4 * np.exp(np.log(h['scale'].iloc[4:]).mean())
    close(learn.recorder.lrs[8:], [1e-3 * settled] * 8)  # and settles again
