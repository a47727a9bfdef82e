"What a user needs: `from walkopt.all import *` (the building blocks stay in `walkopt.core`, `walkopt.callback`, ...)"
from .callback import WalkCallback  # importing it adds `Learner.fit_walk`
from .plot import ShowWalkCallback, plot_walk, plot_walk_iter, plot_walk_winners
from .data import tensor_dls, mnist1d_learner, mnist1d_dls, mnist1d_cnn, synthetic_learner
from .compare import compare, summarize, write_report
