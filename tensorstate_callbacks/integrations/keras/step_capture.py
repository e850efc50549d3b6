"""Counting the probed tensors of a model's own compiled train or test step.

``fit`` trains by calling ``model.train_function`` once per batch, and
validates through ``evaluate``, which calls ``model.test_function``; both are
made by ``Model.make_train_function`` / ``make_test_function`` from
``Model.train_step`` / ``test_step``, the documented way to customise them.
:class:`StepCapture` changes, on the model object only and only while it is
installed:

* ``<kind>_step``: the wrapped step runs the step it wraps (Keras' own, or the
  user's override) while the model's forward pass goes through a Functional
  view that shares every layer and also returns the probed tensors
  (:meth:`~tensorstate_callbacks.integrations.keras.reader.StateReader.fit_view`):
  outputs, loss, gradients and metrics are computed exactly as before, and the
  step returns ``(logs, {"states": [...], "y": y})``.
* ``<kind>_function``: the wrapped step is compiled once per model
  (``tf.function`` on TensorFlow, ``jax.jit`` on JAX, eager on torch), so the
  probed tensors leave the compiled step as extra outputs.  The installed
  function hands them to a counting thread (:meth:`StateReader.add`, one batch
  at a time, in order: batch k is counted while the model computes batch
  k + 1) and the logs alone back to ``fit``.

Nothing is left behind when a step fails: an exception inside the installed
function gives the model its own step and function back before it propagates.
An exception elsewhere (reading the data, another callback) can end ``fit``
before the callback uninstalls; then the next call of the installed function
finds no batch announced by the callback (:meth:`StepCapture.announce`, from
its ``on_<kind>_batch_begin``), gives the model its own step and function back
and runs Keras' own; the callback's next ``fit`` releases it first
(:meth:`StepCapture.release`).  (An exception raised by a callback listed
after this one, in the ``on_<kind>_batch_begin`` of a batch this one
announced, leaves that one announcement: the next call still counts, the one
after it releases.)

A step that runs the model's forward pass more than once (or never) cannot
say which states are the batch's: it runs as written, hands over no states,
and the capture warns once and gives the model its own step and function back
(:attr:`StepCapture.broken` says why; it installs nothing after that).

Counting from extra outputs needs one batch per compiled call
(``steps_per_execution == 1``) on one replica; :func:`can_capture` says why not.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import keras

from .._probe import labels_of
from .reader import StateReader, to_host

__all__ = ["StepCapture", "can_capture"]


def can_capture(model) -> str | None:
    """Why the probed tensors cannot leave ``model``'s compiled steps, or None when they can.

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


def set_attribute(model, name: str, value) -> None:
    """An instance attribute of ``model``, out of Keras' tracking."""
    object.__setattr__(model, name, value)


def unset_attribute(model, name: str) -> None:
    """Remove an instance attribute :func:`set_attribute` made (the class's comes back)."""
    if name in vars(model):
        object.__delattr__(model, name)


