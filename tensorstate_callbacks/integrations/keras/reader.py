"""Counting chosen layers' states on data in a loop of one's own (the Keras callback's way).

:class:`StateReader` builds a multi-output model that shares the layers of the
user's model and returns the probed tensors of a batch; its counters read them
in the calling thread.  That costs less than probes inside ``predict``, which
hand every batch to another thread (docs/performance.md gives the figures),
and it works with every backend.  On a GPU the states are packed on the device
(:func:`~tensorstate_callbacks.integrations.devices.pack_with_keras_ops`), so
only packed bytes reach the host.

Example:
    >>> import numpy as np
    >>> inputs = keras.Input((3,))
    >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    >>> net = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    >>> reader = StateReader(net, attach_to=["Dense"], exclude=["out"])
    >>> reader.count(np.random.default_rng(0).random((50, 3), dtype="float32"))
    >>> counter = reader.counters[0]
    >>> counter.name, counter.state_count, counter.num_neurons
    ('hidden_states', 50, 4)
"""

from __future__ import annotations

import keras
import numpy as np

from ...core.counter import IncompleteCountsError, StateCounter
from ..devices import pack_with_keras_ops
from . import probes
from .probes import probe_plan

__all__ = ["StateReader", "batches"]


class _PackStates(keras.layers.Layer):
    """Packs its input's states on the device (``devices.pack_with_keras_ops``)."""

    def __init__(self, neuron_axis: int, **kwargs):
        super().__init__(autocast=False, **kwargs)
        self.neuron_axis = neuron_axis

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((None, (inputs.shape[self.neuron_axis] + 7) // 8), dtype="uint8")

    def call(self, inputs):
        return pack_with_keras_ops(inputs, self.neuron_axis)


class StateReader:
    """Counts the states of chosen layers on data, batch by batch, in its own loop.

    A multi-output model shares ``model``'s layers and returns the probed
    tensors of a batch (packed on the device when the backend runs on a GPU);
    ``counters`` (:class:`~tensorstate_callbacks.StateCounter`, named like the
    probes of :func:`build_efficiency_model`) count them.  The layers run in
    inference mode; nothing of ``model`` changes.  A layer called at several
    places of ``model``'s graph has a counter per call site, as probes do.

    Args:
        model: a Functional model, or a built Sequential model.
        attach_to: layer class names (subclasses match too) or layer names.
        exclude: layer names or class names to leave out.
        method: ``'after'`` (outputs), ``'before'`` (inputs) or ``'both'``.
        neuron_axis: the neuron axis of every probed tensor (default: the last).
        memory_limit: bytes of count tables per counter before spilling to disk.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.
        ValueError: a subclassed model, ``attach_to``/``exclude``/``method``
            that pick nothing, or a probed layer with more than one input or
            output tensor.

    Example:
        >>> import numpy as np
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
        for layer, where, _, node in plan:
            tensor = node.output_tensors if where == "after" else node.input_tensors
            tensor = tensor[0] if len(tensor) == 1 else tensor
            if not isinstance(tensor, keras.KerasTensor):
                raise ValueError(f"layer {layer.name!r} has more than one {where!r} tensor; "
                                 "probe a layer that takes and returns one tensor")
            tensors.append(tensor)
        self.num_neurons = [tensor.shape[neuron_axis] for tensor in tensors]
        self.on_device = probes.backend_sees_gpu()
        if self.on_device:
            tensors = [_PackStates(neuron_axis)(tensor) for tensor in tensors]
        self.neuron_axis = neuron_axis
        # one input as a tensor, not a list of one (Keras warns of the structure otherwise)
        inputs = functional.inputs[0] if len(functional.inputs) == 1 else functional.inputs
        self.model = keras.Model(inputs, tensors)
        self.counters = [StateCounter(name, memory_limit=memory_limit) for _, _, name, _ in plan]
        self._functional, self._tensors, self._fit_view = functional, tensors, None

    def fit_view(self):
        """A Functional model sharing every layer of the reader's model that
        returns ``(the model's outputs, [the probed tensors])`` (made once).

        Called like the model, it computes the model's outputs exactly as the
        model does, and the probed tensors on the way (what the callback's
        :class:`~tensorstate_callbacks.integrations.keras.fit_pass.ValidationPass`
        counts inside ``fit``'s validation).

        Example:
            >>> import numpy as np
            >>> inputs = keras.Input((3,))
            >>> net = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
            >>> view = StateReader(net, attach_to=["fc"]).fit_view()
            >>> outputs, states = view(np.ones((4, 3), "float32"))
            >>> keras.ops.convert_to_numpy(outputs).shape, len(states)
            ((4, 2), 1)
        """
        if self._fit_view is None:
            functional = self._functional
            self._fit_view = keras.Model(functional.input, (functional.output, self._tensors))
        return self._fit_view

    def add(self, outputs, labels=None, *, threads: int | None = None) -> None:
        """Count probed tensors already computed (one batch), adding to what was counted.

        A counter that cannot count its tensor (a full disk while spilling, out
        of memory) is left incomplete (see ``StateCounter.incomplete``; its
        reads raise) and the others count on: training never stops for it.

        Args:
            outputs: one tensor (or array) per counter, in the counters' order:
                what :attr:`model` returns for a batch.
            labels: one integer per sample of the batch, or None.
            threads: the most threads counting one tensor uses (default: every
                usable core; one beside a model computing on every core).

        Example:
            >>> import numpy as np
            >>> inputs = keras.Input((3,))
            >>> reader = StateReader(keras.Model(inputs, keras.layers.Dense(2)(inputs)),
            ...                      attach_to=["Dense"])
            >>> reader.add([np.array([[1.0, -1.0], [1.0, 2.0]])]); reader.counters[0].state_count
            2
        """
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        for counter, values, num_neurons in zip(self.counters, outputs, self.num_neurons,
                                                strict=True):
            values = to_host(values)
            try:
                if self.on_device:
                    counter.add_packed(values, num_neurons, labels=labels, threads=threads)
                else:
                    counter.add(values, self.neuron_axis, labels=labels, threads=threads)
            except (IncompleteCountsError, MemoryError):
                pass  # the counter says so on every read (see StateCounter.incomplete)

    def update(self, batch, labels=None) -> None:
        """Count the states of one batch of inputs (adding to what was counted).

        Args:
            batch: one batch of model inputs (an array, or what the model takes).
            labels: one integer per sample of the batch, or None (see
                ``StateCounter.add``).

        Example:
            >>> import numpy as np
            >>> inputs = keras.Input((3,))
            >>> reader = StateReader(keras.Model(inputs, keras.layers.Dense(2)(inputs)),
            ...                      attach_to=["Dense"])
            >>> reader.update(np.ones((4, 3), "float32")); reader.update(np.ones((2, 3), "float32"))
            >>> reader.counters[0].state_count
            6
        """
        self.add(self.model.predict_on_batch(batch), labels)

    def count(self, data, batch_size: int | None = None, labels=None) -> None:
        """Reset, then count the states of every sample of ``data``.

        Args:
            data: an array (or dict of arrays), cut into ``batch_size``
                batches, or a re-iterable of batches (``tf.data.Dataset``,
                ``keras.utils.PyDataset``, a DataLoader) whose items are ``x``
                or ``(x, y, ...)``.
            batch_size: the batch size for array data (default 32).
            labels: with array data, one integer per sample of ``data`` (cut
                into the same batches), or None.

        Raises:
            TypeError: ``data`` is a one-shot iterator or generator.

        Example:
            >>> import numpy as np
            >>> inputs = keras.Input((3,))
            >>> reader = StateReader(keras.Model(inputs, keras.layers.Dense(2)(inputs)),
            ...                      attach_to=["Dense"])
            >>> for _ in range(2):                      # every epoch starts afresh
            ...     reader.count(np.ones((10, 3), "float32"), batch_size=4)
            >>> reader.counters[0].state_count
            10
        """
        self.reset()
        if labels is None:
            for batch in batches(data, batch_size):
                self.update(batch)
            return
        start = 0
        for batch in batches(data, batch_size):
            size = len(keras.tree.flatten(batch)[0])
            self.update(batch, labels[start:start + size])
            start += size

    def reset(self) -> None:
        """Forget every state counted so far.

        Example:
            >>> import numpy as np
            >>> inputs = keras.Input((3,))
            >>> reader = StateReader(keras.Model(inputs, keras.layers.Dense(2)(inputs)),
            ...                      attach_to=["Dense"])
            >>> reader.update(np.ones((4, 3), "float32")); reader.reset()
            >>> reader.counters[0].state_count
            0
        """
        for counter in self.counters:
            counter.reset_states()


def batches(data, batch_size: int | None = None):
    """An iterator over the input batches of ``data``.

    Args:
        data: an array, or a list, tuple or dict of arrays (a multi-input
            model's inputs; sliced into batches together), or a re-iterable of
            batches whose items are ``x`` or ``(x, y, ...)`` (only ``x`` is kept).
        batch_size: the batch size for array data (default 32).

    Returns:
        An iterator over the batches' inputs.

    Raises:
        TypeError: at once, for data that cannot be read again every epoch
            (a one-shot iterator or generator).

    Example:
        >>> import numpy as np
        >>> [batch.shape for batch in batches(np.zeros((5, 2)), batch_size=2)]
        [(2, 2), (2, 2), (1, 2)]
        >>> [[a.shape, b.shape] for a, b in batches([np.zeros((3, 2)), np.ones((3, 4))], 2)]
        [[(2, 2), (2, 4)], [(1, 2), (1, 4)]]
        >>> [x for x in batches([(1, "label"), (2, "label")])]
        [1, 2]
    """
    if _is_arrays(data):
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


def to_host(values):
    """A backend tensor as a NumPy array; a TensorFlow CPU tensor's own buffer,
    not a copy (``keras.ops.convert_to_numpy`` copies it)."""
    if keras.backend.backend() == "tensorflow":
        return np.asarray(values)
    return keras.ops.convert_to_numpy(values)


def _is_arrays(data) -> bool:
    """An array, or a list/tuple/dict (nested) of arrays: sliced along axis 0."""
    if hasattr(data, "shape"):
        return True
    if not isinstance(data, (dict, list, tuple)) or not data:
        return False
    return all(hasattr(leaf, "shape") for leaf in keras.tree.flatten(data))


def _slices(data, size: int):
    total = len(keras.tree.flatten(data)[0])
    for start in range(0, total, size):
        yield keras.tree.map_structure(lambda array, start=start: array[start:start + size], data)
