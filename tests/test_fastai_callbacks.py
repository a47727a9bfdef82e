"fastai's own callbacks beside the walk: each does what it does without the walk (its own observable result)."
import numpy as np, pandas as pd, pytest, torch
from torch import nn
from fastcore.test import test_close as close
from fastai.basics import Callback, CrossEntropyLossFlat, Learner, SGD, set_seed
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.data import CollectDataCallback
from fastai.callback.hook import ActivationStats, hook_output
from fastai.callback.mixup import CutMix, MixUp
from fastai.callback.preds import MCDropoutCallback
from fastai.callback.progress import CSVLogger
from fastai.callback.rnn import ModelResetter, RNNCallback, RNNRegularizer
from fastai.callback.schedule import ParamScheduler, SchedLin, fit_one_cycle, fit_flat_cos, fit_sgdr  # patches Learner
from fastai.callback.tracker import EarlyStoppingCallback, ReduceLROnPlateau, SaveModelCallback, TerminateOnNaNCallback
from fastai.callback.training import BnFreeze, ShortEpochCallback
from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config
from fastai.text.models.core import get_language_model
from walkopt.callback import WalkCallback
from walkopt.data import tensor_dls
from walkopt.test_utils import fit_quietly, nan_loss_at, tiny_learner

def image_learner(cbs=None, seed=0) -> Learner:
    "A seeded two-class classifier of 8x8 one-channel images (which half is brighter), a small CNN without BatchNorm or dropout"
    set_seed(seed)
    x = torch.randn(160, 1, 8, 8)
    y = (x[..., :4].mean((1, 2, 3)) > x[..., 4:].mean((1, 2, 3))).long()
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 2))
    return Learner(tensor_dls(x[:128], y[:128], x[128:], y[128:], bs=16), model, loss_func=CrossEntropyLossFlat(), cbs=cbs)

class HypersSeen(Callback):
    "The lr (last group) the optimizer holds at the start of each epoch, and lr and momentum after each training batch, as any later callback sees them"
    order = 70
    def before_fit(self): self.epoch_lrs, self.batch_lrs, self.batch_moms = [], [], []
    def before_epoch(self): self.epoch_lrs.append(self.opt.hypers[-1]['lr'])
    def after_batch(self):
        if not self.training: return
        self.batch_lrs.append(self.opt.hypers[-1]['lr'])
        self.batch_moms.append(self.opt.hypers[-1]['mom'])

# ---- defects: lr seen between steps, checkpoints, batches without targets, hooks

def test_reduce_lr_on_plateau_cuts_the_users_lr_and_the_walk_steps_from_it():
    plateau = lambda: ReduceLROnPlateau(min_delta=100., patience=1)  # never improves after the first epoch: cut each epoch
    walked = fit_quietly(tiny_learner(cbs=[WalkCallback(), plateau(), HypersSeen()]), 4)
    plain = fit_quietly(tiny_learner(cbs=[plateau(), HypersSeen()]), 4)
    close(walked.hypers_seen.epoch_lrs, [1e-3, 1e-3, 1e-4, 1e-5])  # it was 1e-3 throughout: the walk wrote the old lr back
    close(walked.hypers_seen.epoch_lrs, plain.hypers_seen.epoch_lrs)
    h = walked.walk.history
    unit = walked.walk.mults.index(1.)
    close([r.lrs[unit] / r.scale for r in h.itertuples()], [1e-3] * 16 + [1e-4] * 8 + [1e-5] * 8)  # what each step walked from

def test_callbacks_see_the_users_lr_between_steps():
    learn = fit_quietly(tiny_learner(cbs=[WalkCallback(), HypersSeen()]), 2)
    close(learn.hypers_seen.batch_lrs, [1e-3] * 16)
    close(learn.recorder.lrs, learn.walk.history['lr'].tolist())  # after fit, Recorder shows the lrs the steps used