class StepCapture:
    """Counts a model's probed tensors from inside its compiled ``kind`` step while installed.

    Args:
        model: the model being fitted.
        reader: the :class:`StateReader` over ``model`` whose counters count.
        kind: ``"train"`` or ``"test"``.
        capture: count the probed tensors (False: run the step as it is, only
            noting when a step runs: see :attr:`in_step`).
        labels: also take each batch's ``y`` as labels (class indices or
            one-hot rows) for mutual information.
        warn: reports a problem (once per kind).

    Example:
        >>> import numpy as np
        >>> inputs = keras.Input((3,))
        >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        >>> model.compile(loss="mse", optimizer="sgd")
        >>> capture = StepCapture(model, StateReader(model, attach_to=["hidden"]), "train")
        >>> class During(keras.callbacks.Callback):
        ...     def on_train_batch_begin(self, batch, logs=None):
        ...         if batch == 1: capture.install()
        ...         capture.announce()
        ...     def on_epoch_end(self, epoch, logs=None): capture.uninstall()
        >>> x, y = np.ones((10, 3), "float32"), np.zeros((10, 1), "float32")
        >>> _ = model.fit(x, y, batch_size=4, verbose=0, callbacks=[During()])
        >>> capture.reader.counters[0].state_count   # batches 1 and 2: 4 + 2 samples
        6
    """

    def __init__(self, model, reader: StateReader, kind: str, *, capture: bool = True,
                 labels: bool = False, warn: Callable[[str], None] = warnings.warn):
        self.model = model
        self.reader = reader
        self.kind = kind
        self.capture = capture
        self.labels = labels
        self.warn = warn
        self._step_name, self._function_name = f"{kind}_step", f"{kind}_function"
        self._jax = keras.backend.backend() == "jax"
        self._compiled = None  # the wrapped step, compiled (once)
        self._wrapped_step = None  # the step it wraps
        self._saved_function = None  # Keras' function, put back by uninstall()
        self._installed = False
        self._announced = False
        self.broken: str | None = None  # why the step cannot hand its states over
        self.in_step = False  # True while the wrapped step runs (traces, when compiled)
        self._labels_warned = False
        self._counting: ThreadPoolExecutor | None = None
        self._counted: Future | None = None  # the batch being counted

    def install(self) -> None:
        """Put the wrapped step and function in place (compiling them the first
        time); nothing once the step proved unable to hand its states over."""
        if self.broken is not None:
            return
        model = self.model
        if self._compiled is None:
            self._wrapped_step = getattr(model, self._step_name)
            saved = getattr(model, self._function_name)
            set_attribute(model, self._step_name, self._step)
            getattr(model, f"make_{self._function_name}")(force=True)
            self._compiled = getattr(model, self._function_name)
            setattr(model, self._function_name, saved)
        if self.capture:
            self._counting = ThreadPoolExecutor(1, thread_name_prefix="tensorstate-count")
        self._saved_function = getattr(model, self._function_name)
        set_attribute(model, self._step_name, self._step)  # torch's function looks it up per batch
        set_attribute(model, self._function_name, self._function)
        self._installed, self._announced = True, False

    def announce(self) -> None:
        """The callback's ``on_<kind>_batch_begin``: the next call of the function is ours."""
        self._announced = True

    def uninstall(self) -> None:
        """Give the model back its own step and function; every batch handed over is counted.

        Raises:
            Exception: what counting the last batch raised.
        """
        if not self._installed:
            return
        self._restore()
        try:
            self._wait_for_counting()
        finally:
            self._stop_counting()

    def _restore(self) -> None:
        """The model's own step and function again (what :meth:`install` changed)."""
        model = self.model
        unset_attribute(model, self._step_name)
        set_attribute(model, self._function_name, self._saved_function)
        self._installed = False

    def release(self) -> None:
        """After a failure: the model's own step and function again (if still
        installed), the batch being counted dropped."""
        if self._installed:
            self._restore()
        self._counted = None
        self._stop_counting()

    def _stop_counting(self) -> None:
        if self._counting is not None:
            self._counting.shutdown()
            self._counting = None

    def _wait_for_counting(self) -> None:
        """Every batch handed to the counting thread is counted (its error raised here)."""
        counted, self._counted = self._counted, None
        if counted is not None:
            counted.result()

    def _step(self, *args):
        """The wrapped step: ``(data)``, or ``(state, data)`` on JAX."""
        self.in_step = True
        try:
            if not self.capture:
                return self._wrapped_step(*args)
            result, states = self._forward_with_states(*args)
        finally:
            self.in_step = False
        extras = {} if states is None else {"states": states}
        if self.labels:
            _, y, _ = keras.utils.unpack_x_y_sample_weight(args[-1])
            if y is not None:
                extras["y"] = y
        if self._jax:
            logs, state = result
            return (logs, extras), state
        return result, extras

    def _forward_with_states(self, *args):
        """Run the wrapped step with the model's forward pass through the fit view:
        its result, and the probed tensors (None, the reason in ``broken``, when
        the step ran the forward pass more than once or never)."""
        view, captured = self.reader.fit_view(), []

        def call(inputs, training=None, mask=None, **kwargs):
            outputs, states = view.call(inputs, training=training, mask=mask)
            captured.append(tuple(states))  # a tuple: tf.data reads a list as one tensor
            return outputs

        set_attribute(self.model, "call", call)
        try:
            result = self._wrapped_step(*args)
        finally:
            unset_attribute(self.model, "call")
        if len(captured) != 1:
            self.broken = (f"the model's {self._step_name} ran its forward pass "
                           f"{len(captured)} times, so its states cannot be told apart")
            return result, None
        return result, captured[0]

    def _function(self, *args):
        """What ``fit`` or ``evaluate`` calls per batch: the compiled step, then
        counting its extra outputs."""
        if not self._announced:  # left behind by a fit that failed: Keras' own from now on
            self.release()
            return getattr(self.model, self._function_name)(*args)
        self._announced = False
        try:
            outputs = self._compiled(*args)
        except BaseException:
            self.release()
            raise
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
        if "states" not in extras:  # the step ran fine, but hands over no states
            self.release()
            self.warn(f"cannot count inside fit's {self.kind} steps ({self.broken}); nothing "
                      "is measured there")
            return
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
