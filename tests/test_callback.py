"WalkCallback inside fastai's loop: optimizers, schedules, mixed precision, accumulation, clipping, freezing, export."
from functools import partial
import numpy as np, pytest, torch
from torch import nn
from fastcore.test import test_close as close
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision, NonNativeMixedPrecision, ModelToHalf, get_master, _copy_state
from fastai.callback.schedule import fit_one_cycle, fit_flat_cos  # patches Learner
from fastai.callback.tracker import SaveModelCallback
from fastai.callback.training import GradientAccumulation, GradientClip
from fastai.learner import Learner, load_learner
from fastai.torch_core import trainable_params
from fastai.optimizer import SGD, Adam, RAdam, Lookahead, OptimWrapper, ranger
from walkopt.core import recentre
from walkopt.callback import WalkCallback
from walkopt.test_utils import (tiny_learner, ReplayLrs, fit_quietly, optimizer_state, LateHostCopy, max_gap,
                                 walked_and_replayed, random_state_after_fit)

OPTIMIZERS = dict(
    sgd=SGD, sgd_momentum=partial(SGD, mom=0.9), adam=Adam, radam=RAdam, ranger=partial(ranger, k=3),
    lookahead_sgd=lambda ps, lr: Lookahead(SGD(ps, lr, mom=0.9), k=2),
    torch_sgd=partial(OptimWrapper, opt=partial(torch.optim.SGD, momentum=0.9)),
    torch_adamw=partial(OptimWrapper, opt=torch.optim.AdamW))

@pytest.mark.parametrize('name', OPTIMIZERS)
def test_walk_is_the_optimizers_step_replayed(name):
    "Plain training on the walk's learning rates reaches the same weights and optimizer state"
    opt_func = OPTIMIZERS[name]
    walked, plain = walked_and_replayed(opt_func)
    h = walked.walk.history
    assert len(h) == 16 and len(set(h['lr'])) > 2  # the walk really chose different step sizes
    assert max_gap(walked.model.parameters(), plain.model.parameters()) < 1e-5
    ws, ps = ([v.double() for s in optimizer_state(l) for v in s.values()] for l in (walked, plain))
    assert len(ws) == len(ps) > 0 and max_gap(ws, ps) < 1e-4
    if isinstance(walked.opt, Lookahead):
        assert walked.opt.count == plain.opt.count == 16
        assert max_gap([p for pg in walked.opt.slow_weights for p in pg], [p for pg in plain.opt.slow_weights for p in pg]) < 1e-5

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
    learn = tiny_learner(bn=False, cbs=WalkCallback(accept=None))  # the lowest loss wins: never worse than staying put
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

