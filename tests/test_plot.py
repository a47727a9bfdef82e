"The walk's pictures outside a notebook: headless rendering to files, and the live view staying quiet."
import matplotlib
from walkopt.callback import WalkCallback
from walkopt.plot import ShowWalkCallback
from walkopt.test_utils import tiny_learner, fit_quietly

def fitted(*cbs): return fit_quietly(tiny_learner(lr=1e-4, cbs=[WalkCallback(), *cbs]))

def test_figures_save_headless(tmp_path):
    assert matplotlib.get_backend().lower() == 'agg'  # no display here
    learn = fitted()
    for name, fig in dict(walk=learn.walk.plot(), one=learn.walk.plot_iter(3), winners=learn.walk.plot_winners()).items():
        fig.savefig(tmp_path / f'{name}.png')
        data = (tmp_path / f'{name}.png').read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000

def test_live_view_is_quiet_outside_a_notebook():
    learn = fitted(ShowWalkCallback())
    assert learn.show_walk.shown == 0

def test_the_walk_picture_labels_both_halves_and_marks_every_winner():
    fig = fitted().walk.plot()
    ax, bar = fig.axes
    ticks = bar.get_yticks()
    assert (ticks < 0).sum() >= 2 and (ticks > 0).sum() >= 2  # the blue half (better than staying put) has labels too
    winners, stayed = ax.lines
    assert winners.get_marker() == '.' and stayed.get_marker() == 'v' and stayed.get_markersize() >= 5
