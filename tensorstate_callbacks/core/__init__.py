"""The NumPy core: pack states, count them exactly, compute metrics.

It imports no framework and nothing from the rest of the package (only the
leaf helper ``tensorstate_callbacks._imports`` for optional CuPy and zarr).

* :mod:`.packing`: arrays to packed states (the compiled kernel ``_pack``).
* :mod:`.counter`: :class:`StateCounter`, the public counter of one layer.
* :mod:`._engine`: its tables, buffers, spill files and threads (``_table``).
* :mod:`._spill`: spill files, written and read back checked.
* :mod:`.metrics`: entropy, estimators, efficiency, network efficiency and aIQ.
* :mod:`.reduced`: the same metrics from per-slice statistics (the DDP merge).
* :mod:`.storage`: optional zarr store of raw packed states.
"""

from .counter import (
    IncompleteCountsError,
    StateCounter,
    StateSpaceMemoryWarning,
    state_divergence,
)
from .metrics import aIQ, efficiency, entropy, network_efficiency
from .packing import compress_states, decompress_states, pack, sort_states

__all__ = [
    "IncompleteCountsError",
    "StateCounter",
    "StateSpaceMemoryWarning",
    "aIQ",
    "compress_states",
    "decompress_states",
    "efficiency",
    "entropy",
    "network_efficiency",
    "pack",
    "sort_states",
    "state_divergence",
]
