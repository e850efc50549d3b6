"""Packed states held back until there are enough to count in one pass.

Counting many distinct states touches a table far larger than the CPU cache.
The counting kernel sorts each call's rows by table shard first, so a large
call inserts hundreds of rows into each shard while it is in cache; a small
call (one validation batch) inserts a few, each a cache miss.  A counter
therefore packs small batches straight into a buffer and counts them when it is full,
or as soon as anything reads the counts.  The buffer holds at most
MAX_BYTES and at most 1/16 of the counter's memory cap.
"""

from __future__ import annotations

import numpy as np

MAX_BYTES = 8 << 20
MIN_ROWS = 1 << 12  # below this, buffering would not gain locality


class RowBuffer:
    """A fixed-size buffer of packed rows (``uint8[rows, key_bytes]``).

    >>> buffer = RowBuffer.for_key_bytes(1, memory_limit=1 << 30)
    >>> buffer.fits(3), buffer.room
    (True, 8388608)
    >>> buffer.space(3)[:, 0] = [1, 2, 3]
    >>> buffer.commit(3)
    >>> buffer.take().ravel().tolist(), len(buffer)
    ([1, 2, 3], 0)
    """

    def __init__(self, rows: int, key_bytes: int):
        self._rows = np.empty((rows, key_bytes), dtype=np.uint8)
        self._fill = 0

    @classmethod
    def for_key_bytes(cls, key_bytes: int, memory_limit: int) -> RowBuffer | None:
        """A buffer for a counter capped at ``memory_limit`` bytes, or None where
        too few rows of this width would fit to gain anything."""
        rows = min(MAX_BYTES, memory_limit // 16) // key_bytes
        return cls(rows, key_bytes) if rows >= MIN_ROWS else None

    def __len__(self) -> int:
        return self._fill

    @property
    def room(self) -> int:
        """Rows that can still be appended."""
        return len(self._rows) - self._fill

    def fits(self, rows: int) -> bool:
        """Whether a batch of ``rows`` rows is small enough to buffer at all
        (half the buffer)."""
        return 2 * rows <= len(self._rows)

    def space(self, rows: int) -> np.ndarray:
        """A view of the next ``rows`` free rows to write into; they count as
        buffered once :meth:`commit` says so.  The caller checks :attr:`room`."""
        return self._rows[self._fill : self._fill + rows]

    def commit(self, rows: int) -> None:
        """The next ``rows`` rows of :meth:`space` now hold states."""
        self._fill += rows

    def take(self) -> np.ndarray:
        """The buffered rows (a view, valid until the next append), emptying the buffer."""
        rows, self._fill = self._rows[: self._fill], 0
        return rows
