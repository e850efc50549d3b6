"""The Lightning callback for ``import pytorch_lightning`` users; the code
lives in :mod:`tensorstate_callbacks.integrations.pytorch_lightning`."""

from .integrations.pytorch_lightning import *  # noqa: F403
from .integrations.pytorch_lightning import __all__  # noqa: F401
