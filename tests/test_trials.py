"How candidates are evaluated: the loop, `vmap`, and 'auto' choosing between them by timing."
import warnings
from functools import partial
import numpy as np, pytest, torch
from torch import nn
from fastai.callback.core import Callback
from walkopt.core import AutoTrials
from walkopt.callback import WalkCallback
from walkopt.test_utils import tiny_learner, fit_quietly, max_gap

@pytest.mark.parametrize('layer, name', [(nn.SyncBatchNorm(16), 'SyncBatchNorm'), (nn.DataParallel(nn.BatchNorm1d(16)), 'DataParallel')])
def test_vmap_refuses_what_it_cannot_run_by_name(layer, name):
    learn = tiny_learner(cbs=WalkCallback(trials='vmap'))
    learn.model[1] = layer
    with pytest.raises(ValueError, match=name), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fit_quietly(learn)

@pytest.mark.parametrize('lag', [0, 8])
def test_vmap_trials_take_the_same_walk_as_the_loop(lag):
    "On a CPU, BatchNorm and dropout included: same winners, same losses, same weights, running statistics untouched"
    loop, vmap = (fit_quietly(tiny_learner(cbs=WalkCallback(judge_lag=lag, trials=t)), 2) for t in ('loop', 'vmap'))
    assert vmap.walk.history['lr'].tolist() == loop.walk.history['lr'].tolist()
    np.testing.assert_allclose(np.stack(vmap.walk.history['losses']), np.stack(loop.walk.history['losses']), rtol=1e-5)
    assert max_gap([*vmap.model.parameters(), *vmap.model.buffers()], [*loop.model.parameters(), *loop.model.buffers()]) < 1e-5
    assert vmap.model[1].num_batches_tracked.item() == 16

def test_auto_uses_the_loop_on_a_cpu_without_timing():
    learn = fit_quietly(tiny_learner(cbs=WalkCallback(trials='auto')))
    assert isinstance(learn.walk.trials, AutoTrials) and learn.walk.trial_path == 'loop'
    assert learn.walk.trials.seconds == {'loop': [], 'vmap': []}

def timed_auto(vmap_seconds:float) -> AutoTrials:
    "'auto' timing on a CPU too, with a clock on which a vmap walk takes `vmap_seconds` (a loop walk 1)"
    now = [0.]
    def clock(device):
        now[0] += 0.5 * (vmap_seconds if auto.timing == 'vmap' else 1.)  # read at the start and the end of a timed walk
        return now[0]
    auto = AutoTrials(devices=('cpu',), clock=clock)
    return auto

@pytest.mark.parametrize('vmap_seconds,chosen', [(0.5, 'vmap'), (0.95, 'loop')])
def test_auto_times_both_paths_then_keeps_the_clearly_faster(vmap_seconds, chosen):
    auto = timed_auto(vmap_seconds)
    learn = fit_quietly(tiny_learner(cbs=WalkCallback(trials=auto)), 2)
    assert [len(t) for t in auto.seconds.values()] == [4, 4] and learn.walk.trial_path == chosen
    assert len(learn.walk.history) == 16  # every iteration walked, timed or not
    first = auto.seconds
    learn.freeze()  # other trainable parameters: 'auto' times again
    fit_quietly(learn, 2)
    assert auto.seconds is not first and [len(t) for t in auto.seconds.values()] == [4, 4]

class Branchy(nn.Module):
    "Identity with data-dependent control flow, which `torch.func.vmap` refuses, once `armed`"
    def __init__(self, armed=True): super().__init__(); self.armed = armed
    def forward(self, x): return (x if x.sum() > -1e30 else -x) if self.armed else x

class ArmAt(Callback):
    "Arms the model's `Branchy` at training iteration `n`"
    def __init__(self, n): self.n = n
    def before_batch(self):
        if self.training and self.train_iter == self.n: self.model[-1].armed = True

@pytest.mark.parametrize('armed_at', [0, 12])
def test_auto_falls_back_to_the_loop_whenever_vmap_fails(armed_at):
    "At the first walks (vmap cannot run the model), or after it chose vmap (a later batch it cannot run)"
    learn = tiny_learner(cbs=[WalkCallback(trials=timed_auto(0.5)), ArmAt(armed_at)])
    learn.model.append(Branchy(armed=False))
    with pytest.warns(UserWarning, match='vmap cannot run this model'): fit_quietly(learn, 2)
    assert learn.walk.trial_path == 'loop' and len(learn.walk.history) == 16
    assert len(learn.walk.trials.seconds['vmap']) == (0 if armed_at == 0 else 4)
