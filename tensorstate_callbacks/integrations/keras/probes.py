"""State probes for Keras 3 models: identity layers that count states.

``build_efficiency_model(model, attach_to=["Conv2D"])`` returns a new Keras
model that shares every layer (and so every weight) of ``model`` and has a
:class:`StateCapture` probe after (``<layer>_states``) and/or before
(``<layer>_pre_states``) each chosen layer.  A probe passes its input through
unchanged, so the new model predicts what ``model`` predicts;
``predict``/``evaluate``/calls on it count the states of the probed tensors.
The neuron axis is the last one (Keras layers are channels-last): each
position along the other axes is one state, and a neuron fires when its
value is ``> 0``.

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
  activations (see docs/performance.md).  A probe
  declares ``supports_jit = False``, so Keras does not XLA-compile a model
  holding one.  With the torch backend Keras runs layers eagerly and a probe
  hands the torch tensor to
  :func:`~tensorstate_callbacks.integrations.devices.count_tensor`.
* The callback's measurement (:class:`StateReader`) owns its loop, so it needs
  no side effect: a multi-output model sharing the layers returns the probed
  tensors of one batch (``predict_on_batch``, compiled once) and the counters
  read them in the calling thread.  That avoids the side-effect op's thread
  hand-off and GIL acquisition per probe and batch, which makes it the
  cheaper of the two (docs/performance.md gives the figures).  It also works
  with every backend.

On a GPU, TensorFlow probes and the StateReader pack states on the device with
Keras ops (:func:`~tensorstate_callbacks.integrations.devices.pack_with_keras_ops`, the
compiled kernel's bit order) inside the
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

from ...core.counter import StateCounter
from .._probe import CountingProbe
from .._selection import METHODS, Site, check_method, keras_probe_name, select
from .._validation import check_neuron_axis
from ..devices import count_tensor, pack_with_keras_ops

__all__ = ["METHODS", "StateCapture", "backend_sees_gpu", "build_efficiency_model",
           "find_layers", "probe_name", "probe_plan", "reset_efficiency_model"]


@cache
def backend_sees_gpu() -> bool:
    """True when the Keras backend puts new tensors on a GPU (then states are packed there).

    Checked once per process, on a new tensor's device.

    Returns:
        Whether probes and the StateReader pack states on the device with Keras ops.

    Example:
        >>> isinstance(backend_sees_gpu(), bool)
        True
    """
    device = str(getattr(keras.ops.zeros(()), "device", "")).lower()
    return "gpu" in device or "cuda" in device


class StateCapture(CountingProbe, keras.layers.Layer):
    """An identity Keras layer that counts the states of what passes through it.

    Its :class:`~tensorstate_callbacks.StateCounter` (``self.counter``) counts
    them; the probe API of the reference TensorState (``state_count``,
    ``distinct_count``, ``efficiency()``, ``entropy()``, ``counts()``,
    ``state_ids()``, ``max_entropy()``, ``reset_states()``, ``raw_states``,
    ``states``) reads it, as on a PyTorch probe.  ``neuron_axis`` defaults to
    the last axis; ``storage_path`` keeps the raw packed states as zarr.

    The layer returns its input unchanged, in its own dtype; it is never
    XLA-compiled (``supports_jit = False``).  It works with the TensorFlow and
    torch Keras backends.

    Args:
        name: the probe's name, also its counter's (``<layer>_states`` after a
            layer, ``<layer>_pre_states`` before it; see :func:`probe_name`).
        neuron_axis: the axis of the neurons (default: the last).
        storage_path: a directory to keep the raw packed states in (zarr).
        memory_limit: bytes of count tables before the counter spills to disk.
        **kwargs: passed to ``keras.layers.Layer``.

    Raises:
        NotImplementedError: the Keras backend is neither TensorFlow nor torch.
        ArgumentTypeError: ``neuron_axis`` is not an int.

    Example:
        >>> probe = StateCapture("dense_states")
        >>> out = probe(np.array([[1.0, -1.0], [2.0, 3.0], [4.0, -5.0]], dtype="float32"))
        >>> probe.state_count, probe.distinct_count, round(probe.efficiency(), 4)
        (3, 2, 0.4591)
        >>> probe.reset_states(); probe.state_count
        0
    """

    def __init__(self, name: str, *, neuron_axis: int = -1, storage_path=None,
                 memory_limit: int | None = None, **kwargs):
        # autocast=False: tensors pass through in their own dtype, never cast
        super().__init__(name=name, autocast=False, **kwargs)
        neuron_axis = check_neuron_axis(neuron_axis, allow_none=False)
        if keras.backend.backend() not in ("tensorflow", "torch"):
            raise NotImplementedError(
                f"StateCapture probes work with the tensorflow and torch Keras backends, not "
                f"{keras.backend.backend()!r}; StateReader (and the callback) work with any"
            )
        self.neuron_axis = neuron_axis
        self.supports_jit = False  # the probe runs Python code on every batch
        self._count_lock = threading.Lock()
        self.built = True
        self.counter = StateCounter(name, storage_path=storage_path, memory_limit=memory_limit)

    def compute_output_spec(self, inputs):
        """The output is the input: same shape, same dtype."""
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def call(self, inputs):
        """Count the states of ``inputs``; return ``inputs`` unchanged."""
        if keras.backend.backend() == "torch":  # eager: the tensor itself
            count_tensor(self.counter, inputs, self.neuron_axis)
        else:
            self._capture_tensorflow(inputs)
        return inputs

    def _capture_tensorflow(self, tensor) -> None:
        import tensorflow as tf

        axis = self.neuron_axis
        if backend_sees_gpu():
            num_neurons = tensor.shape[axis]
            value = pack_with_keras_ops(tensor, axis)

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
        """The layer's config, with its ``neuron_axis``."""
        return {**super().get_config(), "neuron_axis": self.neuron_axis}


