"The walk never corrupts a run: non-finite values, interrupts, resume, determinism, bad input."
import warnings
from functools import partial
import pytest, torch
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
from fastai.losses import MSELossFlat
from fastai.optimizer import OptimWrapper, Lookahead, SGD
from walkopt.callback import WalkCallback
from walkopt.test_utils import tiny_learner, fit_quietly, optimizer_state, SnapshotBeforeStep, FailingLoss

class NanLossAt:
    "MSE, but nan on the training forwards of the given iterations (the walk's trials are not counted)"
    def __init__(self, iters): self.iters, self.learn = set(iters), None
    def __call__(self, pred, y):
        loss = MSELossFlat()(pred, y)
        grad_on = torch.is_grad_enabled() and self.learn.training
        return loss * float('nan') if grad_on and self.learn.train_iter in self.iters else loss

def nan_loss_at(learn, iters):
    "`learn`, its loss now nan on the training forwards of `iters`"
    learn.loss_func = NanLossAt(iters)
    learn.loss_func.learn = learn
    return learn

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

def test_interrupt_mid_walk_restores_weights_buffers_optimizer_state_and_lrs():
    learn = tiny_learner(cbs=[WalkCallback(), probe := SnapshotBeforeStep()])
    learn.loss_func = FailingLoss(fail_at=16, exc=KeyboardInterrupt())  # in the middle of the second walk
    with pytest.raises(KeyboardInterrupt): fit_quietly(learn)
    before = probe.states[1]
    assert all(torch.equal(t, s) for t, s in zip((*learn.model.parameters(), *learn.model.buffers()), before['tensors']))
    assert same_state(optimizer_state(learn), before['opt'])  # Adam's moments and step count as before the walk
    assert len(learn.walk.history) == 1
    assert [h['lr'] for h in learn.opt.hypers] == [learn.lr] * 2  # not left at the walk's scaled lr

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

def test_same_seed_same_history():
    runs = [fit_quietly(tiny_learner(cbs=WalkCallback())).walk.history for _ in range(2)]
    assert runs[0]['lr'].tolist() == runs[1]['lr'].tolist()
    assert runs[0]['losses'].tolist() == runs[1]['losses'].tolist()

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

def test_an_error_after_the_walk_leaves_the_users_lrs():
    learn = tiny_learner(cbs=WalkCallback())
    calls = []
    def failing_record(walk):
        calls.append(1)
        if len(calls) == 2: raise RuntimeError('bookkeeping failed')
    learn.walk._record = failing_record
    with pytest.raises(RuntimeError, match='bookkeeping'): fit_quietly(learn)
    assert [h['lr'] for h in learn.opt.hypers] == [learn.lr] * 2
