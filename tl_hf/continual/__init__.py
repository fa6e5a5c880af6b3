"""Continual learning: task sequences, the runner, resume, and the accuracy-matrix metrics."""

from tl_hf.continual.runner import *  # noqa: F401,F403
from tl_hf.continual.runner import __all__  # noqa: F401
