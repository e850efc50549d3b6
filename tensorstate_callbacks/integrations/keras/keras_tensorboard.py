"""Keeping Keras' own ``TensorBoard`` callback from writing the state-space values twice.

Keras' ``TensorBoard`` writes every key of the logs it gets: ``val_<name>`` as
``epoch_<name>`` in ``log_dir/validation`` (``on_epoch_end``) and every
validation key as ``evaluation_<name>_vs_iterations`` (``on_test_end``).
Sharing the ``StateSpaceCallback``'s ``log_dir``, it would write each
state-space value a second time beside the callback's ``state_space/`` tag.
:func:`hide_state_space` gives such a callback, for one ``fit``, the logs
without the state-space keys.

Keras hands a callback no list of the others; during ``on_train_begin`` the
caller is the ``keras.callbacks.CallbackList`` of the ``fit`` (its
``callbacks`` attribute is public): :func:`fit_callbacks` finds it there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import keras

__all__ = ["fit_callbacks", "hide_state_space", "without_state_space"]

_PREFIXES = ("state_space/", "val_state_space/")


def without_state_space(logs) -> dict:
    """``logs`` without the state-space keys.

    Example:
        >>> without_state_space({"loss": 1.0, "val_state_space/aIQ": 0.5, "val_loss": 2.0})
        {'loss': 1.0, 'val_loss': 2.0}
    """
    return {key: value for key, value in (logs or {}).items() if not key.startswith(_PREFIXES)}


def fit_callbacks(depth: int = 6) -> list:
    """The callbacks of the ``fit`` that is calling, found on the call stack (or ``[]``).

    Call it from a callback's ``on_train_begin``: the ``CallbackList`` calling
    it is ``self`` of a frame a few levels up.

    Example:
        >>> fit_callbacks()   # not called from fit()
        []
    """
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.callbacks.CallbackList):
            return list(owner.callbacks)
        frame = frame.f_back
    return []


def hide_state_space(callbacks, log_dir) -> Callable[[], None]:
    """Give every Keras ``TensorBoard`` of ``callbacks`` writing to ``log_dir``
    the logs without the state-space keys, in ``on_epoch_end`` and ``on_test_end``.

    Args:
        callbacks: the callbacks of a ``fit``.
        log_dir: the ``StateSpaceCallback``'s directory.

    Returns:
        A function that gives them back their own methods.

    Example:
        >>> import tempfile
        >>> log_dir = tempfile.mkdtemp()
        >>> board = keras.callbacks.TensorBoard(log_dir)
        >>> restore = hide_state_space([board], log_dir)
        >>> "on_epoch_end" in vars(board)
        True
        >>> restore(); "on_epoch_end" in vars(board)
        False
    """
    target = Path(log_dir).resolve()
    boards = [callback for callback in callbacks
              if isinstance(callback, keras.callbacks.TensorBoard)
              and Path(callback.log_dir).resolve() == target]
    for board in boards:
        on_epoch_end, on_test_end = board.on_epoch_end, board.on_test_end
        object.__setattr__(board, "on_epoch_end",
                           lambda epoch, logs=None, _method=on_epoch_end:
                           _method(epoch, without_state_space(logs)))
        object.__setattr__(board, "on_test_end",
                           lambda logs=None, _method=on_test_end:
                           _method(without_state_space(logs)))

    def restore() -> None:
        for board in boards:
            for name in ("on_epoch_end", "on_test_end"):
                if name in vars(board):
                    object.__delattr__(board, name)

    return restore
