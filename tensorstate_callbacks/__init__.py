"""tensorstate-callbacks: state-space efficiency and aIQ of neural network layers.

Framework-free at import time: PyTorch and TensorFlow are imported only when a
model or tensor of theirs is handed over (``tensorstate_callbacks.torch``,
``tensorstate_callbacks.keras``, ``tensorstate_callbacks.lightning``).

The package is layered, imports flowing one way (see docs/architecture.md):
``core`` (NumPy) <- ``reporting`` <- ``integrations`` (frameworks, callbacks) <- ``cli``.

>>> import numpy as np
>>> import tensorstate_callbacks as ts
>>> counter = ts.StateCounter("layer")
>>> counter.add(np.array([[1.0, 0.0], [0.0, 1.0]]))
>>> counter.efficiency()
0.5
"""

from . import _legacy_paths
from .core import (
    IncompleteCountsError,
    StateCounter,
    StateSpaceMemoryWarning,
    aIQ,
    compress_states,
    decompress_states,
    efficiency,
    entropy,
    sort_states,
    state_divergence,
)
from .integrations._dispatch import (
    build_efficiency_model,
    network_efficiency,
    reset_efficiency_model,
)

__version__ = "0.1.0"

__all__ = [
    "IncompleteCountsError",
    "StateCounter",
    "StateSpaceMemoryWarning",
    "aIQ",
    "build_efficiency_model",
    "compress_states",
    "decompress_states",
    "efficiency",
    "entropy",
    "network_efficiency",
    "reset_efficiency_model",
    "sort_states",
    "state_divergence",
]

_legacy_paths.install()