@pytest.mark.parametrize('method, args', [('fit_one_cycle', (2, 1e-3)), ('fit_flat_cos', (2, 1e-3)), ('fit_sgdr', (2, 1, 1e-3))])
def test_schedules_set_the_lr_other_callbacks_see(method, args):
    walked = fit_quietly(tiny_learner(cbs=[WalkCallback(), HypersSeen()]), *args[:1], method, *args[1:])
    plain = fit_quietly(tiny_learner(cbs=HypersSeen()), *args[:1], method, *args[1:])
    close(walked.hypers_seen.batch_lrs, plain.hypers_seen.batch_lrs)
    close(walked.hypers_seen.batch_moms, plain.hypers_seen.batch_moms)

def test_a_param_scheduler_of_another_hyper_is_left_alone():
    sched = lambda: ParamScheduler({'mom': SchedLin(0.95, 0.85)})
    walked = fit_quietly(tiny_learner(cbs=[WalkCallback(), sched(), HypersSeen()]), 1)
    plain = fit_quietly(tiny_learner(cbs=[sched(), HypersSeen()]), 1)
    close(walked.hypers_seen.batch_moms, plain.hypers_seen.batch_moms)
    assert walked.hypers_seen.batch_moms[0] > walked.hypers_seen.batch_moms[-1]

def test_a_checkpoint_holds_the_users_lr_and_a_resumed_run_steps_as_the_uninterrupted_one(tmp_path):
    learn = tiny_learner(cbs=[WalkCallback(), SaveModelCallback(every_epoch=True, with_opt=True, fname='m')])
    learn.path = tmp_path
    fit_quietly(learn, 2)
    resumed = tiny_learner(cbs=WalkCallback())
    resumed.path = tmp_path
    resumed.load('m_0', with_opt=True)
    close([h['lr'] for h in resumed.opt.hypers], [1e-3, 1e-3])  # it saved the walked lr (22x, 8x, ...) beside the scale
    fit_quietly(resumed, 2, start_epoch=1)
    first, uninterrupted = resumed.walk.history.iloc[0], learn.walk.history.query('epoch == 1').iloc[0]
    assert first['epoch'] == 1
    close(first['lrs'], uninterrupted['lrs'])  # the first resumed step walks the same grid as the uninterrupted run did

class DropTargets(Callback):
    "Training batches with an even index lose their targets: fastai then computes no loss and takes no step"
    order = -5
    def before_batch(self):
        if self.training and self.iter % 2 == 0: self.learn.yb = ()

def test_batches_without_targets_are_left_to_fastai():
    learn = fit_quietly(tiny_learner(cbs=[WalkCallback(), DropTargets(), CollectDataCallback()]), 1)
    h = learn.walk.history
    assert h['iter'].tolist() == [1, 3, 5, 7]  # the first batch had none: it crashed on loss_grad
    data = learn.collect_data.data
    assert len(data) == 8 + 2 and [len(yb) for _, yb, _, _ in data[:8]] == [0, 1] * 4
    close(learn.recorder.lrs, h['lr'].tolist())  # Recorder logs the batches with targets only: the walks' lrs, in place

class StepEvents(Callback):
    "Counts, after the walk, the step events it sees and the training forwards its `after_pred` sees"
    order = WalkCallback.order + 5
    def before_fit(self): self.before, self.cancelled, self.after, self.preds = 0, 0, 0, 0
    def before_step(self): self.before += 1
    def after_cancel_step(self): self.cancelled += 1
    def after_step(self): self.after += 1
    def after_pred(self): self.preds += self.training

def test_other_callbacks_see_every_step_event_and_only_training_forwards():
    "The walk takes fastai's step in its place: no step is cancelled, and no callback's after_pred sees a trial"
    learn = fit_quietly(tiny_learner(cbs=[WalkCallback(every=2), StepEvents()]), 1)
    seen = learn.step_events
    assert (seen.before, seen.cancelled, seen.after, seen.preds) == (8, 0, 8, 8)

