"""walkopt: walk instead of step. A fastai callback that tries several learning rates along each update and keeps the best (`from walkopt.all import *`)."""
__version__ = "0.0.1"
