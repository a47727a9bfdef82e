"Everything a user needs: `from walkopt.all import *`"
from .core import *
from .callback import *
from .plot import *
from .data import *
from .compare import compare, summarize, write_report