class HookedEqualsPred(Callback):
    "After each training batch: whether a hook on the last layer still holds the training forward's output"
    order = 70
    def before_fit(self): self.hook, self.same = hook_output(self.model[-1]), []
    def after_batch(self):
        if self.training: self.same.append(torch.equal(self.hook.stored, self.pred.detach()))
    def after_fit(self): self.hook.remove()

def test_hooks_keep_what_the_training_forward_stored():
    learn = fit_quietly(tiny_learner(cbs=[WalkCallback(), HookedEqualsPred()]), 1)
    assert learn.hooked_equals_pred.same == [True] * 8  # they held the last trial's output

class PredMeans(Callback):
    order = 70
    def before_fit(self): self.means = []
    def after_batch(self):
        if self.training: self.means.append(self.pred.float().mean().item())

def test_activation_stats_record_the_training_forward():
    learn = tiny_learner(cbs=[WalkCallback(), PredMeans()])
    learn.add_cb(ActivationStats(modules=[learn.model[-1]]))
    fit_quietly(learn, 1)
    close([s[0]['mean'] for s in learn.activation_stats.stats], learn.pred_means.means, eps=1e-6)

# ---- MixUp and CutMix: trials judge a batch with its own mix

class MixedLossBefore(Callback):
    "Before each walk, the mixed loss of the previous batch at the weights the step starts from: what staying put must show"
    order = WalkCallback.order - 1
    def __init__(self, mix): self.mix = mix
    def before_fit(self): self.expected, self.previous = {}, None
    def before_step(self):
        if self.previous is None: return
        xb, yb, yb1, lam = self.previous
        with torch.no_grad(): pred = self.model(*xb)
        ce = nn.functional.cross_entropy
        self.expected[self.train_iter] = torch.lerp(ce(pred, *yb1, reduction='none'), ce(pred, *yb, reduction='none'), lam).mean().item()
    def after_batch(self):
        if self.training: self.previous = (self.xb, self.yb, self.mix.yb1, self.mix.lam)

@pytest.mark.parametrize('Mix', [MixUp, CutMix])
def test_mixup_and_cutmix_losses_judge_the_batch_with_its_own_mix(Mix):
    mix = Mix()
    learn = image_learner(cbs=[WalkCallback(judge_lag=1), mix, probe := MixedLossBefore(mix)])
    loss_func = learn.loss_func
    fit_quietly(learn, 1)
    h = learn.walk.history.set_index('iter')
    assert len(probe.expected) == 7
    close([h.loc[i, 'base_loss'] for i in probe.expected], list(probe.expected.values()), eps=1e-5)  # not the next batch's mix
    assert learn.loss_func is loss_func  # the mixing callback put its loss function back

def test_mixup_with_a_trial_size_judges_the_cut_batch_with_its_cut_mix():
    learn = fit_quietly(image_learner(cbs=[WalkCallback(trial_size=8), MixUp()]), 1)  # it crashed: 16 partners for 8 samples
    assert len(learn.walk.history) == 8 and np.isfinite(learn.walk.history['base_loss']).all()

# ---- the others: trained beside the walk, each does its job

def test_bn_freeze_keeps_frozen_statistics_and_trials_normalise_as_training_does():
    learn = tiny_learner(dropout=0., cbs=[WalkCallback(judge_lag=0), BnFreeze(), losses := CollectDataCallback()])
    bn = learn.model[1]
    for p in bn.parameters(): p.requires_grad_(False)
    stats = [b.clone() for b in bn.buffers()]
    fit_quietly(learn, 1)
    for b, s in zip(bn.buffers(), stats): assert torch.equal(b, s)
    train_losses = [loss.item() for *_, loss in losses.data[:8]]
    close(learn.walk.history['base_loss'].tolist(), train_losses, eps=1e-5)  # staying put is the training forward

