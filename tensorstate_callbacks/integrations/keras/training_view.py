"""The Keras callback's training-time view: windows of training batches counted every N steps.

Every ``every_n_steps`` training steps (counted over the whole training, from
the optimizer's iterations when ``fit`` begins) a window opens: the next
``window`` training batches are counted as they leave the model's compiled
train step
(:class:`~tensorstate_callbacks.integrations.keras.step_capture.StepCapture`,
the layers in training mode, dropout active), and the window is reported at
the step it closes, which is at its last batch or at the end of the epoch,
whichever comes first.  Between windows ``fit`` runs Keras' own train function.
"""

from __future__ import annotations

from collections.abc import Callable

from .step_capture import StepCapture

__all__ = ["TrainingWindows"]


class TrainingWindows:
    """Opens and closes the windows of training batches a :class:`StepCapture` counts.

    Call :meth:`batch_begin` from the callback's ``on_train_batch_begin`` and
    :meth:`close` at the end of every epoch and of training.

    Args:
        capture: counts the training batches of a window (``kind="train"``).
        every_n_steps: a window opens at every step that is a multiple of it.
        window: the most batches one window counts.
        report: called with the step when a window closes (the counters of
            ``capture.reader`` hold its states).
        step: the number of training steps done before this ``fit``.

    Example:
        >>> import keras
        >>> import numpy as np
        >>> from tensorstate_callbacks.integrations.keras.reader import StateReader
        >>> inputs = keras.Input((3,))
        >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        >>> model.compile(loss="mse", optimizer="sgd")
        >>> reader = StateReader(model, attach_to=["hidden"])
        >>> reports = []
        >>> windows = TrainingWindows(StepCapture(model, reader, "train"), every_n_steps=3,
        ...                           window=2, report=lambda step: reports.append(
        ...                               (step, reader.counters[0].state_count)))
        >>> class During(keras.callbacks.Callback):
        ...     def on_train_batch_begin(self, batch, logs=None): windows.batch_begin()
        ...     def on_epoch_end(self, epoch, logs=None): windows.close()
        >>> x, y = np.ones((30, 3), "float32"), np.zeros((30, 1), "float32")
        >>> _ = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[During()])
        >>> reports   # 8 batches an epoch (the last of 2 samples); an epoch's end closes one
        [(2, 8), (5, 8), (8, 6), (11, 8), (14, 8), (16, 2)]
    """

    def __init__(self, capture: StepCapture, every_n_steps: int, window: int,
                 report: Callable[[int], None], step: int = 0):
        self.capture = capture
        self.every_n_steps = every_n_steps
        self.window = window
        self.report = report
        self.step = step
        self._left = 0  # batches the open window still counts
        self._open = False

    def batch_begin(self) -> None:
        """Before a training batch: close a full window, open one when it is time,
        and let the capture count this batch while a window is open."""
        if self._open and self._left == 0:
            self.close()
        if not self._open and self.step % self.every_n_steps == 0:
            self.capture.reader.reset()
            self.capture.install()
            self._open, self._left = True, self.window
        if self._open:
            self.capture.announce()
            self._left -= 1
        self.step += 1

    def close(self) -> None:
        """Close the open window (if any): Keras' own train function again, then report it."""
        if not self._open:
            return
        self._open = False
        self.capture.uninstall()
        self.report(self.step)
