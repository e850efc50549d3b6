"""State probes for Keras 3 models: identity layers that count states.

``build_efficiency_model(model, attach_to=["Conv2D"])`` returns a new Keras
model that shares every layer (and so every weight) of ``model`` and has a
:class:`StateCapture` probe after (``<layer>_states``) and/or before
(``<layer>_pre_states``) each chosen layer.  A probe passes its input through
unchanged, so the new model predicts what ``model`` predicts;
``predict``/``evaluate``/calls on it count the states of the probed tensors.
The neuron axis is the last one (channels_last), as DESIGN.md fixes.

How the values reach the counters: two paths, each the faster one for its job.

* Probes inside the user's ``predict``/``evaluate`` (``build_efficiency_model``).
  With the TensorFlow backend Keras runs them inside a ``tf.function``, so a
  probe adds a ``tf.numpy_function`` op to the graph.  The op is stateful, and
  TensorFlow's automatic control dependencies run every stateful op of a
  function before it returns, so it runs once per batch with no data
  dependency holding up the layers that follow.  On the CPU it hands the
  tensor's own buffer to the compiled kernel (no copy).  A side effect is the
  only way to fill probes during Keras' own loop: a multi-output model would
  change what ``predict`` returns and make Keras keep every batch's
  activations (460 MB for LeNet-5's ``conv_1`` on 10,000 images).  A probe
  declares ``supports_jit = False``, so Keras does not XLA-compile a model
  holding one.  With the torch backend Keras runs layers eagerly and a probe
  hands the torch tensor to
  :meth:`tensorstate_callbacks.torch.StateCaptureHook.capture`.
* The callback's measurement (:class:`StateReader`) owns its loop, so it needs
  no side effect: a multi-output model sharing the layers returns the probed
  tensors of one batch (``predict_on_batch``, compiled once) and the counters
  read them in the calling thread.  Measured on LeNet-5 and 10,000 images
  (process CPU time over a plain ``predict``): 1.06 at batch size 200 and
  1.10 at 32, against 1.14 and 1.32 with the side-effect op, whose cost is a
  thread hand-off and a GIL acquisition per probe and batch.  It also works
  with every backend.

On a GPU, TensorFlow probes and the StateReader pack states on the device with
Keras ops (:func:`pack_on_device`, the compiled kernel's bit order) inside the
graph, so only packed bytes reach the host and no extra dependency is needed;
torch-backend probes use the PyTorch integration's packer (CuPy, or torch ops).

Only models whose layers have symbolic outputs can be rewired: Functional
models and built Sequential models.  A subclassed model (``call()`` written in
Python) gets a ValueError that says so.

The Grappler optimizer of TensorFlow may rewrite the unprobed model's graph
in ways a probe prevents (for example, max-pooling before a monotonic
activation when nothing else reads the activation), which can change its
float rounding: then the two models agree to rounding, not bit for bit.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import keras
import numpy as np

from .capture import StateCounter

METHODS = ("before", "after", "both")
_SUFFIX = {"after": "_states", "before": "_pre_states"}


@cache
def backend_sees_gpu() -> bool:
    """True when the Keras backend puts new tensors on a GPU (then states are packed there).

    >>> isinstance(backend_sees_gpu(), bool)
    True
    """
    device = str(getattr(keras.ops.zeros(()), "device", "")).lower()
    return "gpu" in device or "cuda" in device


def pack_on_device(tensor, neuron_axis: int = -1):
    """Pack states with Keras ops on the tensor's device (the GPU path):
    ``uint8[states, ceil(neurons / 8)]``, the same bits as the compiled kernel.

    >>> keras.ops.convert_to_numpy(pack_on_device(np.array([[1.0, -1.0, 2.0], [0.0, 0.0, 5.0]])))
    array([[5],
           [4]], dtype=uint8)
    """
    ops = keras.ops
    num_neurons = tensor.shape[neuron_axis]
    fired = ops.cast(ops.greater(ops.moveaxis(tensor, neuron_axis, -1), 0), "int32")
    fired = ops.pad(ops.reshape(fired, (-1, num_neurons)), [[0, 0], [0, -num_neurons % 8]])
    fired = ops.reshape(fired, (-1, (num_neurons + 7) // 8, 8))
    weights = ops.convert_to_tensor(np.array([1 << bit for bit in range(8)], dtype="int32"))
    return ops.cast(ops.sum(fired * weights, axis=-1), "uint8")


class StateCapture(keras.layers.Layer):
    """An identity Keras layer that counts the states of what passes through it.

    It wraps a :class:`~tensorstate_callbacks.StateCounter` (``self.counter``)
    and exposes the probe API of the reference TensorState: ``state_count``,
    ``distinct_count``, ``efficiency()``, ``entropy()``, ``counts()``,
    ``state_ids()``, ``max_entropy()``, ``reset_states()``, ``raw_states``,
    ``states``.  ``neuron_axis`` defaults to the last axis; ``storage_path``
    keeps the raw packed states as zarr.

    >>> probe = StateCapture("dense_states")
    >>> out = probe(np.array([[1.0, -1.0], [2.0, 3.0], [4.0, -5.0]], dtype="float32"))
    >>> probe.state_count, probe.distinct_count, round(probe.efficiency(), 4)
    (3, 2, 0.4591)
    """

    def __init__(self, name: str, *, neuron_axis: int = -1, storage_path=None,
                 memory_limit: int | None = None, **kwargs):
        # autocast=False: tensors pass through in their own dtype, never cast
        super().__init__(name=name, autocast=False, **kwargs)
        if isinstance(neuron_axis, bool) or not isinstance(neuron_axis, int):
            raise TypeError(f"neuron_axis must be an int, got {neuron_axis!r}")
        if keras.backend.backend() not in ("tensorflow", "torch"):
            raise NotImplementedError(
                f"StateCapture probes work with the tensorflow and torch Keras backends, not "
                f"{keras.backend.backend()!r}; StateReader (and the callback) work with any"
            )
        self.neuron_axis = neuron_axis
        self.supports_jit = False  # the probe runs Python code on every batch
        self._count_lock = threading.Lock()
        self.built = True
        options = {"storage_path": storage_path, "memory_limit": memory_limit}
        if keras.backend.backend() == "torch":
            from .torch import StateCaptureHook

            self.counter = StateCaptureHook(name, neuron_axis=neuron_axis, **options)
        else:
            self.counter = StateCounter(name, **options)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def call(self, inputs):
        if keras.backend.backend() == "torch":
            self.counter.capture(None, inputs)
        else:
            self._capture_tensorflow(inputs)
        return inputs

    def _capture_tensorflow(self, tensor) -> None:
        import tensorflow as tf

        axis = self.neuron_axis
        if backend_sees_gpu():
            num_neurons = tensor.shape[axis]
            value = pack_on_device(tensor, axis)

            def count(packed):
                self.counter.add_packed(packed, num_neurons)
        elif tensor.dtype == tf.bfloat16:
            value = tf.bitcast(tensor, tf.int16)

            def count(bits):
                self.counter.add(bits, axis, dtype="bfloat16")
        else:
            value = tensor

            def count(array):
                self.counter.add(array, axis)

        def run(array):
            with self._count_lock:  # a shared layer's probe can run from two ops at once
                count(array)
            return np.int64(0)

        # Stateful, so it runs once per batch although nothing reads its result.
        tf.numpy_function(run, [value], tf.int64, stateful=True)

    def get_config(self):
        return {**super().get_config(), "neuron_axis": self.neuron_axis}

    # -- the probe API, read from the counter --------------------------------------
    @property
    def state_count(self) -> int:
        """Number of states seen, repeats included."""
        return self.counter.state_count

    @property
    def distinct_count(self) -> int:
        """Number of distinct states seen."""
        return self.counter.distinct_count

    @property
    def num_neurons(self) -> int | None:
        """Width of the states (None before the first batch)."""
        return self.counter.num_neurons

    @property
    def raw_states(self) -> np.ndarray:
        """Every packed state in arrival order (needs ``storage_path``)."""
        return self.counter.raw_states

    @property
    def states(self) -> np.ndarray:
        """Every state as ``bool[state_count, num_neurons]`` (needs ``storage_path``)."""
        return self.counter.states

    def counts(self) -> np.ndarray:
        """How often each distinct state occurred (aligned with :meth:`state_ids`)."""
        return self.counter.counts()

    def state_ids(self) -> np.ndarray:
        """The distinct packed states, one row each."""
        return self.counter.state_ids()

    def entropy(self, alpha=1) -> float:
        """Renyi entropy of order ``alpha`` of the states (base 2)."""
        return self.counter.entropy(alpha)

    def efficiency(self, alpha1=1, alpha2=None) -> float:
        """``entropy(alpha1)`` over ``max_entropy()`` (or over ``entropy(alpha2)``)."""
        return self.counter.efficiency(alpha1, alpha2)

    def max_entropy(self) -> int:
        """The number of neurons."""
        return self.counter.max_entropy()

    def reset_states(self) -> None:
        """Forget every state seen so far."""
        self.counter.reset_states()


def probe_name(layer_name: str, method: str) -> str:
    """DESIGN.md name of the probe after (``'after'``) or before a layer.

    >>> probe_name("conv_1", "after"), probe_name("conv_1", "before")
    ('conv_1_states', 'conv_1_pre_states')
    """
    return layer_name + _SUFFIX[method]


def _as_names(value, argument: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"{argument} must be a list of layer class names or layer names, "
                         f"got {value!r}")
    return names


def _functional_view(model):
    """``model`` as a Functional model sharing its layers, or a ValueError."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"cannot attach state probes to {type(model).__name__} {model.name!r}: its layers "
            "have no symbolic outputs. build_efficiency_model supports Functional models "
            "(keras.Model(inputs, outputs)) and Sequential models that start with keras.Input "
            "(or were built on data); a subclassed model with its own call() cannot be "
            "rewired. Rebuild it functionally, or put StateCapture layers in its call()."
        )
    if isinstance(model, keras.Sequential):
        return keras.Model(inputs, outputs, name=model.name)
    return model