def test_early_stopping_stops_where_it_stops_without_the_walk():
    stop = lambda: EarlyStoppingCallback(min_delta=100., patience=1)
    walked, plain = (fit_quietly(tiny_learner(cbs=cbs), 5) for cbs in ([WalkCallback(), stop()], [stop()]))
    assert len(walked.recorder.values) == len(plain.recorder.values) == 2

def test_terminate_on_nan_stops_at_the_nan_and_the_walk_leaves_finite_weights():
    learn = nan_loss_at(tiny_learner(cbs=[WalkCallback(), TerminateOnNaNCallback()]), [3])
    fit_quietly(learn, 2)
    h = learn.walk.history
    assert h['iter'].tolist() == [0, 1, 2, 3] and h['skipped'].tolist() == [False] * 3 + [True]
    assert learn.recorder.values == [] and all(torch.isfinite(p).all() for p in learn.model.parameters())

def test_csv_logger_writes_the_epoch_table_with_the_walk_lr(tmp_path):
    learn = tiny_learner(cbs=[WalkCallback(), CSVLogger()])
    learn.path = tmp_path
    fit_quietly(learn, 2)
    log = pd.read_csv(tmp_path / 'history.csv')
    assert list(log.columns) == list(learn.recorder.metric_names) and len(log) == 2
    close(log['walk_lr'].tolist(), [v[-1] for v in learn.recorder.values])

def test_progress_callback_shows_the_walk_lr_column(capsys):
    learn = tiny_learner(cbs=WalkCallback())
    learn.fit(1)
    out = capsys.readouterr().out
    assert 'walk_lr' in out

def test_short_epoch_walks_the_part_it_trains():
    learn = fit_quietly(tiny_learner(cbs=[WalkCallback(), ShortEpochCallback(pct=0.5)]), 1)
    assert learn.walk.history['iter'].tolist() == [0, 1, 2, 3, 4]  # it stops after the batch that reaches half

def test_channels_last_weights_stay_channels_last():
    learn = fit_quietly(image_learner(cbs=[WalkCallback(), ChannelsLast()]), 1)
    conv = learn.model[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and len(learn.walk.history) == 8

def test_mc_dropout_predictions_vary_after_a_walked_fit():
    learn = fit_quietly(tiny_learner(dropout=0.5, cbs=WalkCallback()), 1)
    a, b = (learn.get_preds(cbs=MCDropoutCallback())[0] for _ in range(2))
    assert not torch.equal(a, b)

class HiddenAfterTraining(Callback):
    "After each step: whether the RNN's hidden state is the one the training forward left (trials keep their own from it)"
    order = WalkCallback.order + 1
    def before_fit(self): self.same = []
    def after_pred(self):
        if self.training: self.hidden = [t.clone() for t in self._flat(self.model[0].hidden)]
    def after_step(self): self.same.append(all(map(torch.equal, self._flat(self.model[0].hidden), self.hidden)))
    def _flat(self, hidden): return [t for h in hidden for t in h]

def test_an_rnn_language_model_walks_with_its_hidden_state_kept():
    "RNNCallback's first output is what trials judge (they crashed on the tuple); trials leave the RNN's hidden state alone"
    set_seed(0)
    seq = torch.randint(0, 30, (160, 13))
    dls = tensor_dls(seq[:128, :-1], seq[:128, 1:], seq[128:, :-1], seq[128:, 1:], bs=16)
    model = get_language_model(AWD_LSTM, 30, config=dict(awd_lstm_lm_config, emb_sz=8, n_hid=16, n_layers=2))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(),
                    cbs=[ModelResetter(), RNNCallback(), RNNRegularizer(), WalkCallback(), HiddenAfterTraining()])
    fit_quietly(learn, 1)
    h = learn.walk.history
    assert len(h) == 8 and np.isfinite(h['base_loss']).all() and (h['lr'] > 0).any()
    assert learn.hidden_after_training.same == [True] * 8