@pytest.mark.parametrize('kw', [dict(judge_lag=-1), dict(judge_lag=1.5), dict(trials='graph'), dict(trials=None), dict(trial_size=0), dict(trial_size=2.5), dict(smooth=1.), dict(smooth=-0.1), dict(every=0), dict(every=1.5),
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
    learn = tiny_learner(cbs=[WalkCallback(walk_until=0.5, settle_factor=4.), SaveModelCallback(every_epoch=True, with_opt=True, fname='m')])
    learn.path = tmp_path
    fit_quietly(learn, 4)
    resumed = tiny_learner(cbs=WalkCallback(walk_until=0.5, settle_factor=4.))
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

@pytest.mark.parametrize('lag, judged_on', [(0, range(8)), (1, [0, 0, 1, 2, 3, 4, 5, 6]), (3, [0, 0, 0, 0, 1, 2, 3, 4])])
def test_judge_lag_judges_on_the_batch_that_far_back(lag, judged_on):
    learn = tiny_learner(cbs=WalkCallback(judge_lag=lag))
    learn.model.insert(0, probe := InputProbe())
    fit_quietly(learn)
    seen = np.array(probe.seen[:88]).reshape(8, 11)  # per iteration: the training forward, then 10 trials
    assert (seen[:, 1:] == seen[list(judged_on), :1]).all()  # before `lag` batches exist: the oldest there is

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
    close(lrs[0] / (1e-4 * learn.walk.scale * learn.walk.centre.settle_factor), 1., eps=0.05)  # settled at the factor x the walked centre
    assert learn.walk.walk_until == 1.  # the walk is left as it was, for later fits

def test_fit_walk_uses_a_walk_subclass_already_there():
    class MyWalk(WalkCallback): pass
    learn = fit_quietly(tiny_learner(cbs=MyWalk()), 2, 'fit_walk')
    assert [type(cb) for cb in learn.cbs if isinstance(cb, WalkCallback)] == [MyWalk]
    assert len(learn.my_walk.history) == 5  # walked while under 30% of 16 iterations (0-4), then settled

def test_fit_walk_uses_a_walk_passed_in_cbs():
    learn = tiny_learner()
    learn.fit_walk(2, cbs=[walk := WalkCallback()])
    assert len(walk.history) == 5 and not any(isinstance(cb, WalkCallback) for cb in learn.cbs)

class StepRecorder:
    "Wraps `learn.opt.step`: the weights before and after each optimizer step, and the lr it stepped at"
    def __init__(self, learn):
        learn.create_opt()
        step, self.params, self.steps = learn.opt.step, [p for pg in learn.opt.param_lists for p in pg], []
        def recorded():
            before = [p.detach().clone() for p in self.params]
            step()
            self.steps.append((before, [p.detach().clone() for p in self.params], learn.opt.hypers[-1]['lr']))
        learn.opt.step = recorded

@pytest.mark.parametrize('opt_func', [Adam, partial(OptimWrapper, opt=torch.optim.Rprop)], ids=['adam', 'rprop'])
def test_the_move_is_the_reported_lr_times_the_optimizers_step(opt_func):
    "The optimizer steps at the centre the last walk chose, however late its result reaches the host; the walk moves `lr/stepped lr` times that step"
    walk = WalkCallback()
    walk.host_copy = partial(LateHostCopy, lag=2)  # each walk's result lands after the next step is due: it is waited for
    learn = tiny_learner(opt_func=opt_func, cbs=walk)
    recorder = StepRecorder(learn)
    fit_quietly(learn, 2)
    h, unit = learn.walk.history, walk.mults.index(1.)
    assert len(h) == len(recorder.steps) == 16 and walk.result_copy.blocked > 0
    finals = [s[0] for s in recorder.steps[1:]] + [[p.detach() for p in recorder.params]]
    for (before, stepped, stepped_lr), final, (_, r) in zip(recorder.steps, finals, h.iterrows()):
        close(stepped_lr, r['lrs'][unit], eps=1e-12)  # the step was taken at the centre the history reports
        for b, s, f in zip(before, stepped, final): close(f - b, (r['lr'] / stepped_lr) * (s - b), eps=1e-6)
    for (_, r), centre in zip(h.iloc[:-1].iterrows(), h['scale'].iloc[1:]):  # and that centre is the last walk's choice
        assert centre == recentre(r['scale'], walk.mults[r['lrs'].index(r['lr'])], walk.mults[1], (1e-6, 1e6))
    assert len(set(h['lr'])) > 3

class NonNativeOnCPU(NonNativeMixedPrecision):
    "fastai's `to_non_native_fp16` callback minus its GPU check: fp32 master weights stepped for an fp16 model, on a CPU"
    def before_fit(self):
        if self.learn.opt is None: self.learn.create_opt()
        self.model_pgs, self.master_pgs = get_master(self.opt, self.flat_master)
        self.old_pgs = self.opt.param_lists
        _copy_state(self.learn.opt, self.model_pgs, self.master_pgs)

class ModelIsMaster(Callback):
    "Checks after each batch that the fp16 model holds the fp32 master weights the walk moved"
    order = NonNativeMixedPrecision.order + 1
    def before_fit(self): self.checked = 0
    def after_batch(self):
        if not self.training: return
        for model, master in zip(self.non_native_on_cpu.model_pgs, self.non_native_on_cpu.master_pgs):
            assert all(torch.equal(p, m.half()) for p, m in zip(model, master))
        self.checked += 1

def test_to_non_native_fp16_walks_the_master_weights():
    "The trials see each candidate the fp32 master weights move to, so the walk walks (it used to stay put every time)"
    learn = tiny_learner(bn=False, dropout=0., cbs=[WalkCallback(), ModelIsMaster()])
    learn.add_cbs([ModelToHalf(), NonNativeOnCPU(dynamic=False)])
    fit_quietly(learn, 2)
    h = learn.walk.history
    assert (h['lr'] > 0).mean() > 0.5 and (h['loss'] < h['base_loss']).mean() > 0.5
    assert learn.model_is_master.checked == 16

def test_syncbatchnorm_is_named_as_a_host_read():
    learn = tiny_learner(cbs=WalkCallback())
    learn.model[1] = nn.SyncBatchNorm(16)  # a single process: it normalises as BatchNorm does
    with pytest.warns(UserWarning, match='SyncBatchNorm reads from the device'): fit_quietly(learn)

def winner_ranks(history) -> list[tuple[int, int]]:
    "Per walk: the winner's place in the grid and the lowest loss's"
    return [(r.lrs.index(r.lr), int(np.argmin(r.losses))) for r in history.itertuples()]

def test_accept_takes_larger_steps_than_the_lowest_loss_and_leaves_the_loss_function_as_it_was():
    learn = fit_quietly(tiny_learner(cbs=WalkCallback()), 2)
    ranks = winner_ranks(learn.walk.history)
    assert all(won >= lowest for won, lowest in ranks) and any(won > lowest for won, lowest in ranks)
    assert learn.loss_func.reduction == 'mean'  # set to 'none' for the trials only
    assert learn.recorder.losses[-1].numel() == 1

def test_accept_without_per_sample_losses_keeps_the_lowest():
    "A loss function with no `reduction` to set gives one value per trial: no noise to weigh, the lowest loss wins"
    learn = tiny_learner(cbs=WalkCallback(accept=3.))
    learn.loss_func = lambda pred, targ: ((pred - targ) ** 2).mean()
    fit_quietly(learn, 1)
    assert all(won == lowest for won, lowest in winner_ranks(learn.walk.history))

def test_accept_is_checked():
    for bad in (-1., float('nan'), 'high'):
        with pytest.raises(ValueError, match='accept'): WalkCallback(accept=bad)

def test_fit_walk_shows_and_checks_the_walk_options():
    from fastai.learner import Learner
    import inspect
    shown = inspect.signature(Learner.fit_walk).parameters
    assert {'n_lrs', 'judge_lag', 'accept', 'settle_factor', 'pct_walk'} <= set(shown) and 'walk_until' not in shown
    for cbs in ([], [WalkCallback()]):
        learn = tiny_learner(cbs=cbs)
        with pytest.raises(TypeError, match="'n_lr'"): learn.fit_walk(1, n_lr=5)
        with pytest.raises(TypeError, match='pct_walk'): learn.fit_walk(1, walk_until=0.5)
        with pytest.raises(ValueError, match='pct_walk'): learn.fit_walk(1, pct_walk=2)

def test_pct_walk_is_for_that_fit_only():
    learn = fit_quietly(tiny_learner(cbs=WalkCallback(walk_until=0.75)), 2, 'fit_walk', pct_walk=0.25)
    assert len(learn.walk.history) == 4 and learn.walk.walk_until == 0.75  # walked a quarter; the option is as it was
    fit_quietly(learn, 2)
    assert len(learn.walk.history) == 12  # a plain fit walks its own three quarters

def test_the_package_says_what_it_is():
    import walkopt
    assert walkopt.__doc__ and 'fastai callback' in walkopt.__doc__

@pytest.mark.parametrize('lr', [-1., 0., float('nan'), float('inf')])
def test_an_unusable_lr_is_refused_by_name(lr):
    for method in ('fit', 'fit_walk'):
        with pytest.raises(ValueError, match='positive, finite lr'): fit_quietly(tiny_learner(cbs=WalkCallback()), 1, method, lr)

def test_two_walks_on_one_learner_are_refused():
    with pytest.raises(ValueError, match='one WalkCallback'): fit_quietly(tiny_learner(cbs=[WalkCallback(), WalkCallback()]))

def test_a_walk_passed_to_fit_keeps_its_history():
    "fastai removes a fit's own callbacks when the fit ends: the callback object passed in still has the walk"
    walk = WalkCallback()
    learn = fit_quietly(tiny_learner(), 1, 'fit', cbs=walk)
    assert not hasattr(learn, 'walk') and len(walk.history) == 8

def test_every_fit_keeps_the_walks_of_every_fit():
    "fine_tune is two fits: `history` has the last, `every_fit` both, numbered"
    learn = fit_quietly(tiny_learner(bn=False, cbs=WalkCallback()), 1, 'fine_tune', base_lr=1e-3, freeze_epochs=1)
    every = learn.walk.every_fit
    assert every['fit'].tolist() == [0] * 8 + [1] * 8
    assert every[every['fit'] == 1].drop(columns='fit').reset_index(drop=True).equals(learn.walk.history)

def test_walkopt_all_exports_the_user_api_only():
    namespace = {}
    exec('from walkopt.all import *', namespace)
    names = {n for n in namespace if not n.startswith('_')}
    assert {'WalkCallback', 'ShowWalkCallback', 'mnist1d_learner', 'compare'} <= names
    assert not names & {'TRIALS', 'SCALE_HYPER', 'HostCopy', 'walk_to_best', 'check_int', 'GridCentre'}
    assert [n for n in names if namespace[n] is None] == []  # `fit_walk` is a Learner method: the name was bound to None
    assert callable(Learner.fit_walk)

def test_the_walk_lr_column_shows_an_lr_in_every_epoch():
    "After the walk stops the column shows the lr steps use (it was nan); it never shows staying put's 0"
    learn = tiny_learner(cbs=WalkCallback())
    with learn.no_bar(): learn.fit_walk(3, 1e-3, pct_walk=0.3)  # walks in the first epoch only
    col = learn.recorder.metric_names.index('walk_lr') - 1
    column = [v[col] for v in learn.recorder.values]
    assert all(np.isfinite(column)) and all(v > 0 for v in column), column

def test_a_model_with_nothing_to_train_is_refused_by_name():
    "fit_walk says so; plain fit too when the splitter hands fastai the frozen parameters (its default splitter fails first)"
    frozen = tiny_learner()
    frozen.splitter = trainable_params  # fastai's default: no trainable parameters, no parameter groups
    for p in frozen.model.parameters(): p.requires_grad_(False)
    with pytest.raises(ValueError, match='no trainable parameters'): fit_quietly(frozen, 1, 'fit_walk')
    held = tiny_learner(cbs=WalkCallback())  # its splitter returns the parameter groups, trainable or not
    for p in held.model.parameters(): p.requires_grad_(False)
    with pytest.raises(ValueError, match='no trainable parameters'): fit_quietly(held)
