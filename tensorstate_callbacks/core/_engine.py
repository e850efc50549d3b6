"""The counting engine behind :class:`~tensorstate_callbacks.core.counter.StateCounter`.

One :class:`CountEngine` holds the counts of one layer's packed states and
decides how they are kept: a dense table for narrow layers, one hash table
that splits into shards once it could outgrow the cache, a row buffer that
gathers small batches, per-thread copies of a dense table, and spill files
once the tables pass the memory cap.  It knows nothing of arrays, names of
probes or metrics: it takes packed rows (``uint8[n, key_bytes]``, optionally
with a count per row) and gives back counts.

Its counts are exact or it says they are not: a change that fails part-way
(out of memory, a spill file that cannot be written or read back, an
exception such as KeyboardInterrupt arriving mid-change) marks the engine
incomplete, and every later read raises :class:`IncompleteCountsError`.
Large batches are counted in pieces, spilling between them, so the tables
stay within the memory cap inside one batch too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from . import _table
from ._row_buffer import RowBuffer
from ._spill import SpillError, SpillFiles
from .metrics import CountSums, sums_of_counts
from .packing import num_threads

# Below this many rows a batch is counted on one thread; into a dense table,
# below the second (a thread's copy of the table only pays on large batches).
# The threads are the kernels' own, created for the call (see ext/ts_batch.h).
_PARALLEL_MIN_ROWS = 1 << 16
_PARALLEL_DENSE_MIN_ROWS = 1 << 20
# A counter starts with one hash table; once it could outgrow the cache it
# splits into _NUM_SHARDS tables that rows are radix-partitioned among, so
# each stays small enough for the cache (see ext/ts_batch.h).  That pays for
# narrow keys, held in the partitioned records themselves; wide keys (more
# than 8 bytes) are read back from the batch at random when inserted, so
# their single table, which prefetches each row's slot as it reads the rows
# in order, counts 2-3 times faster (docs/performance.md): it splits only for
# a batch large enough to count on several threads, or past
# _SHARD_WIDE_AT_DISTINCT states.
_NUM_SHARDS = 256
_SHARD_AT_DISTINCT = 1 << 14
_SHARD_WIDE_AT_DISTINCT = 1 << 22
_SHARDS_PER_READ = 16
# A batch is counted in pieces small enough that the tables cannot outgrow
# the memory cap before the engine spills (at least this many rows a piece).
# A new distinct state takes at most 4 slots of 16 bytes in a hash table (load
# 5/16 just after it doubled) and, when wider than 8 bytes, twice its key and
# count in the arena.
_MIN_PIECE_ROWS = 1 << 16
_SLOT_BYTES_PER_STATE = 4 * 16


class IncompleteCountsError(RuntimeError):
    """Some states were not counted, or counted states were lost: out of
    memory, a spill file that could not be written or read back, or an
    exception (e.g. KeyboardInterrupt) in the middle of a change.  Every read
    of the counter raises it until ``reset_states()``.
    """


def _failure(name: str, error: BaseException) -> str:
    """Why ``error`` left the counts of ``name`` incomplete, and what to do."""
    if isinstance(error, MemoryError):
        cause = ("the machine ran out of memory while counting, so some states were not "
                 "counted (a lower memory_limit spills counts to disk sooner)")
    elif isinstance(error, SpillError):
        cause = str(error)
    else:
        what = type(error).__name__ + (f" ({error})" if str(error) else "")
        cause = f"{what} came in the middle of a change of the counts, so part of a batch " \
                "may be counted"
    return (f"{name}: {cause}; these counts are incomplete: call reset_states() to start "
            "again")


class CountEngine:
    """Exact counts of packed states of one width, within a memory cap.

    Not thread-safe: the owning counter serialises every call.

    >>> engine = CountEngine("layer", num_neurons=3, memory_limit=1 << 30)
    >>> engine.count(np.array([[5], [5], [1]], dtype=np.uint8), None, threads=1)
    >>> sorted(int(c) for c in np.concatenate(list(engine.count_arrays())))
    [1, 2]
    """

    def __init__(self, name: str, num_neurons: int, memory_limit: int, spill_dir=None,
                 threads: int | None = None, on_spill=None, histograms: bool = True):
        self.name = name
        self.histograms = histograms  # whether reads make byte histograms (see _summary)
        self.on_spill = on_spill  # on_spill(directory, distinct) when counts first spill
        self.num_neurons = int(num_neurons)
        self.memory_limit = memory_limit
        self.spill_dir = spill_dir
        self.threads = threads  # for reads; None: every usable core
        self._shards = self._new_tables()
        self._pending: RowBuffer | None = None
        self._dense_copies: list = []  # see _count_dense
        self._spill: SpillFiles | None = None
        self.failure: str | None = None  # why the counts are incomplete (see check)
        self.changes = 0  # counting calls begun: whether a call may have changed the counts
        self._derived_from = None  # see derive_from
        self.read_along = None  # see read_with
        self._read: tuple | None = None  # see _summary; None once the tables change

    @property
    def key_bytes(self) -> int:
        """Bytes of one packed state."""
        return (self.num_neurons + 7) // 8

    def close(self) -> None:
        """Delete the spill files, if any."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def clear(self) -> bool:
        """Forget every count but keep the hash tables' memory, for counting a
        layer's next epoch: tables sized by this one's states neither grow nor
        fault in fresh pages again (in a ResNet's 64-channel layers, fresh
        pages and resizing took most of the counting time).  Returns False,
        changing nothing, where the engine cannot be reused: it spilled, its
        counts are incomplete, its table is dense (made anew from a cache
        anyway), or it counts along with labelled pairs.

        >>> engine = CountEngine("layer", num_neurons=30, memory_limit=1 << 30)
        >>> engine.count(np.array([[1, 0, 0, 0], [2, 0, 0, 0]], dtype=np.uint8), None, 1)
        >>> engine.clear(), engine.distinct
        (True, 0)
        """
        if (self._spill is not None or self.failure is not None or self._shards[0].is_dense
                or self._derived_from is not None or self.read_along is not None):
            return False
        for shard in self._shards:
            shard.clear()
        if self._pending is not None:
            self._pending.take()
        self.changes = 0
        self._read = None
        return True

    def check(self) -> None:
        """Raise :class:`IncompleteCountsError` if the counts are incomplete."""
        if self.failure is not None:
            raise IncompleteCountsError(self.failure)

    def fail(self, error: BaseException) -> None:
        """Mark the counts incomplete because of ``error`` (the first cause stays)."""
        if self.failure is None:
            self.failure = _failure(self.name, error)

    @contextmanager
    def _changing(self):
        """Around every change of the tables, buffer or spill files: an
        exception escaping it leaves the counts incomplete."""
        try:
            yield
        except BaseException as error:
            self.fail(error)
            if isinstance(error, SpillError):
                raise IncompleteCountsError(self.failure) from error
            raise

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
        shards = [_table.CountTable(self.key_bytes) for _ in range(_NUM_SHARDS)]
        _table.count_rows(shards, keys, counts)
        self._shards = shards
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
        self.changes += 1
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
            with self._changing():
                self._count_pieces(self._pending.take(), None, threads)

    def count_now(self, keys: np.ndarray, weights: np.ndarray | None,
                  threads: int | None) -> None:
        """Count rows on up to ``threads`` threads (None: every usable core)."""
        self._take_derived()
        self.changes += 1
        with self._changing():
            self._count_pieces(keys, weights, threads)

    def _count_pieces(self, keys: np.ndarray, weights: np.ndarray | None,
                      threads: int | None) -> None:
        """Count rows a piece at a time, spilling whenever the tables pass the cap."""
        self._read = None
        start = 0
        while start < len(keys):
            stop = start + self._rows_within_cap()
            piece = None if weights is None else weights[start:stop]
            if self._shards[0].is_dense:
                self._count_dense(keys[start:stop], piece, threads)
            else:
                if len(self._shards) == 1 and self._outgrows_one_table(len(keys), threads):
                    self._split_tables()
                self._count_hashed(keys[start:stop], piece, threads)
            if self._table_memory() > self.memory_limit:
                self._spill_to_disk()
            start = stop

    def _outgrows_one_table(self, rows: int, threads: int | None) -> bool:
        """Whether the single hash table splits into shards before ``rows`` more
        rows are counted (see _NUM_SHARDS)."""
        distinct = self._shards[0].distinct + rows
        if self.key_bytes <= 8:
            return distinct > _SHARD_AT_DISTINCT
        threaded = rows >= _PARALLEL_MIN_ROWS and (threads or num_threads()) > 1
        return threaded or distinct > _SHARD_WIDE_AT_DISTINCT

    def _table_memory(self) -> int:
        return sum(shard.memory for shard in self._shards)

    def _rows_within_cap(self) -> int:
        """Rows that may be counted before the memory is checked again: as
        many as could all be new states without passing the cap."""
        if self._shards[0].is_dense:  # its memory is fixed
            return 1 << 62
        per_state = _SLOT_BYTES_PER_STATE + (2 * (self.key_bytes + 8) if self.key_bytes > 8
                                             else 0)
        room = self.memory_limit - self._table_memory()
        return max(_MIN_PIECE_ROWS, room // per_state)

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
        items = [shard.items() for shard in self._shards]  # one write per partition file
        self._spill.write(np.concatenate([keys for keys, _ in items]),
                          np.concatenate([counts for _, counts in items]))
        self._shards = self._new_tables()

    # -- reading ---------------------------------------------------------------
    def settle(self) -> None:
        """Put every count in place: count the buffered rows and fold the dense
        table's per-thread copies in.  Every read of the counts calls this first.

        Raises:
            IncompleteCountsError: the counts are incomplete (see :meth:`fail`).
        """
        self.check()
        self._flush(self.threads)
        if self.read_along is not None:
            self.read_along.settle()
        if self._dense_copies:
            self._read = None
            with self._changing():
                for copy in self._dense_copies:
                    _table.fold_dense(self._shards[0], copy)
        self._take_derived()

    def derive_from(self, source) -> None:
        """Let ``source`` keep the dense table's counts (labelled counting of a
        narrow layer, see :mod:`._joint`): while ``source.stale``, the next
        read or count first calls ``source.fold_into(table)``, which makes the
        table hold them.  None: the table is counted here alone again."""
        self._derived_from = source

    def read_with(self, other) -> None:
        """Settle ``other`` with this engine, and read its sums with this
        engine's: ``other`` has ``settle()`` and ``sums()``, as an engine has
        (a labelled counter's (state, label) pairs, whose entropy its mutual
        information needs: see :mod:`._joint`).  One read of the counter then
        reads both.  None: this engine alone again."""
        self.read_along = other

    def _take_derived(self) -> None:
        source = self._derived_from
        if source is not None and source.stale:
            self._read = None
            with self._changing():
                source.fold_into(self._shards[0])

    def count_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (state_ids, counts) chunks; each distinct state is in exactly one.

        Raises:
            IncompleteCountsError: the counts are incomplete, or a spill file
                cannot be read back intact (which makes them so).
        """
        self.settle()
        if self._spill is None:
            for shard in self._shards:
                if shard.distinct:
                    yield shard.items()
            return
        in_memory = [shard.items() for shard in self._shards]
        try:
            yield from self._spill.partitions(
                np.concatenate([keys for keys, _ in in_memory]),
                np.concatenate([counts for _, counts in in_memory]),
            )
        except SpillError as error:
            self.fail(error)
            raise IncompleteCountsError(self.failure) from error

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

    def sums(self) -> CountSums:
        """The :class:`~tensorstate_callbacks.core.metrics.CountSums` of the
        counts (what entropies of order 0, 1 and infinity and the coverage need)."""
        return self._summary()[0]

    def firing_counts(self) -> np.ndarray:
        """``uint64[num_neurons]``: for each neuron, the counts of the states in
        which it fires, from the read: the byte histograms of the states (per
        byte of the states, its 256 values weighted by the counts: neuron
        ``8 j + b`` fires in the states whose byte ``j`` has bit ``b`` set),
        and the states of more than 64 neurons counted once in hash tables,
        whose bits are added up directly.  Not for an engine made with
        ``histograms=False``."""
        _, histograms, fired = self._summary()
        return (_table.firing_counts(histograms) + fired)[:self.num_neurons]

    def _summary(self) -> tuple[CountSums, np.ndarray | None, np.ndarray | None]:
        """``(sums, byte histograms, firing counts of the states counted once)``
        of the counts (see :meth:`firing_counts`), read once the tables last
        changed: in one pass over the tables, in place, where they are in
        memory.  An epoch's metrics of a wide layer, whose states are mostly
        distinct, then cost one scan of its tables, without copying counts out."""
        self.settle()
        if self._read is None:
            histograms = fired = None
            if self.histograms:
                histograms = np.zeros((self.key_bytes, 256), dtype=np.uint64)
                fired = np.zeros(8 * self.key_bytes, dtype=np.uint64)
            if self._spill is None:
                sums = CountSums(*_table.read_tables(self._shards, histograms, fired))
            elif histograms is None:
                sums = sums_of_counts(self.count_arrays())
            else:  # a partition of the spill files at a time
                sums = sums_of_counts(self._with_histograms(self.count_chunks(), histograms))
            self._read = (sums, histograms, fired)
            if self.read_along is not None:
                self.read_along.sums()
        return self._read

    @staticmethod
    def _with_histograms(chunks, histograms: np.ndarray) -> Iterator[np.ndarray]:
        """The counts of each ``(keys, counts)`` chunk, once the byte histograms
        of its keys are added to ``histograms``."""
        for keys, counts in chunks:
            _table.byte_histograms(keys, counts, histograms)
            yield counts

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
