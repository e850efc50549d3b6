"""The Keras ``StateSpaceCallback``: layer efficiency and aIQ after every epoch.

Why the validation data is passed to the callback: a Keras callback sees only
the model and the ``logs`` dict.  ``fit()`` keeps its validation data to
itself and its evaluation never exposes intermediate activations, so the
callback runs its own forward pass over the data you hand it, through a
multi-output model that shares the trained layers and returns the probed
tensors (:class:`~tensorstate_callbacks.integrations.keras.reader.StateReader`).
That pass runs in inference mode and never touches weights, outputs or the
training loop.

The scalars use the same tags as the Lightning callback
(:meth:`~tensorstate_callbacks.reporting.report.EpochReport.scalars`):
``state_space/efficiency/<probe>``, ``state_space/unique_states/<probe>``,
``state_space/states/<probe>``, ``state_space/network_efficiency`` and, with
an accuracy, ``state_space/accuracy`` and ``state_space/aIQ``, where
``<probe>`` is ``<layer name>_states``.  They go to ``log_dir/validation`` at
step = epoch, beside what Keras' own ``TensorBoard(log_dir)`` callback writes
there, with the custom-scalars layout, histograms, heat map and hparams of
:mod:`~tensorstate_callbacks.reporting.tensorboard`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np

from ...reporting import tensorboard
from ...reporting.report import EpochReport
from .._accuracy import AccuracyReader
from .._probe import ProbeHealth, labels_of, snapshot
from .._selection import check_method
from .._validation import (
    check_accuracy_key,
    check_beta,
    check_estimator,
    check_log_dir,
    check_positive_int,
    names,
)
from .probes import find_layers
from .reader import StateReader, _is_arrays, batches

__all__ = ["StateSpaceCallback"]

_LAYER_NAMES = "layer class names or layer names"


def _inputs_of(validation_data):
    """The inputs ``x`` of ``validation_data``: an array, a dataset, or ``(x, y[, w])``."""
    if validation_data is None:
        raise ValueError("validation_data is required: pass the data fit() validates on, "
                         "e.g. StateSpaceCallback((x_valid, y_valid))")
    if isinstance(validation_data, (tuple, list)):
        if not 1 <= len(validation_data) <= 3:
            raise ValueError("validation_data must be x, (x, y) or (x, y, sample_weight); got a "
                             f"{type(validation_data).__name__} of {len(validation_data)} items")
        return validation_data[0]
    return validation_data


def _labels_of(validation_data, inputs):
    """One integer per validation sample from ``(x, y, ...)`` with array data
    (class indices or one-hot rows), else None."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) < 2:
        return None
    labels = labels_of(validation_data)
    if labels is None or not _is_arrays(inputs):
        return None
    return labels if len(labels) == len(keras.tree.flatten(inputs)[0]) else None


