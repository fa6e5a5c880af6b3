"""Hub support: tokens, model cards, pushes."""

from tl_hf.hub.publish import *  # noqa: F401,F403
from tl_hf.hub.publish import __all__  # noqa: F401
