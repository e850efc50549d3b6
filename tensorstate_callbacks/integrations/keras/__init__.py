"""Keras 3: state probes (:mod:`.probes`), a reader that counts chosen layers
on data in its own loop (:mod:`.reader`), and the ``StateSpaceCallback``
(:mod:`.callback`).  Importing this package imports Keras.

Also importable as ``tensorstate_callbacks.keras`` (the path users write).
Keras probes count along the last axis (channels-last) and are named
``<layer name>_states`` after a layer, ``<layer name>_pre_states`` before it.

Example:
    >>> import keras, numpy as np
    >>> from tensorstate_callbacks import keras as ts_keras
    >>> inputs = keras.Input((3,))
    >>> net = keras.Model(inputs, keras.layers.Dense(4, name="fc")(inputs))
    >>> probed = ts_keras.build_efficiency_model(net, attach_to=["Dense"])
    >>> _ = probed.predict(np.ones((5, 3), "float32"), verbose=0)
    >>> [(probe.name, probe.state_count) for probe in probed.efficiency_layers]
    [('fc_states', 5)]
"""

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