class StateSpaceCallback(keras.callbacks.Callback):
    """Measure the state space of chosen layers on validation data after every epoch.

    Args:
        validation_data: the data to measure on: ``x``, ``(x, y)`` or
            ``(x, y, sample_weight)``, or a ``tf.data.Dataset`` /
            ``keras.utils.PyDataset``; usually the ``validation_data`` of
            ``fit()``.
        attach_to, exclude, method: which layers to probe, as in
            :func:`~tensorstate_callbacks.keras.build_efficiency_model`.
        log_dir: TensorBoard directory; the callback writes to ``log_dir/validation``.
        accuracy_key: the ``logs`` entry holding the validation accuracy for aIQ.
            When it is missing the efficiencies are still logged and aIQ is
            skipped (with one warning).
        beta: the aIQ weight of accuracy (``> 0``).
        batch_size: batch size of the measuring pass over array data (``None``: 32,
            Keras' default; datasets keep their own batches).
        estimator: the entropy estimator of the efficiencies: ``"plugin"``
            (TensorState's), ``"miller_madow"`` or ``"chao_shen"``.
        labels: with array data ``(x, y)``, label the states by ``y`` (class
            indices or one-hot rows) and log
            ``state_space/mutual_information/<probe>`` (off by default: counting
            (state, label) pairs costs more than counting states).
        drift: also log ``state_space/drift/<probe>``, the Jensen-Shannon
            divergence from the previous epoch (keeps a copy of the counts).
        log_histograms, log_images: also write per-probe histograms of
            log2(state occurrences) and a heat map of efficiency over epochs.

    ``history`` holds one
    :class:`~tensorstate_callbacks.reporting.report.EpochReport` per epoch.

    Raises:
        ValueError: no validation data (or none in it), an empty ``attach_to``,
            a bad ``method``, ``beta`` or ``batch_size``; at the start of
            training, layers that ``attach_to`` does not find, validation
            inputs of the wrong shape, or a ``log_dir`` that cannot be written.
        TypeError: validation data that cannot be read again every epoch (a
            one-shot iterator or generator).
        ArgumentTypeError: ``attach_to``, ``exclude``, ``accuracy_key`` or
            ``log_dir`` of the wrong type.

    Example:
        >>> import tempfile
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(inputs))
        >>> model.compile(loss="mse", optimizer="sgd")
        >>> x, y = np.random.rand(32, 4).astype("float32"), np.zeros((32, 3), "float32")
        >>> callback = StateSpaceCallback((x, y), attach_to=["Dense"],
        ...                               log_dir=tempfile.mkdtemp(), accuracy_key=None,
        ...                               log_images=False)
        >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
        >>> [(report.epoch, report.layers[0].name, report.layers[0].states)
        ...  for report in callback.history]
        [(0, 'fc_states', 32), (1, 'fc_states', 32)]
    """

    def __init__(self, validation_data, attach_to=("Conv2D",), exclude=(), method="after",
                 log_dir="logs", accuracy_key="val_accuracy", beta=2, batch_size=None,
                 log_histograms=True, log_images=True, estimator="plugin", labels=False,
                 drift=False):
        super().__init__()
        self.validation_inputs = _inputs_of(validation_data)
        self.validation_labels = _labels_of(validation_data, self.validation_inputs) \
            if labels else None
        self.drift = bool(drift)
        if isinstance(self.validation_inputs, np.ndarray) and len(self.validation_inputs) == 0:
            raise ValueError("validation_data holds no samples")
        batches(self.validation_inputs)  # TypeError now for data that cannot be re-read
        self.attach_to = names(attach_to, "attach_to", _LAYER_NAMES)
        if not self.attach_to:
            raise ValueError("attach_to is empty: name at least one layer class or layer name")
        self.exclude = names(exclude, "exclude", _LAYER_NAMES)
        check_method(method)
        self.method = method
        self.log_dir = check_log_dir(log_dir)
        self.accuracy_key = check_accuracy_key(accuracy_key)
        self.beta = check_beta(beta)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.estimator = check_estimator(estimator)
        self._previous: dict = {}  # each counter's counts at the last measurement (drift)
        self.log_histograms = bool(log_histograms)
        self.log_images = bool(log_images)
        self.history: list[EpochReport] = []
        self.reader: StateReader | None = None
        self._probed_model = None
        self._writer = None
        self._accuracy_reader = AccuracyReader(
            self.accuracy_key, "the logs of this epoch",
            "Pass validation_data to fit() with metrics=['accuracy'], or set accuracy_key.")
        self._health = ProbeHealth()

    @property
    def validation_dir(self) -> Path:
        """Where the event files go: ``log_dir/validation``.

        Example:
            >>> x = np.zeros((8, 4), "float32")
            >>> StateSpaceCallback(x, log_dir="logs").validation_dir.as_posix()
            'logs/validation'
        """
        return self.log_dir / "validation"

    def on_train_begin(self, logs=None):
        """Build the StateReader over the model being trained (once per model)
        and check the validation inputs and the log directory."""
        if isinstance(self.model, keras.Sequential) and not self.model.built:
            # built by fit() on its first batch: check the choice of layers now,
            # build the reader at the first epoch's end
            find_layers(self.model, self.attach_to, self.exclude)
        else:
            self._ensure_reader()
        try:
            self.validation_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot write TensorBoard logs to {str(self.validation_dir)!r} "
                             f"({error.strerror or error}); pass a writable log_dir") from error

    def _ensure_reader(self) -> StateReader:
        """The StateReader over the model being trained (made once per model)."""
        if self.reader is None or self._probed_model is not self.model:
            self.reader = StateReader(self.model, attach_to=self.attach_to, exclude=self.exclude,
                                      method=self.method)
            self._probed_model = self.model
            self._check_input_shape()
        return self.reader

    def _check_input_shape(self) -> None:
        """Validation arrays must have the sample shapes of the model's inputs
        (one array, or a list/tuple of arrays for a multi-input model)."""
        x, inputs = self.validation_inputs, self.reader.model.inputs
        arrays = [x] if isinstance(x, np.ndarray) else list(x) \
            if isinstance(x, (list, tuple)) and all(isinstance(a, np.ndarray) for a in x) else None
        if arrays is None:
            return
        if len(arrays) != len(inputs):
            raise ValueError(f"validation inputs hold {len(arrays)} array(s), but the model "
                             f"takes {len(inputs)} input(s); pass them as fit()'s inputs")
        for array, tensor in zip(arrays, inputs, strict=True):
            expected = tuple(tensor.shape[1:])
            if len(expected) != array.ndim - 1 or any(
                want not in (None, got) for want, got in zip(expected, array.shape[1:], strict=True)
            ):
                raise ValueError(f"validation inputs have sample shape {array.shape[1:]}, but the "
                                 f"model expects {expected}; reshape them as fit()'s inputs")

    def on_epoch_end(self, epoch, logs=None):
        """Measure (:meth:`measure`), keep the report in ``history`` and write it."""
        report = self.measure(epoch, self._accuracy(logs or {}))
        warn = lambda message: warnings.warn(message, stacklevel=3)  # noqa: E731
        self._health.check({counter.name: counter for counter in self.reader.counters}, warn)
        self._health.check_report(report, warn)
        if self.drift:
            self._previous = {counter.name: snapshot(counter)
                              for counter in self.reader.counters if counter.state_count}
        self.history.append(report)
        self._write(report)
        self.reader.reset()

    def measure(self, epoch: int, accuracy: float | None) -> EpochReport:
        """Count the chosen layers' states on the validation data.

        Called by :meth:`on_epoch_end`; call it yourself to measure outside
        ``fit()`` (after training has begun, so that the callback has a model).

        Args:
            epoch: the epoch (step) of the report.
            accuracy: the validation accuracy in [0, 1], or None (then no aIQ).

        Returns:
            The epoch's report (not added to ``history``, not written).

        Raises:
            RuntimeError: the callback has no model yet.

        Example:
            >>> import tempfile
            >>> inputs = keras.Input((2,))
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
            >>> callback = StateSpaceCallback(np.ones((6, 2), "float32"), attach_to=["Dense"],
            ...                               log_dir=tempfile.mkdtemp())
            >>> callback.measure(0, accuracy=None)
            Traceback (most recent call last):
            ...
            RuntimeError: the callback has no model yet: use it in model.fit(callbacks=...)
            >>> callback.set_model(model); callback.on_train_begin()   # as fit() does
            >>> report = callback.measure(0, accuracy=0.5)
            >>> report.layers[0].name, report.layers[0].states, report.accuracy
            ('fc_states', 6, 0.5)
        """
        if self.model is None:
            raise RuntimeError("the callback has no model yet: use it in model.fit(callbacks=...)")
        self._ensure_reader().count(self.validation_inputs, self.batch_size,
                                    self.validation_labels)
        counters = {counter.name: counter for counter in self.reader.counters}
        return EpochReport.from_counters(epoch, counters, accuracy, self.beta,
                                         estimator=self.estimator, extras=True,
                                         previous=self._previous)

    def _accuracy(self, logs) -> float | None:
        return self._accuracy_reader.read(logs, lambda message: warnings.warn(message,
                                                                              stacklevel=4))

    def _write(self, report: EpochReport) -> None:
        if self._writer is None:
            self._writer = tensorboard.open_writer(self.validation_dir)
            tensorboard.write_layout(self._writer, [layer.name for layer in report.layers])
            tensorboard.write_hparams(self._writer, self.hparams())
        tensorboard.write_scalars(self._writer, report)
        if self.log_histograms:
            counts = {counter.name: counter.counts() for counter in self.reader.counters
                      if counter.state_count}
            tensorboard.write_state_histograms(self._writer, counts, report.epoch)
        if self.log_images:
            tensorboard.write_efficiency_image(self._writer, self.history)
        self._writer.flush()

    def hparams(self) -> dict:
        """The settings registered with TensorBoard's HParams dashboard.

        Returns:
            ``attach_to``, ``exclude``, ``method``, ``beta``, ``batch_size``
            (0 for the default) and the model's name.
        """
        return {"attach_to": ",".join(self.attach_to), "exclude": ",".join(self.exclude),
                "method": self.method, "beta": self.beta, "batch_size": self.batch_size or 0,
                "model": self.model.name}

    def on_train_end(self, logs=None):
        """Close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
