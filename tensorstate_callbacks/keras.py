"""Keras probes and callback; live in :mod:`tensorstate_callbacks.integrations.keras`
(this path is kept for users)."""

from .integrations.keras import *  # noqa: F403
from .integrations.keras import __all__  # noqa: F401