def find_layers(model, attach_to: Sequence[str], exclude: Sequence[str] = ()) -> list:
    """The layers of ``model`` whose class (or a base class) or name is in
    ``attach_to`` and whose name or class is not in ``exclude``.

    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    >>> [layer.name for layer in find_layers(net, ["Dense"])]
    ['fc']
    """
    attach_to = _as_names(attach_to, "attach_to")
    exclude = set(_as_names(exclude, "exclude"))
    if not attach_to:
        raise ValueError("attach_to is empty: name at least one layer class or layer name")
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    found, used = [], set()
    for layer in layers:
        classes = [cls.__name__ for cls in type(layer).__mro__]
        hits = [key for key in attach_to if key == layer.name or key in classes]
        used.update(hits)
        if hits and layer.name not in exclude and not exclude.intersection(classes):
            found.append(layer)
    unknown = [key for key in attach_to if key not in used]
    if unknown:
        raise ValueError(
            f"attach_to entries {unknown} match no layer of model {model.name!r}; it contains "
            f"the layer classes {sorted({type(layer).__name__ for layer in layers})} and the "
            f"layers {[layer.name for layer in layers]}"
        )
    if not found:
        raise ValueError(f"every layer matching attach_to={attach_to} is excluded by "
                         f"{sorted(exclude)}")
    return found


