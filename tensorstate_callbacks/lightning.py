"""The Lightning callback: this path is kept for users; the code lives in
:mod:`tensorstate_callbacks.integrations.lightning`."""

from .integrations.lightning import *  # noqa: F403
from .integrations.lightning import __all__  # noqa: F401