def probe_name(layer_name: str, method: str, call: int = 0) -> str:
    """Name of the probe after (``'after'``) or before (``'before'``) a layer.

    ``<layer>_states`` after a layer, ``<layer>_pre_states`` before it (the
    PyTorch probes' names differ: ``<module>_post_states``).

    Args:
        layer_name: the Keras layer's name.
        method: ``'after'`` or ``'before'``.
        call: which call site of a layer used at several (0: the first;
            the k-th adds ``_call<k>``).

    Returns:
        The probe's name, which is also its counter's and its tags' ``<probe>``.

    Example:
        >>> probe_name("conv_1", "after"), probe_name("conv_1", "before")
        ('conv_1_states', 'conv_1_pre_states')
        >>> probe_name("shared", "after", call=1)
        'shared_call1_states'
    """
    return keras_probe_name(layer_name, method, call)


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

    Args:
        model: a Keras model.
        attach_to: layer class names (subclasses match too) or layer names.
        exclude: layer names or class names to leave out.

    Returns:
        The chosen layers, in the model's order (input layers never).

    Raises:
        ValueError: ``attach_to`` is empty, an entry matches no layer (the
            message lists the model's classes and layers), or every match is
            excluded.
        ArgumentTypeError: ``attach_to`` or ``exclude`` is not a list of names.

    Example:
            >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
        >>> [layer.name for layer in find_layers(net, ["Dense"])]
        ['fc']
    """
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    sites = [Site(layer.name, tuple(cls.__name__ for cls in type(layer).__mro__))
             for layer in layers]
    chosen = select(sites, attach_to, exclude, kind="layer", owner=f"model {model.name!r}")
    return [layers[index] for index in chosen]


def call_nodes(functional) -> dict[int, list]:
    """The nodes (calls) of each layer inside ``functional``, by ``id(layer)``,
    in the order Keras runs the graph (the order :func:`build_efficiency_model`
    rewires them in): the k-th is the layer's call site k."""
    nodes: dict[int, list] = {}
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.setdefault(id(node.operation), []).append(node)
    return nodes


def probe_plan(model, attach_to, exclude=(), method: str = "after"):
    """Where the probes of :func:`build_efficiency_model` (or a StateReader) go.

    Args:
        model: a Functional model, or a built Sequential model.
        attach_to: layer class names or layer names (see :func:`find_layers`).
        exclude: layer names or class names to leave out.
        method: ``'after'``, ``'before'`` or ``'both'``.

    Returns:
        ``(functional_model, [(layer, 'before' | 'after', probe name, node)])``:
        the model as a Functional model sharing its layers, and the probes in
        model order, one per call site of each chosen layer (``node``: the
        Keras node of that call).

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.
        ValueError: a subclassed model (its layers have no symbolic outputs),
            a bad ``method``, or ``attach_to``/``exclude`` that pick nothing.

    Example:
        >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
        >>> [(where, name) for _, where, name, _ in probe_plan(net, ["Dense"], method="both")[1]]
        [('before', 'fc_pre_states'), ('after', 'fc_states')]
    """
    methods = check_method(method)
    functional = _functional_view(model)
    nodes = call_nodes(functional)
    plan = [(layer, where, probe_name(layer.name, where, call), node)
            for layer in find_layers(functional, attach_to, exclude)
            for call, node in enumerate(nodes.get(id(layer), ()))
            for where in methods]
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

    Args:
        model: a Functional model, or a built Sequential model.
        attach_to: layer class names (subclasses match too) or layer names.
        exclude: layer names or class names to leave out.
        method: ``'after'``, ``'before'`` or ``'both'``.
        storage_path: a directory; each probe keeps its raw states there.
        neuron_axis: the neuron axis of every probe (default: the last).
        memory_limit: bytes of count tables per probe before spilling to disk.

    Returns:
        A new ``keras.Model`` sharing ``model``'s layers, with
        ``efficiency_layers``: its :class:`StateCapture` probes, in model order.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.
        ValueError: a subclassed model, ``attach_to``/``exclude``/``method``
            that pick nothing or are malformed, or a probed layer that takes or
            returns more than one tensor.

    Example:
        >>> inputs = keras.Input((3,))
        >>> net = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
        >>> probed = build_efficiency_model(net, attach_to=["Dense"], method="both")
        >>> _ = probed.predict(np.ones((5, 3), dtype="float32"), verbose=0)
        >>> [(probe.name, probe.state_count) for probe in probed.efficiency_layers]
        [('fc_pre_states', 5), ('fc_states', 5)]
    """
    functional, plan = probe_plan(model, attach_to, exclude, method)
    sites = call_nodes(functional)
    probes = {
        (id(layer), sites[id(layer)].index(node), where): StateCapture(
            name, neuron_axis=neuron_axis, memory_limit=memory_limit,
            storage_path=None if storage_path is None else Path(storage_path) / name,
        )
        for layer, where, name, node in plan
    }
    calls: dict[int, int] = {}  # call sites of each layer rewired so far

    def call_with_probes(layer, *args, **kwargs):
        call = calls[id(layer)] = calls.get(id(layer), -1) + 1
        before = probes.get((id(layer), call, "before"))
        after = probes.get((id(layer), call, "after"))
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


def reset_efficiency_model(model) -> None:
    """Reset every probe of ``model`` (``state_count`` back to 0).

    Args:
        model: a model made by :func:`build_efficiency_model`; any other
            model has no probes and is left alone.

    Example:
        >>> inputs = keras.Input((2,))
        >>> net = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        >>> probed = build_efficiency_model(net, attach_to=["Dense"])
        >>> _ = probed.predict(np.ones((4, 2), dtype="float32"), verbose=0)
        >>> reset_efficiency_model(probed); probed.efficiency_layers[0].state_count
        0
    """
    for probe in getattr(model, "efficiency_layers", ()):
        probe.reset_states()
