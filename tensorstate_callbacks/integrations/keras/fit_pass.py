"""Counting states inside ``fit``'s own validation pass, and handing the values to its logs.

``fit`` validates by calling ``evaluate``; the callback's
:class:`ValidationPass` is in place from that pass's ``on_test_begin`` to its
``on_test_end``.  It counts the probed tensors as they leave the model's
compiled test step
(:class:`~tensorstate_callbacks.integrations.keras.step_capture.StepCapture`),
and changes one more thing Keras lets a user override, on the model object
only and only for the pass: ``Model.get_metrics_result``.  ``evaluate`` takes
its final logs from it after the last batch, before any callback's
``on_test_end``.  Wrapped, it adds the state-space values (``finish``), which
``fit`` renames ``val_<key>`` and gives every callback's ``on_epoch_end``,
whatever their order.  Inside a step it adds placeholders (NaN) under the same
keys: ``evaluate`` uses the final results only when their keys match those of
the steps' logs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

from .reader import StateReader
from .step_capture import StepCapture, set_attribute, unset_attribute

__all__ = ["ValidationPass"]

_NAN = math.nan


class ValidationPass(StepCapture):
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
        >>> import keras
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
        ...     def on_test_batch_begin(self, batch, logs=None): validation.announce()
        ...     def on_test_end(self, logs=None): validation.end()
        >>> logs = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True,
        ...                       callbacks=[During()])
        >>> sorted(logs), logs["states"]
        (['loss', 'states'], 10.0)
    """

    def __init__(self, model, reader: StateReader, *, capture: bool, labels: bool,
                 keys: Sequence[str], finish: Callable[[dict], dict],
                 warn: Callable[[str], None] = warnings.warn):
        super().__init__(model, reader, "test", capture=capture, labels=labels, warn=warn)
        self.keys = list(keys)
        self.finish = finish
        self._finished: dict | None = None
        self._metrics_result = None

    def begin(self) -> None:
        """Put the wrapped step, test function and metrics results in place (``on_test_begin``)."""
        self._finished = None
        if self.capture:
            self.reader.reset()
        self.install()
        if self.keys and self.broken is None:
            self._metrics_result = self.model.get_metrics_result
            set_attribute(self.model, "get_metrics_result", self._get_metrics_result)

    def end(self) -> None:
        """Give the model back its own step, test function and metrics results (``on_test_end``).

        Raises:
            Exception: what counting the last batch raised.
        """
        self.uninstall()

    def _restore(self) -> None:
        super()._restore()
        unset_attribute(self.model, "get_metrics_result")

    def _get_metrics_result(self) -> dict:
        results = self._metrics_result()
        if self.in_step:
            results.update(dict.fromkeys(self.keys, _NAN))
        else:
            if self._finished is None:
                self._wait_for_counting()
                self._finished = self.finish(dict(results))
            results.update(self._finished)
        return results
