"""PyTorch probes: this path is kept for users; the code lives in
:mod:`tensorstate_callbacks.integrations.torch`."""

from .integrations.torch import *  # noqa: F403
from .integrations.torch import __all__  # noqa: F401
