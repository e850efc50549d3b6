"""Keras 3: state probes (:mod:`.probes`), a reader that counts chosen layers
on data in its own loop (:mod:`.reader`), and the ``StateSpaceCallback``
(:mod:`.callback`).  Importing this package imports Keras."""

from ..devices import pack_with_keras_ops as pack_on_device
from .callback import StateSpaceCallback
from .probes import (
    METHODS,
    StateCapture,
    backend_sees_gpu,
    build_efficiency_model,
    find_layers,
    probe_name,
    probe_plan,
    reset_efficiency_model,
)
from .reader import StateReader, batches

__all__ = [
    "METHODS",
    "StateCapture",
    "StateReader",
    "StateSpaceCallback",
    "backend_sees_gpu",
    "batches",
    "build_efficiency_model",
    "find_layers",
    "pack_on_device",
    "probe_name",
    "probe_plan",
    "reset_efficiency_model",
]