def probe_plan(model, attach_to, exclude=(), method: str = "after"):
    """``(functional_model, [(layer, 'before' | 'after', probe name)])`` for the
    layers of ``model`` chosen by ``attach_to``/``exclude`` (see
    :func:`build_efficiency_model`); raises ValueError on bad choices.

    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    >>> [(where, name) for _, where, name in probe_plan(net, ["Dense"], method="both")[1]]
    [('before', 'fc_pre_states'), ('after', 'fc_states')]
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    functional = _functional_view(model)
    methods = ("before", "after") if method == "both" else (method,)
    plan = [(layer, where, probe_name(layer.name, where))
            for layer in find_layers(functional, attach_to, exclude) for where in methods]
    return functional, plan


def build_efficiency_model(model, attach_to=("Conv2D",), exclude=(), method: str = "after",
                           storage_path=None, *, neuron_axis: int = -1,
                           memory_limit: int | None = None):
    """A model that shares ``model``'s layers, with :class:`StateCapture` probes.

    ``attach_to`` holds layer class names (subclasses match too) or layer
    names; ``exclude`` names layers (or classes) to skip.  ``method`` is
    ``'after'`` (probe ``<layer>_states`` on the output), ``'before'``
    (``<layer>_pre_states`` on the input) or ``'both'``.  With ``storage_path``
    each probe stores its raw states as zarr at ``storage_path/<probe name>``.
    The result predicts exactly what ``model`` predicts (same layers, same
    weights, compiled like ``model`` when it is compiled); its probes are in
    ``efficiency_layers``.

    >>> inputs = keras.Input((3,))
    >>> net = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
    >>> probed = build_efficiency_model(net, attach_to=["Dense"], method="both")
    >>> _ = probed.predict(np.ones((5, 3), dtype="float32"), verbose=0)
    >>> [(probe.name, probe.state_count) for probe in probed.efficiency_layers]
    [('fc_pre_states', 5), ('fc_states', 5)]
    """
    functional, plan = probe_plan(model, attach_to, exclude, method)
    probes = {
        (id(layer), where): StateCapture(
            name, neuron_axis=neuron_axis, memory_limit=memory_limit,
            storage_path=None if storage_path is None else Path(storage_path) / name,
        )
        for layer, where, name in plan
    }

    def call_with_probes(layer, *args, **kwargs):
        before, after = probes.get((id(layer), "before")), probes.get((id(layer), "after"))
        if before is not None:
            if not args or not isinstance(args[0], keras.KerasTensor):
                raise ValueError(f"method='before' needs layer {layer.name!r} to take one "
                                 "tensor as its first input; probe it with method='after'")
            args = (before(args[0]), *args[1:])
        outputs = layer(*args, **kwargs)
        if after is not None:
            if not isinstance(outputs, keras.KerasTensor):
                raise ValueError(f"method='after' needs layer {layer.name!r} to return one "
                                 "tensor; probe the layer that consumes its outputs instead")
            outputs = after(outputs)
        return outputs

    probed = keras.models.clone_model(functional, clone_function=lambda layer: layer,
                                      call_function=call_with_probes)
    if model.compiled and not probed.compiled:
        probed.compile_from_config(model.get_compile_config())
    # Not a tracked attribute: the probes are already layers of the model.
    object.__setattr__(probed, "efficiency_layers", list(probes.values()))
    return probed


class _PackStates(keras.layers.Layer):
    """Packs its input's states on the device (see :func:`pack_on_device`)."""

    def __init__(self, neuron_axis: int, **kwargs):
        super().__init__(autocast=False, **kwargs)
        self.neuron_axis = neuron_axis

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((None, (inputs.shape[self.neuron_axis] + 7) // 8), dtype="uint8")

    def call(self, inputs):
        return pack_on_device(inputs, self.neuron_axis)


class StateReader:
    """Counts the states of chosen layers on data, batch by batch, in its own loop.

    A multi-output model shares ``model``'s layers and returns the probed
    tensors of a batch (packed on the device when the backend runs on a GPU);
    ``counters`` (:class:`~tensorstate_callbacks.StateCounter`, named like the
    probes of :func:`build_efficiency_model`) count them.  The layers run in
    inference mode; nothing of ``model`` changes.  Probes see each layer's
    first call (its place in ``model``'s own graph).

    >>> inputs = keras.Input((3,))
    >>> net = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
    >>> reader = StateReader(net, attach_to=["fc"])
    >>> reader.count(np.ones((5, 3), dtype="float32"), batch_size=2)
    >>> [(counter.name, counter.state_count) for counter in reader.counters]
    [('fc_states', 5)]
    """

    def __init__(self, model, attach_to=("Conv2D",), exclude=(), method: str = "after", *,
                 neuron_axis: int = -1, memory_limit: int | None = None):
        functional, plan = probe_plan(model, attach_to, exclude, method)
        tensors = []
        for layer, where, _ in plan:
            tensor = layer.output if where == "after" else layer.input
            if not isinstance(tensor, keras.KerasTensor):
                raise ValueError(f"layer {layer.name!r} has more than one {where!r} tensor; "
                                 "probe a layer that takes and returns one tensor")
            tensors.append(tensor)
        self.num_neurons = [tensor.shape[neuron_axis] for tensor in tensors]
        self.on_device = backend_sees_gpu()
        if self.on_device:
            tensors = [_PackStates(neuron_axis)(tensor) for tensor in tensors]
        self.neuron_axis = neuron_axis
        self.model = keras.Model(functional.inputs, tensors)
        self.counters = [StateCounter(name, memory_limit=memory_limit) for _, _, name in plan]

    def update(self, batch) -> None:
        """Count the states of one batch of inputs."""
        outputs = self.model.predict_on_batch(batch)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        for counter, values, num_neurons in zip(self.counters, outputs, self.num_neurons,
                                                strict=True):
            if self.on_device:
                counter.add_packed(values, num_neurons)
            else:
                counter.add(values, self.neuron_axis)

    def count(self, data, batch_size: int | None = None) -> None:
        """Reset, then count the states of every sample of ``data``: an array (or
        dict of arrays), cut into ``batch_size`` batches (default 32), or a
        re-iterable of batches (``tf.data.Dataset``, ``keras.utils.PyDataset``,
        a DataLoader) whose items are ``x`` or ``(x, y, ...)``."""
        self.reset()
        for batch in batches(data, batch_size):
            self.update(batch)

    def reset(self) -> None:
        """Forget every state counted so far."""
        for counter in self.counters:
            counter.reset_states()


def batches(data, batch_size: int | None = None):
    """An iterator over the input batches of ``data`` (see :meth:`StateReader.count`);
    TypeError at once for data that cannot be read again every epoch.

    >>> [batch.shape for batch in batches(np.zeros((5, 2)), batch_size=2)]
    [(2, 2), (2, 2), (1, 2)]
    """
    if isinstance(data, dict) or hasattr(data, "shape"):
        return _slices(data, batch_size or 32)
    try:
        one_shot = iter(data) is data
    except TypeError:
        one_shot = True
    if one_shot:
        raise TypeError(f"cannot read batches again every epoch from {type(data).__name__}: pass "
                        "an array (or dict of arrays), a tf.data.Dataset, a PyDataset or a "
                        "DataLoader, not a one-shot iterator or generator")
    return (item[0] if isinstance(item, (tuple, list)) else item for item in data)


def _slices(data, size: int):
    total = len(next(iter(data.values()))) if isinstance(data, dict) else len(data)
    for start in range(0, total, size):
        if isinstance(data, dict):
            yield {key: value[start:start + size] for key, value in data.items()}
        else:
            yield data[start:start + size]


def reset_efficiency_model(model) -> None:
    """Reset every probe of ``model`` (``state_count`` back to 0).

    >>> inputs = keras.Input((2,))
    >>> net = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    >>> probed = build_efficiency_model(net, attach_to=["Dense"])
    >>> _ = probed.predict(np.ones((4, 2), dtype="float32"), verbose=0)
    >>> reset_efficiency_model(probed); probed.efficiency_layers[0].state_count
    0
    """
    for probe in getattr(model, "efficiency_layers", ()):
        probe.reset_states()


def __getattr__(name):
    if name == "StateSpaceCallback":
        from .keras_callback import StateSpaceCallback

        return StateSpaceCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
