"""Counting states inside ``fit``'s own validation pass, and handing the values to its logs.

``fit`` validates by calling ``evaluate``; the callback's
:class:`ValidationPass` is in place from that pass's ``on_test_begin`` to its
``on_test_end``, and changes, on the model object only and only for the pass,
three things Keras lets a user override:

* ``Model.test_step`` (the documented way to customise ``evaluate``).  The
  wrapped step runs the step it wraps (Keras' own, or the user's override)
  while the model's forward pass goes through a Functional view that shares
  every layer and also returns the probed tensors
  (:meth:`~tensorstate_callbacks.integrations.keras.reader.StateReader.fit_view`):
  the model's outputs, loss and metrics are computed exactly as before, and
  the step returns ``(logs, {"states": [...], "y": y})``.
* ``Model.test_function``: the wrapped step is compiled once per model by
  ``Model.make_test_function`` (``tf.function`` on TensorFlow, ``jax.jit`` on
  JAX, eager on torch), so the probed tensors leave the compiled step as extra
  outputs.  ``evaluate`` calls it through a Python function that hands them to
  a counting thread (:meth:`StateReader.add`, one batch at a time, in order:
  batch k is counted while the model computes batch k + 1) and the logs alone
  back to ``evaluate``.
* ``Model.get_metrics_result``: ``evaluate`` takes its final logs from it after
  the last batch, before any callback's ``on_test_end``.  Wrapped, it adds the
  state-space values (``finish``), which ``fit`` renames ``val_<key>`` and
  gives every callback's ``on_epoch_end``, whatever their order.  Inside a step
  it adds placeholders (NaN) under the same keys: ``evaluate`` uses the final
  results only when their keys match those of the steps' logs.

Counting from extra outputs needs one batch per compiled call
(``steps_per_execution == 1``) on one replica; :func:`can_capture` says why not.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import keras

from .._probe import labels_of
from .reader import StateReader, to_host

__all__ = ["ValidationPass", "can_capture"]

_NAN = math.nan


def can_capture(model) -> str | None:
    """Why the probed tensors cannot leave ``model``'s compiled test step, or None when they can.

    Args:
        model: the model being fitted.

    Returns:
        None, or the reason (for a warning).

    Example:
        >>> inputs = keras.Input((2,))
        >>> model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
        >>> model.compile(loss="mse", steps_per_execution=4)
        >>> can_capture(model)
        'steps_per_execution is 4: a compiled step returns the last of its batches only'
    """
    if model.steps_per_execution != 1:
        return (f"steps_per_execution is {model.steps_per_execution}: a compiled step returns "
                "the last of its batches only")
    strategy = getattr(model, "distribute_strategy", None)
    replicas = getattr(strategy, "num_replicas_in_sync", 1)
    if replicas != 1:
        return f"the model runs on {replicas} replicas"
    return None


def _set(model, name: str, value) -> None:
    object.__setattr__(model, name, value)  # an instance attribute, no tracking


def _unset(model, name: str) -> None:
    if name in vars(model):
        object.__delattr__(model, name)


class ValidationPass:
    """Counts a model's probed tensors during ``evaluate`` and adds values to its final logs.

    Args:
        model: the model being fitted.
        reader: the :class:`StateReader` over ``model`` whose counters count.
        capture: count the probed tensors of the pass (False: leave the pass
            alone, only add ``keys``).
        labels: also take each batch's ``y`` as labels (class indices or
            one-hot rows) for mutual information.
        keys: the keys added to ``evaluate``'s logs (``[]``: none).
        finish: called once at the end of the pass with the model's other
            metric results; returns ``{key: value}`` for every key of ``keys``.
        warn: reports a problem (once per kind).

    Example:
        >>> import numpy as np
        >>> inputs = keras.Input((3,))
        >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        >>> model.compile(loss="mse")
        >>> reader = StateReader(model, attach_to=["hidden"])
        >>> validation = ValidationPass(model, reader, capture=True, labels=False,
        ...                             keys=["states"], finish=lambda metrics: {
        ...                                 "states": reader.counters[0].state_count})
        >>> x, y = np.ones((10, 3), "float32"), np.zeros((10, 1), "float32")
        >>> class During(keras.callbacks.Callback):
        ...     def on_test_begin(self, logs=None): validation.begin()
        ...     def on_test_end(self, logs=None): validation.end()
        >>> logs = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True,
        ...                       callbacks=[During()])
        >>> sorted(logs), logs["states"]
        (['loss', 'states'], 10.0)
    """

    def __init__(self, model, reader: StateReader, *, capture: bool, labels: bool,
                 keys: Sequence[str], finish: Callable[[dict], dict],
                 warn: Callable[[str], None] = warnings.warn):
        self.model = model
        self.reader = reader
        self.capture = capture
        self.labels = labels
        self.keys = list(keys)
        self.finish = finish
        self.warn = warn
        self._jax = keras.backend.backend() == "jax"
        self._compiled = None  # the wrapped step, compiled (once)
        self._wrapped_step = None  # the step it wraps
        self._saved_function = None  # Keras' test function, put back after the pass
        self._in_step = False
        self._finished: dict | None = None
        self._labels_warned = False
        self._counting: ThreadPoolExecutor | None = None
        self._counted: Future | None = None  # the batch being counted

    def begin(self) -> None:
        """Put the wrapped step, test function and metrics results in place (``on_test_begin``)."""
        model = self.model
        self._finished = None
        if self.capture:
            self.reader.reset()
            self._counting = ThreadPoolExecutor(1, thread_name_prefix="tensorstate-count")
        if self._compiled is None:
            self._wrapped_step = model.test_step
            saved = model.test_function
            _set(model, "test_step", self._test_step)
            model.make_test_function(force=True)
            self._compiled = model.test_function
            model.test_function = saved
        self._saved_function = model.test_function
        _set(model, "test_step", self._test_step)  # torch's test function looks it up per batch
        _set(model, "test_function", self._test_function)
        if self.keys:
            self._metrics_result = model.get_metrics_result
            _set(model, "get_metrics_result", self._get_metrics_result)

    def end(self) -> None:
        """Give the model back its own step, test function and metrics results (``on_test_end``)."""
        model = self.model
        _unset(model, "test_step")
        _unset(model, "get_metrics_result")
        _set(model, "test_function", self._saved_function)
        try:
            self._wait_for_counting()
        finally:
            if self._counting is not None:
                self._counting.shutdown()
                self._counting = None

    def _wait_for_counting(self) -> None:
        """Every batch handed to the counting thread is counted (its error raised here)."""
        counted, self._counted = self._counted, None
        if counted is not None:
            counted.result()

    def _test_step(self, *args):
        """The wrapped step: ``(data)``, or ``(state, data)`` on JAX."""
        self._in_step = True
        try:
            if not self.capture:
                return self._wrapped_step(*args)
            result, states = self._forward_with_states(*args)
        finally:
            self._in_step = False
        extras = {"states": states}
        if self.labels:
            _, y, _ = keras.utils.unpack_x_y_sample_weight(args[-1])
            if y is not None:
                extras["y"] = y
        if self._jax:
            logs, state = result
            return (logs, extras), state
        return result, extras

    def _forward_with_states(self, *args):
        """Run the wrapped step with the model's forward pass through the fit view."""
        view, captured = self.reader.fit_view(), []

        def call(inputs, training=None, mask=None, **kwargs):
            outputs, states = view.call(inputs, training=training, mask=mask)
            captured.append(tuple(states))  # a tuple: tf.data reads a list as one tensor
            return outputs

        _set(self.model, "call", call)
        try:
            result = self._wrapped_step(*args)
        finally:
            _unset(self.model, "call")
        if len(captured) != 1:
            raise RuntimeError(f"the model's test_step ran its forward pass {len(captured)} "
                               "times; pass validation_data to StateSpaceCallback to measure "
                               "in a loop of its own")
        return result, captured[0]

    def _test_function(self, *args):
        """What ``evaluate`` calls per batch: the compiled step, then counting its extra outputs."""
        outputs = self._compiled(*args)
        if not self.capture:
            return outputs
        if self._jax:
            (logs, extras), state = outputs
            self._count(extras)
            return logs, state
        logs, extras = outputs
        self._count(extras)
        return logs

    def _count(self, extras: dict) -> None:
        labels = None
        if "y" in extras:
            labels = labels_of((None, to_host(extras["y"])))
            if labels is None and not self._labels_warned:
                self._labels_warned = True
                self.warn("labels=True needs y of class indices or one-hot rows; counting "
                          "states without labels (no mutual information)")
        self._wait_for_counting()  # at most one batch waits: its tensors stay alive till then
        # one thread: the model computes the next batch on the other cores meanwhile
        self._counted = self._counting.submit(self.reader.add, extras["states"], labels,
                                              threads=1)

    def _get_metrics_result(self) -> dict:
        results = self._metrics_result()
        if self._in_step:
            results.update(dict.fromkeys(self.keys, _NAN))
        else:
            if self._finished is None:
                self._wait_for_counting()
                self._finished = self.finish(dict(results))
            results.update(self._finished)
        return results
