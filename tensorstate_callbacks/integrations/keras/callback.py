"""The Keras ``StateSpaceCallback``: layer efficiency and aIQ at every validation,
in the logs every callback sees.

Where it measures:

* ``StateSpaceCallback()`` (no data): inside ``fit``'s own validation pass, on
  every epoch ``fit`` validates (``validation_data`` or ``validation_split``,
  following ``validation_freq``), with no second forward pass: the probed
  tensors leave the model's compiled test step as extra outputs
  (:mod:`~tensorstate_callbacks.integrations.keras.fit_pass`).  Labels for
  mutual information (``labels=True``) are the validation ``y`` (class
  indices or one-hot rows).  TensorFlow, torch and JAX backends; with
  ``steps_per_execution > 1`` or several replicas it warns once and measures
  nothing (pass the data to the callback instead).
* ``StateSpaceCallback(data)``: on ``data``, in a loop of its own over a
  multi-output model sharing the trained layers
  (:class:`~tensorstate_callbacks.integrations.keras.reader.StateReader`), in
  inference mode; at the end of ``fit``'s validation when it validates that
  epoch, else at the epoch's end.

What other callbacks see.  At the end of ``fit``'s validation (before any
callback's ``on_epoch_end``) the values join the validation metrics under
Keras' naming of validation metrics, ``val_<tag>``:

* ``val_state_space/network_efficiency``;
* ``val_state_space/efficiency/<probe>`` for every probe;
* ``val_state_space/aIQ``, with an ``accuracy_key``.

``in_logs="all"`` adds every other scalar of the report
(``val_state_space/accuracy``, ``val_state_space/unique_states/<probe>``,
``.../states/``, ``.../coverage/``, ``.../efficiency_ceiling/``,
``.../dead_fraction/``, ``.../always_on_fraction/``, and with ``labels``
``.../mutual_information/``, with ``drift`` ``.../drift/``); ``in_logs="none"``
adds nothing.  The keys are the same at every validation: a value that cannot
be computed (aIQ with an unusable accuracy, drift at the first measurement) is
NaN.  So ``EarlyStopping``, ``ModelCheckpoint``, ``ReduceLROnPlateau``,
``CSVLogger`` and ``History`` can monitor ``val_state_space/aIQ`` wherever they
sit in the callbacks list.  Two cases put the values in the logs at this
callback's own ``on_epoch_end`` (seen by the callbacks after it): an
``accuracy_key`` that is not a validation metric (no ``val_`` prefix), and
data given to the callback on an epoch ``fit`` does not validate.

Training-time view (``train_every_n_steps``, off by default): every N
training steps, the next ``train_window`` training batches are counted as
they leave the model's compiled train step (no second forward pass; the
layers in training mode), and reported at the global step the window closes,
under ``state_space/train/...`` in ``log_dir/train`` (the directory of
Keras' ``TensorBoard`` for training values); no aIQ, not in the logs.

TensorBoard: the tags of the Lightning callback
(:meth:`~tensorstate_callbacks.reporting.report.EpochReport.scalars`,
``<probe>`` = ``<layer name>_states``) in ``log_dir/validation`` at step =
epoch, with ``state_space/epoch``, the custom-scalars layout, histograms,
heat map and hparams of :mod:`~tensorstate_callbacks.reporting.tensorboard`.
Keras' own ``TensorBoard(log_dir)`` writes every key of the logs; sharing our
``log_dir`` it would write the values again (``epoch_state_space/...`` and
``evaluation_state_space/..._vs_iterations``), so during ``fit`` the callback
gives it the logs without the state-space keys: each quantity is one series,
under its ``state_space/`` tag, and Keras' own scalars are untouched.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import keras
import numpy as np

from ...reporting.report import EpochReport
from .._accuracy import AccuracyReader
from .._probe import ProbeHealth, labels_of, snapshot, without_incomplete
from .._selection import check_method
from .._validation import (
    check_accuracy_key,
    check_beta,
    check_estimator,
    check_log_dir,
    check_positive_int,
    names,
)
from . import keras_tensorboard
from .fit_pass import ValidationPass
from .probes import find_layers
from .reader import StateReader, _is_arrays, batches
from .step_capture import StepCapture, can_capture
from .training_view import TrainingWindows
from .writers import RunWriters

__all__ = ["IN_LOGS", "StateSpaceCallback"]

_LAYER_NAMES = "layer class names or layer names"
IN_LOGS = ("efficiency", "all", "none")
"""What ``in_logs`` puts in the logs (see the module's docstring)."""
_ALL_PER_PROBE = ("efficiency", "unique_states", "states", "coverage", "efficiency_ceiling",
                  "dead_fraction", "always_on_fraction")


def _inputs_of(validation_data):
    """The inputs ``x`` of ``validation_data``: an array, a dataset, or ``(x, y[, w])``."""
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


def _check_in_logs(in_logs) -> str:
    if in_logs not in IN_LOGS:
        raise ValueError(f"in_logs must be one of {IN_LOGS}, got {in_logs!r}")
    return in_logs


class StateSpaceCallback(keras.callbacks.Callback):
    """Measure the state space of chosen layers at every validation of ``fit``.

    Args:
        validation_data: None (the default) to measure inside ``fit``'s own
            validation pass; or data to measure on, in a loop of the callback's
            own: ``x``, ``(x, y)`` or ``(x, y, sample_weight)``, or a
            ``tf.data.Dataset`` / ``keras.utils.PyDataset``.
        attach_to, exclude, method: which layers to probe, as in
            :func:`~tensorstate_callbacks.keras.build_efficiency_model`.
        log_dir: TensorBoard directory; the callback writes to ``log_dir/validation``.
        accuracy_key: the logs entry holding the validation accuracy for aIQ.
            When it is missing, NaN or outside [0, 1] the efficiencies are
            still logged and aIQ is skipped (NaN in the logs, one warning).
        beta: the aIQ weight of accuracy (``> 0``).
        batch_size: batch size of the callback's own loop over array data
            (``None``: 32, Keras' default; datasets keep their own batches).
        estimator: the entropy estimator of the efficiencies: ``"plugin"``
            (TensorState's), ``"miller_madow"`` or ``"chao_shen"``.
        labels: label the states by the validation ``y`` (class indices or
            one-hot rows) and log ``state_space/mutual_information/<probe>``
            (off by default: counting (state, label) pairs costs more).
        drift: also log ``state_space/drift/<probe>``, the Jensen-Shannon
            divergence from the previous measurement (keeps a copy of the counts).
        log_histograms, log_images: also write per-probe histograms of
            log2(state occurrences) at every measurement, and a heat map of
            efficiency over epochs when training ends.
        in_logs: which values join ``fit``'s logs: ``"efficiency"`` (network
            and per-probe efficiency, aIQ), ``"all"`` (every scalar) or ``"none"``.
        train_every_n_steps: also measure the training batches of a window
            every this many training steps (None: never), logged at the
            global step under ``state_space/train/...`` in ``log_dir/train``
            (no aIQ).  The probes then see the model in training mode (dropout
            active).  TensorFlow and torch backends.  A Sequential model
            without ``keras.Input``, which ``fit`` builds in its first step, is
            measured from the first window after that step.
        train_window: how many training batches one such window counts.

    ``history`` holds one
    :class:`~tensorstate_callbacks.reporting.report.EpochReport` per
    measurement (a validation's ``epoch`` and ``step``: the epoch; a training
    window's ``stage`` is ``"train"``, its ``step`` the global step).

    Raises:
        ValueError: empty validation data, an empty ``attach_to``, a bad
            ``method``, ``beta``, ``batch_size`` or ``in_logs``; at the start
            of training, layers that ``attach_to`` does not find, validation
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
        >>> callback = StateSpaceCallback(attach_to=["Dense"], log_dir=tempfile.mkdtemp(),
        ...                               accuracy_key=None, log_images=False)
        >>> history = model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0,
        ...                     callbacks=[callback])
        >>> [(report.epoch, report.layers[0].name, report.layers[0].states)
        ...  for report in callback.history]
        [(0, 'fc_states', 32), (1, 'fc_states', 32)]
        >>> sorted(key for key in history.history if "state_space" in key)
        ['val_state_space/efficiency/fc_states', 'val_state_space/network_efficiency']
    """

    def __init__(self, validation_data=None, attach_to=("Conv2D",), exclude=(), method="after",
                 log_dir="logs", accuracy_key="val_accuracy", beta=2, batch_size=None,
                 log_histograms=True, log_images=True, estimator="plugin", labels=False,
                 drift=False, in_logs="efficiency", train_every_n_steps=None, train_window=10):
        super().__init__()
        self.validation_inputs = None if validation_data is None else \
            _inputs_of(validation_data)
        self.labels = bool(labels)
        self.validation_labels = _labels_of(validation_data, self.validation_inputs) \
            if labels and validation_data is not None else None
        self.drift = bool(drift)
        if self.validation_inputs is not None:
            if isinstance(self.validation_inputs, np.ndarray) and \
                    len(self.validation_inputs) == 0:
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
        self.in_logs = _check_in_logs(in_logs)
        self.train_every_n_steps = check_positive_int(train_every_n_steps, "train_every_n_steps")
        self.train_window = check_positive_int(train_window, "train_window", allow_none=False)
        self._previous: dict = {}  # each counter's counts at the last measurement (drift)
        self.log_histograms = bool(log_histograms)
        self.log_images = bool(log_images)
        self.history: list[EpochReport] = []
        self.reader: StateReader | None = None
        self._probed_model = None
        self._writers = RunWriters(self.log_dir, self.hparams, self.log_histograms)
        self._windows: TrainingWindows | None = None
        self._windows_pending = False
        self._accuracy_reader = AccuracyReader(
            self.accuracy_key, "the logs of this epoch",
            "Pass validation_data to fit() with metrics=['accuracy'], or set accuracy_key.")
        self._health = ProbeHealth()
        self._pass: ValidationPass | None = None
        self._epoch: int | None = None  # the epoch fit is in (None outside fit's epochs)
        self._report: EpochReport | None = None  # made at the end of this epoch's validation
        self._counted = False  # this epoch's validation counted states, no report made yet
        self._validated = False  # fit validated at least once
        self._warned: set[str] = set()
        self._restore_tensorboard = None

    @property
    def validation_dir(self) -> Path:
        """Where the event files go: ``log_dir/validation``.

        Example:
            >>> StateSpaceCallback(log_dir="logs").validation_dir.as_posix()
            'logs/validation'
        """
        return self._writers.directory("validation")

    def on_train_begin(self, logs=None):
        """Build the StateReader over the model being trained (once per model),
        check the validation inputs and the log directory, and keep Keras'
        ``TensorBoard`` callbacks in ``log_dir`` from writing our values again."""
        if isinstance(self.model, keras.Sequential) and not self.model.built:
            # built by fit() on its first batch: check the choice of layers now,
            # build the reader at the first measurement
            find_layers(self.model, self.attach_to, self.exclude)
        else:
            self._ensure_reader()
        try:
            self.validation_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot write TensorBoard logs to {str(self.validation_dir)!r} "
                             f"({error.strerror or error}); pass a writable log_dir") from error
        self._validated = False
        for capture in (self._pass, self._windows and self._windows.capture):
            if capture is not None:  # still in place after a fit that failed
                capture.release()
        self._pass = None  # made again for every fit: compile() may have changed the model
        if self.in_logs != "none":
            self._restore_tensorboard = keras_tensorboard.hide_state_space(
                keras_tensorboard.fit_callbacks(), self.log_dir)
        self._windows = None
        # an unbuilt Sequential model: made at the first batch, once fit() built it
        self._windows_pending = self.train_every_n_steps is not None
        if self._windows_pending and self.model.built:
            self._windows, self._windows_pending = self._training_windows(), False

    def _training_windows(self) -> TrainingWindows | None:
        """The windows of the training-time view for this ``fit``, or None (one
        warning) where its train step cannot hand the states over."""
        reason = "the JAX backend differentiates the step as one function" \
            if keras.backend.backend() == "jax" else can_capture(self.model)
        if reason is not None:
            self._warn_once("train capture", f"cannot count inside fit's training steps "
                                             f"({reason}); train_every_n_steps measures nothing")
            return None
        reader = StateReader(self.model, attach_to=self.attach_to, exclude=self.exclude,
                             method=self.method)
        capture = StepCapture(self.model, reader, "train",
                              warn=lambda message: self._warn_once(message, message))
        optimizer = getattr(self.model, "optimizer", None)
        step = 0 if optimizer is None else int(keras.ops.convert_to_numpy(optimizer.iterations))
        self._writers.open("train")  # now, not between two training steps
        return TrainingWindows(capture, self.train_every_n_steps, self.train_window,
                               self._report_window, step)

    def on_train_batch_begin(self, batch, logs=None):
        """The training-time view: open, count or close a window of batches."""
        if self._windows_pending and self.model.built:
            self._windows, self._windows_pending = self._training_windows(), False
        if self._windows is not None:
            self._windows.batch_begin()

    def _report_window(self, step: int) -> None:
        """Report the training window that closed at ``step``."""
        counters = {counter.name: counter for counter in self._windows.capture.reader.counters}
        complete = without_incomplete(counters)
        warn = lambda message: warnings.warn(message, stacklevel=4)  # noqa: E731
        self._health.check_complete(counters, complete, warn)
        if not any(counter.state_count for counter in complete.values()):
            return
        report = EpochReport.from_counters(self._epoch or 0, complete, None, self.beta,
                                           estimator=self.estimator, extras=True, step=step,
                                           stage="train")
        self._health.check_report(report, warn)
        self.history.append(report)
        self._writers.write(report, complete)

    def _ensure_reader(self) -> StateReader:
        """The StateReader over the model being trained (made once per model)."""
        if self.reader is None or self._probed_model is not self.model:
            self.reader = StateReader(self.model, attach_to=self.attach_to, exclude=self.exclude,
                                      method=self.method)
            self._probed_model = self.model
            self._pass = None
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

    def on_epoch_begin(self, epoch, logs=None):
        """Note the epoch: a validation from now to its end is ``fit``'s."""
        self._epoch, self._report = epoch, None

    def on_test_begin(self, logs=None):
        """At the start of ``fit``'s validation, put the :class:`ValidationPass` in place."""
        if self._epoch is None:  # an evaluate() outside fit's epochs
            return
        self._validated = True
        validation_pass = self._validation_pass()
        validation_pass.begin()
        self._counted = validation_pass.capture

    def on_test_batch_begin(self, batch, logs=None):
        """Tell the :class:`ValidationPass` that the next test step is ``fit``'s."""
        if self._epoch is not None and self._pass is not None:
            self._pass.announce()

    def on_test_end(self, logs=None):
        """Give the model back its own test step and metrics."""
        if self._epoch is not None and self._pass is not None:
            self._pass.end()

    def _validation_pass(self) -> ValidationPass:
        reader = self._ensure_reader()
        if self._pass is None:
            capture = self.validation_inputs is None
            reason = can_capture(self.model) if capture else None
            if reason is not None:
                self._warn_once("capture", f"cannot count inside fit's validation ({reason}); "
                                           "nothing is measured. Pass the validation data to "
                                           "the callback, StateSpaceCallback((x_val, y_val)), "
                                           "to measure in a loop of its own")
                capture = False
            keys = self.log_keys() if self._publish_at_validation() else []
            self._pass = ValidationPass(self.model, reader, capture=capture,
                                        labels=capture and self.labels, keys=keys,
                                        finish=self._finish_validation,
                                        warn=lambda message: self._warn_once(message, message))
        return self._pass

    def _publish_at_validation(self) -> bool:
        return self.in_logs != "none" and (self.accuracy_key is None
                                           or self.accuracy_key.startswith("val_"))

    def log_keys(self) -> list[str]:
        """The keys the values take in the logs of ``evaluate`` (``fit`` adds ``val_``).

        Returns:
            ``state_space/...`` keys, the same at every measurement.

        Example:
            >>> inputs = keras.Input((2,))
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
            >>> callback = StateSpaceCallback(attach_to=["fc"])
            >>> callback.set_model(model); callback.on_train_begin()
            >>> callback.log_keys()
            ['state_space/efficiency/fc_states', 'state_space/network_efficiency', \
'state_space/aIQ']
        """
        if self.in_logs == "none":
            return []
        probes = [counter.name for counter in self._ensure_reader().counters]
        if self.in_logs == "efficiency":
            keys = [f"state_space/efficiency/{probe}" for probe in probes]
            keys.append("state_space/network_efficiency")
            return keys + (["state_space/aIQ"] if self.accuracy_key else [])
        kinds = _ALL_PER_PROBE + (("mutual_information",) if self.labels else ()) + \
            (("drift",) if self.drift else ())
        keys = [f"state_space/{kind}/{probe}" for probe in probes for kind in kinds]
        keys.append("state_space/network_efficiency")
        return keys + (["state_space/accuracy", "state_space/aIQ"] if self.accuracy_key else [])

    def _finish_validation(self, metrics: dict) -> dict:
        """At the end of fit's validation: the report of this epoch, as ``{key: value}``."""
        logs = {f"val_{key}": value for key, value in metrics.items()}
        self._report = self._measure_safely(self._epoch, self._accuracy(logs))
        return self._values(self._report)

    def _values(self, report: EpochReport | None) -> dict:
        """``{key: value}`` of :meth:`log_keys` (NaN where the report has no value)."""
        scalars = report.scalars() if report is not None else {}
        return {key: scalars.get(key, math.nan) for key in self.log_keys()}

    def _measure_safely(self, epoch: int, accuracy: float | None) -> EpochReport | None:
        """The epoch's report (counting the callback's own data first, if it has
        some), or None (one warning) when nothing could be measured."""
        try:
            if self.validation_inputs is not None:
                self._count_validation_data()
            return self._report_of(epoch, accuracy)
        except ValueError as error:  # e.g. no probe saw a state: never stop training
            self._warn_once(f"measure: {error}", f"nothing measured at epoch {epoch}: {error}")
            return None

    def on_epoch_end(self, epoch, logs=None):
        """Keep this epoch's report in ``history`` and write it.

        The report was made at the end of ``fit``'s validation; without one,
        data given to the callback is measured now and its values join ``logs``.
        """
        logs = {} if logs is None else logs
        if self._windows is not None:
            self._windows.close()  # a window ends with its epoch
        report, counted = self._report, self._counted
        self._report, self._counted, self._epoch = None, False, None
        if report is None and (counted or self.validation_inputs is not None):
            report = self._measure_safely(epoch, self._accuracy(logs))
            if self.in_logs != "none":
                logs.update({f"val_{key}": value for key, value in self._values(report).items()})
        if report is None:
            return
        warn = lambda message: warnings.warn(message, stacklevel=3)  # noqa: E731
        counters = {counter.name: counter for counter in self.reader.counters}
        complete = without_incomplete(counters)
        self._health.check_complete(counters, complete, warn)
        self._health.check(complete, warn)
        self._health.check_report(report, warn)
        if self.drift:
            self._previous = {name: snapshot(counter) for name, counter in complete.items()
                              if counter.state_count}
        self.history.append(report)
        self._writers.write(report, complete)
        self.reader.reset()

    def measure(self, epoch: int, accuracy: float | None) -> EpochReport:
        """Count the chosen layers' states on the callback's ``validation_data``.

        Call it yourself to measure outside ``fit()`` (after training has begun,
        so that the callback has a model).

        Args:
            epoch: the epoch (step) of the report.
            accuracy: the validation accuracy in [0, 1], or None (then no aIQ).

        Returns:
            The epoch's report (not added to ``history``, not written).

        Raises:
            RuntimeError: the callback has no model yet, or no data of its own.

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
        if self.validation_inputs is None:
            raise RuntimeError("measure() needs data: pass validation_data to the callback "
                               "(without it, the callback measures inside fit's validation)")
        self._count_validation_data()
        return self._report_of(epoch, accuracy)

    def _count_validation_data(self) -> None:
        self._ensure_reader().count(self.validation_inputs, self.batch_size,
                                    self.validation_labels)

    def _report_of(self, epoch: int, accuracy: float | None) -> EpochReport:
        counters = without_incomplete({counter.name: counter for counter in self.reader.counters})
        return EpochReport.from_counters(epoch, counters, accuracy, self.beta,
                                         estimator=self.estimator, extras=True,
                                         previous=self._previous)

    def _accuracy(self, logs) -> float | None:
        return self._accuracy_reader.read(logs, lambda message: warnings.warn(message,
                                                                              stacklevel=4))

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"StateSpaceCallback: {message}", stacklevel=4)

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
        """Write the heat map, close the TensorBoard writer; give Keras'
        TensorBoard callbacks their own methods back; warn when ``fit`` never
        validated and nothing was measured."""
        if self._windows is not None:
            self._windows.close()
            self._windows = None
        if self._restore_tensorboard is not None:
            self._restore_tensorboard()
            self._restore_tensorboard = None
        if not self._validated and self.validation_inputs is None:
            self._warn_once("no validation", "fit() never validated, so nothing was measured: "
                                              "pass validation_data (or validation_split) to "
                                              "fit(), or the data to the callback")
        self._writers.close(self.history, image=self.log_images)
