"""tensorstate-callbacks: state-space efficiency and aIQ of neural network layers.

Framework-free at import time: PyTorch and TensorFlow are imported only when a
model or tensor of theirs is handed over (``tensorstate_callbacks.torch``,
``tensorstate_callbacks.keras``, ``tensorstate_callbacks.lightning``).

>>> import numpy as np
>>> import tensorstate_callbacks as ts
>>> counter = ts.StateCounter("layer")
>>> counter.add(np.array([[1.0, 0.0], [0.0, 1.0]]))
>>> counter.efficiency()
0.5
"""

from .capture import StateCounter, StateSpaceMemoryWarning
from .frameworks import build_efficiency_model, reset_efficiency_model
from .metrics import aIQ, efficiency, entropy, network_efficiency
from .states import compress_states, decompress_states, sort_states

__version__ = "0.1.0"

__all__ = [
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
]
