"""The counting engine behind :class:`~tensorstate_callbacks.core.counter.StateCounter`.

One :class:`CountEngine` holds the counts of one layer's packed states and
decides how they are kept: a dense table for narrow layers, one hash table
that splits into shards once it could outgrow the cache, a row buffer that
gathers small batches, per-thread copies of a dense table, and spill files
once the tables pass the memory cap.  It knows nothing of arrays, names of
probes or metrics: it takes packed rows (``uint8[n, key_bytes]``, optionally
with a count per row) and gives back counts.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import _table
from ._row_buffer import RowBuffer
from ._spill import SpillFiles
from .packing import num_threads

# Below this many rows a batch is counted on one thread; into a dense table,
# below the second (a thread's copy of the table only pays on large batches).
# The threads are the kernels' own, created for the call (see ext/ts_batch.h).
_PARALLEL_MIN_ROWS = 1 << 16
_PARALLEL_DENSE_MIN_ROWS = 1 << 20
# A counter starts with one hash table; once it could outgrow the cache it
# splits into _NUM_SHARDS tables that rows are radix-partitioned among, so
# each stays small enough for the cache (see ext/ts_batch.h).
_NUM_SHARDS = 256
_SHARD_AT_DISTINCT = 1 << 14
_SHARDS_PER_READ = 16


class CountEngine:
    """Exact counts of packed states of one width, within a memory cap.

    Not thread-safe: the owning counter serialises every call.

    >>> engine = CountEngine("layer", num_neurons=3, memory_limit=1 << 30)
    >>> engine.count(np.array([[5], [5], [1]], dtype=np.uint8), None, threads=1)
    >>> sorted(int(c) for c in np.concatenate(list(engine.count_arrays())))
    [1, 2]
    """

    def __init__(self, name: str, num_neurons: int, memory_limit: int, spill_dir=None,
                 threads: int | None = None, on_spill=None):
        self.name = name
        self.on_spill = on_spill  # on_spill(directory, distinct) when counts first spill
        self.num_neurons = int(num_neurons)
        self.memory_limit = memory_limit
        self.spill_dir = spill_dir
        self.threads = threads  # for reads; None: every usable core
        self._shards = self._new_tables()
        self._pending: RowBuffer | None = None
        self._dense_copies: list = []  # see _count_dense
        self._spill: SpillFiles | None = None
        self._incomplete = False  # counting ran out of memory (see count_now)

    @property
    def key_bytes(self) -> int:
        """Bytes of one packed state."""
        return (self.num_neurons + 7) // 8

    def close(self) -> None:
        """Delete the spill files, if any."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    # -- counting --------------------------------------------------------------
    def _new_tables(self) -> list:
        """A dense table for narrow layers (fastest; at most 8 MiB), else one
        hash table (split later by :meth:`_split_tables`)."""
        dense_bytes = 8 << self.num_neurons
        if self.num_neurons <= _table.DENSE_MAX_BITS and dense_bytes <= self.memory_limit // 4:
            return [_table.CountTable(self.key_bytes, self.num_neurons)]
        return [_table.CountTable(self.key_bytes)]

    def _split_tables(self) -> None:
        """Move the counts of the single hash table into _NUM_SHARDS tables, and
        from now on buffer small batches (one table fits in cache: no need before)."""
        keys, counts = self._shards[0].items()
        self._shards = [_table.CountTable(self.key_bytes) for _ in range(_NUM_SHARDS)]
        _table.count_rows(self._shards, keys, counts)
        if self._pending is None:
            self._pending = RowBuffer.for_key_bytes(self.key_bytes, self.memory_limit)

    def buffer_space(self, rows: int, threads: int | None) -> np.ndarray | None:
        """Where a batch of ``rows`` unweighted rows goes to wait: a view of the
        row buffer (flushed first when full; :meth:`commit` them once written),
        or None where it is to be counted now (see :mod:`._row_buffer`)."""
        pending = self._pending
        if pending is None or not pending.fits(rows):
            return None
        if pending.room < rows:
            self._flush(threads)
        return pending.space(rows)

    def commit(self, rows: int) -> None:
        """The ``rows`` rows written into :meth:`buffer_space` now hold states."""
        self._pending.commit(rows)

    def count(self, keys: np.ndarray, weights: np.ndarray | None, threads: int | None) -> None:
        """Count rows (``weights``: a uint64 count per row, or None for 1 each),
        now or, for a small unweighted batch, once the row buffer is full."""
        space = None if weights is not None else self.buffer_space(len(keys), threads)
        if space is None:
            self.count_now(keys, weights, threads)
        else:
            space[...] = keys
            self.commit(len(keys))

    def _flush(self, threads: int | None) -> None:
        """Count the buffered rows on up to ``threads`` threads."""
        if self._pending is not None and len(self._pending):
            self.count_now(self._pending.take(), None, threads)

    def count_now(self, keys: np.ndarray, weights: np.ndarray | None,
                  threads: int | None) -> None:
        """Count rows on up to ``threads`` threads (None: every usable core)."""
        single = self._shards[0]
        try:
            if single.is_dense:
                self._count_dense(keys, weights, threads)
            else:
                if len(self._shards) == 1 and single.distinct + len(keys) > _SHARD_AT_DISTINCT:
                    self._split_tables()
                self._count_hashed(keys, weights, threads)
        except MemoryError:
            # Part of the rows may be counted: every read now says so (see settle).
            self._incomplete = True
            raise
        if sum(shard.memory for shard in self._shards) > self.memory_limit:
            self._spill_to_disk()

    def _count_hashed(self, keys: np.ndarray, weights: np.ndarray | None,
                      threads: int | None) -> None:
        """Count into the hash table(s); large batches into shards on several
        threads (at most one per shard)."""
        threads = (threads or num_threads()) if len(keys) >= _PARALLEL_MIN_ROWS else 1
        _table.count_rows(self._shards, keys, weights, threads)

    def _count_dense(self, keys: np.ndarray, weights: np.ndarray | None,
                     threads: int | None) -> None:
        """Count into the dense table.  With several threads each counts a share
        of the rows into a copy of its own (its cells are touched at random, too
        often to share), folded in by the next read; only while the copies fit
        in a quarter of the memory cap."""
        table = self._shards[0]
        threads = (threads or num_threads()) if len(keys) >= _PARALLEL_DENSE_MIN_ROWS else 1
        if threads > 1 and threads * table.memory <= self.memory_limit // 4:
            while len(self._dense_copies) < threads - 1:
                self._dense_copies.append(_table.CountTable(table.key_bytes, self.num_neurons))
        _table.count_dense([table, *self._dense_copies[: threads - 1]], keys, weights)

    def _spill_to_disk(self) -> None:
        if self._spill is None:
            self._spill = SpillFiles(self.key_bytes, directory=self.spill_dir)
            if self.on_spill is not None:
                self.on_spill(self._spill.path, sum(shard.distinct for shard in self._shards))
        for shard in self._shards:
            self._spill.write(*shard.items())
        self._shards = self._new_tables()

    # -- reading ---------------------------------------------------------------
    def settle(self) -> None:
        """Put every count in place: count the buffered rows and fold the dense
        table's per-thread copies in.  Every read of the counts calls this first."""
        self._flush(self.threads)
        for copy in self._dense_copies:
            _table.fold_dense(self._shards[0], copy)
        if self._incomplete:
            raise RuntimeError(
                f"{self.name}: the machine ran out of memory while counting, so some "
                "states were not counted and these counts are incomplete; call "
                "reset_states() to start again (a lower memory_limit spills counts to "
                "disk sooner)"
            )

    def count_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (state_ids, counts) chunks; each distinct state is in exactly one."""
        self.settle()
        if self._spill is None:
            for shard in self._shards:
                if shard.distinct:
                    yield shard.items()
            return
        in_memory = [shard.items() for shard in self._shards]
        yield from self._spill.partitions(
            np.concatenate([keys for keys, _ in in_memory]),
            np.concatenate([counts for _, counts in in_memory]),
        )

    def count_arrays(self) -> Iterator[np.ndarray]:
        """The counts of :meth:`count_chunks` alone (no states to copy out), in
        arrays of a few shards each: small enough to reuse freed memory (fresh
        pages cost a fault each), large enough to keep NumPy's per-call cost low."""
        self.settle()
        if self._spill is not None:
            yield from (counts for _, counts in self.count_chunks())
            return
        for first in range(0, len(self._shards), _SHARDS_PER_READ):
            yield np.concatenate([shard.counts()
                                  for shard in self._shards[first:first + _SHARDS_PER_READ]])

    @property
    def distinct(self) -> int:
        """Number of distinct states counted (settles first)."""
        self.settle()
        if self._spill is None:
            return sum(shard.distinct for shard in self._shards)
        return sum(len(counts) for _, counts in self.count_chunks())

    @property
    def is_spilled(self) -> bool:
        """True once the counts went to disk (settles first)."""
        self.settle()
        return self._spill is not None
