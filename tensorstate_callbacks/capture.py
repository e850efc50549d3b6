"""The framework-free engine of every probe: pack, count and measure states."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from numbers import Integral

import numpy as np

from . import _table, metrics, states
from ._parallel import num_threads, run_parallel
from .row_buffer import RowBuffer
from .spill import SpillFiles
from .storage import RawStateStore, check_writable

DEFAULT_MEMORY_LIMIT = 1 << 30  # bytes of count tables per counter
# Below this many rows a batch is counted on one thread; into a dense table,
# below the second (a thread's copy of the table only pays on large batches).
_PARALLEL_MIN_ROWS = 1 << 16
_PARALLEL_DENSE_MIN_ROWS = 1 << 20
# A counter starts with one hash table; once it could outgrow the cache it
# splits into _NUM_SHARDS tables that rows are radix-partitioned among, so
# each stays small enough for the cache (see ext/ts_table.h).
_NUM_SHARDS = 256
_SHARD_AT_DISTINCT = 1 << 14
_SHARDS_PER_READ = 16


def _check_padding(packed: np.ndarray, num_neurons: int) -> None:
    """Padding bits past the last neuron must be 0, as the packer writes them."""
    spare = -num_neurons % 8
    if spare and len(packed) and np.any(packed[:, -1] >> (8 - spare)):
        raise ValueError(
            f"packed states of {num_neurons} neurons have non-zero padding bits in their last "
            "byte; pack with tensorstate_callbacks.compress_states (or np.packbits(..., "
            "bitorder='little')) so bits past the last neuron are 0"
        )


def _count_in_parallel(shards: list, bits: int, keys: np.ndarray, weights: np.ndarray | None,
                       threads: int) -> None:
    """Count rows into sharded tables on ``threads`` threads: for each chunk,
    each thread partitions a share of the rows by shard, then inserts every
    partitioned row of its own shards (see ext/ts_table.h).  When the first
    chunk's rows are mostly distinct, the rest of the batch is sketched before
    its inserts, so that each shard grows once for the whole batch."""
    parts = _table.partitioners(bits, threads)
    for part in parts:
        part.clear_sketches()
    step = _table.CHUNK_ROWS * threads
    sketched = False
    for base in range(0, len(keys), step):
        end = min(len(keys), base + step)
        _run_shares(base, end, threads, lambda part, begin, stop, sketched=sketched: part.partition(
            keys, begin, stop, weights is not None, sketched), parts)
        if base == 0 and end < len(keys) and _table.sketch_ahead(parts, end):
            _run_shares(end, len(keys), threads, lambda part, begin, stop: part.sketch(
                keys, begin, stop), parts)
            sketched = True
        run_parallel([
            lambda first=first: _table.insert_partitioned(shards, bits, first, threads, keys,
                                                          weights, parts)
            for first in range(threads)
        ])


def _run_shares(begin: int, end: int, threads: int, task, parts: list) -> None:
    """``task(part, first_row, end_row)`` for each part's share of rows [begin, end)."""
    bounds = [begin + (end - begin) * share // threads for share in range(threads + 1)]
    run_parallel([
        lambda part=part, first=first, stop=stop: task(part, first, stop)
        for part, first, stop in zip(parts, bounds[:-1], bounds[1:])
    ])


def _check_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, Integral)
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


class StateSpaceMemoryWarning(RuntimeWarning):
    """A counter outgrew its memory cap and now keeps its counts on disk."""


def _default_memory_limit() -> int:
    return int(os.environ.get("TENSORSTATE_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT))


def _is_cuda_array(array) -> bool:
    if hasattr(array, "__cuda_array_interface__"):
        return True
    device = getattr(array, "__dlpack_device__", None)
    return callable(device) and device()[0] == 2  # kDLCUDA


class StateCounter:
    """Streaming, exact counter of the states of one layer.

    ``add(array, neuron_axis)`` packs a batch (each position along the other
    axes is one state of ``array.shape[neuron_axis]`` neurons) and counts it.
    Memory grows with the number of *distinct* states.  Past ``memory_limit``
    bytes of tables the counter warns once (:class:`StateSpaceMemoryWarning`)
    and spills its counts to disk (``spill_dir``, default the temp directory):
    every result stays exact.  Raw packed states are kept only when asked
    (``store_states=True`` in memory, or ``storage_path`` on disk, as zarr).
    ``threads`` caps the threads one batch uses (default: every usable core).

    >>> counter = StateCounter("conv")
    >>> counter.add(np.array([[1.0, -2.0], [3.0, -1.0], [-1.0, 5.0]]), neuron_axis=-1)
    >>> counter.state_count, sorted(counter.counts().tolist()), counter.max_entropy()
    (3, [1, 2], 2)
    >>> round(counter.efficiency(), 4)
    0.4591
    """

    def __init__(self, name: str = "states", *, store_states: bool = False,
                 storage_path=None, memory_limit: int | None = None, spill_dir=None,
                 threads: int | None = None):
        limit = _default_memory_limit() if memory_limit is None else memory_limit
        if isinstance(limit, bool) or not isinstance(limit, Integral) or limit <= 0:
            raise ValueError(f"memory_limit must be a positive number of bytes, got {limit!r}")
        limit = int(limit)
        _check_threads(threads)
        self.name = name
        self.memory_limit = limit
        self.threads = threads  # None: TENSORSTATE_NUM_THREADS or every usable core
        self.spill_dir = None if spill_dir is None else check_writable(spill_dir)
        self._store = (
            RawStateStore(storage_path) if store_states or storage_path is not None else None
        )
        self._spill: SpillFiles | None = None
        self._warned = False
        self._lock = threading.RLock()  # hooks may feed one counter from several threads
        self.reset_states()

    # -- feeding ---------------------------------------------------------------
    def reset_states(self) -> None:
        """Forget every state seen so far, stored raw states included."""
        with self._lock:
            self.reset_counts()
            if self._store is not None:
                self._store.clear()

    def reset_counts(self) -> None:
        """Forget the counts (and the layer width) but keep stored raw states."""
        with self._lock:
            self._num_neurons: int | None = None
            self._shards: list | None = None
            self._pending: RowBuffer | None = None
            self._dense_copies: list = []  # see _count_dense
            self._incomplete = False  # counting ran out of memory (see _count_now)
            self._state_count = 0
            if self._spill is not None:
                self._spill.close()
                self._spill = None

    def add(self, array, neuron_axis: int = -1, dtype: str | None = None, *,
            threads: int | None = None) -> None:
        """Pack and count one batch of activations.

        NumPy arrays of any float/int/bool dtype and layout are read in place;
        CUDA arrays (CuPy, DLPack) are packed on the GPU when CuPy is installed.
        ``dtype="bfloat16"`` reads an int16 array as bfloat16 bits.  ``threads``
        caps the threads of this batch (default: the counter's ``threads``).
        """
        threads = self.threads if threads is None else _check_threads(threads)
        if not isinstance(array, np.ndarray) and _is_cuda_array(array):
            from .gpu import pack_cuda

            self._add_own_packing(*pack_cuda(array, neuron_axis), threads)
            return
        array = states.kernel_readable(array)
        plan = states.layout(array.shape, array.strides, array.dtype, neuron_axis, dtype)
        with self._lock:
            self._check_neurons(plan.num_neurons)
            # Small batches are packed straight into the row buffer.
            space = self._buffer_space(plan.num_states, threads)
            packed = states.pack_layout(array, plan, out=space, threads=threads)
            if space is None:
                self._count_now(packed, None, threads)
            else:
                self._pending.commit(plan.num_states)
            self._added(packed)

    def add_packed(self, packed: np.ndarray, num_neurons: int, *,
                   threads: int | None = None) -> None:
        """Count states that are already packed: ``uint8[n, ceil(num_neurons / 8)]``
        (``threads``: as in :meth:`add`)."""
        threads = self.threads if threads is None else _check_threads(threads)
        packed = np.ascontiguousarray(packed)
        num_bytes = (num_neurons + 7) // 8
        if packed.ndim != 2 or packed.dtype != np.uint8 or packed.shape[1] != num_bytes:
            raise ValueError(
                f"packed states of {num_neurons} neurons must be uint8 with shape "
                f"(n, {num_bytes}), got {packed.dtype} {packed.shape}"
            )
        _check_padding(packed, num_neurons)
        self._add_own_packing(packed, num_neurons, threads)

    def _add_own_packing(self, packed: np.ndarray, num_neurons: int,
                         threads: int | None) -> None:
        """Count packed states whose shape and padding are known to be right."""
        with self._lock:
            self._check_neurons(num_neurons)
            self._count(packed, None, threads)
            self._added(packed)

    def _added(self, packed: np.ndarray) -> None:
        """Book a counted batch: its states, and its raw rows where they are kept."""
        self._state_count += packed.shape[0]
        if self._store is not None:
            self._store.append(packed)

    def merge(self, other: StateCounter) -> None:
        """Add every count of ``other`` (same layer width) to this counter, exactly."""
        if other is self:
            raise ValueError(f"{self.name}: cannot merge a counter into itself")
        if other._num_neurons is None:
            return
        with self._lock, other._lock:
            self._check_neurons(other._num_neurons)
            for keys, counts in other.count_chunks():
                self._count(keys, counts, self.threads)
            self._state_count += other._state_count

    def add_counts(self, state_ids: np.ndarray, counts: np.ndarray, num_neurons: int) -> None:
        """Add packed states with how often each occurred (e.g. from another process)."""
        state_ids, counts = np.asarray(state_ids), np.asarray(counts)
        num_bytes = (num_neurons + 7) // 8
        if state_ids.ndim != 2 or state_ids.dtype != np.uint8 or state_ids.shape[1] != num_bytes:
            raise ValueError(
                f"state_ids of {num_neurons} neurons must be uint8 rows of width {num_bytes} "
                f"byte(s), shape (n, {num_bytes}); got {state_ids.dtype} {state_ids.shape}"
            )
        if counts.shape != (len(state_ids),) or counts.dtype.kind not in "iu" or (
            counts.size and counts.min() < 0
        ):
            raise ValueError(
                f"counts must be {len(state_ids)} integers >= 0, one per row of state_ids; "
                f"got {counts.dtype} {counts.shape}"
            )
        _check_padding(state_ids, num_neurons)
        keep = counts > 0
        with self._lock:
            self._check_neurons(num_neurons)
            self._count(np.ascontiguousarray(state_ids[keep]),
                        np.ascontiguousarray(counts[keep], dtype=np.uint64), self.threads)
            self._state_count += int(counts.sum())

    def _check_neurons(self, num_neurons: int) -> None:
        if self._num_neurons is None:
            self._num_neurons = int(num_neurons)
            self._shards = self._new_tables()
        elif num_neurons != self._num_neurons:
            raise ValueError(
                f"{self.name}: got states of {num_neurons} neurons, but this counter holds "
                f"states of {self._num_neurons}; call reset_states() before changing layers "
                "or check neuron_axis"
            )

    def _new_tables(self) -> list:
        """A dense table for narrow layers (fastest; at most 8 MiB), else one
        hash table (split later by :meth:`_split_tables`)."""
        key_bytes = (self._num_neurons + 7) // 8
        dense_bytes = 8 << self._num_neurons
        if self._num_neurons <= _table.DENSE_MAX_BITS and dense_bytes <= self.memory_limit // 4:
            return [_table.CountTable(key_bytes, self._num_neurons)]
        return [_table.CountTable(key_bytes)]

    def _split_tables(self) -> None:
        """Move the counts of the single hash table into _NUM_SHARDS tables, and
        from now on buffer small batches (one table fits in cache: no need before)."""
        keys, counts = self._shards[0].items()
        self._shards = [_table.CountTable(keys.shape[1]) for _ in range(_NUM_SHARDS)]
        _table.count_rows(self._shards, _NUM_SHARDS.bit_length() - 1, keys, counts)
        if self._pending is None:
            self._pending = RowBuffer.for_key_bytes(keys.shape[1], self.memory_limit)

    def _buffer_space(self, rows: int, threads: int | None) -> np.ndarray | None:
        """Where a batch of ``rows`` unweighted rows goes to wait: a view of the
        row buffer (flushed first when full; :meth:`RowBuffer.commit` them once
        written), or None where it is counted now (see :mod:`.row_buffer`)."""
        pending = self._pending
        if pending is None or not pending.fits(rows):
            return None
        if pending.room < rows:
            self._flush(threads)
        return pending.space(rows)

    def _count(self, keys: np.ndarray, weights: np.ndarray | None,
               threads: int | None) -> None:
        """Count rows now, or buffer a small unweighted batch."""
        space = None if weights is not None else self._buffer_space(len(keys), threads)
        if space is None:
            self._count_now(keys, weights, threads)
        else:
            space[...] = keys
            self._pending.commit(len(keys))

    def _flush(self, threads: int | None) -> None:
        """Count the buffered rows on up to ``threads`` threads."""
        with self._lock:
            if self._pending is not None and len(self._pending):
                self._count_now(self._pending.take(), None, threads)

    def _settle(self) -> None:
        """Put every count in place: count the buffered rows and fold the dense
        table's per-thread copies in.  Every read of the counts calls this first."""
        with self._lock:
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

    def _count_now(self, keys: np.ndarray, weights: np.ndarray | None,
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
            # Part of the rows may be counted: every read now says so (see _settle).
            self._incomplete = True
            raise
        if sum(shard.memory for shard in self._shards) > self.memory_limit:
            self._spill_to_disk()

    def _count_hashed(self, keys: np.ndarray, weights: np.ndarray | None,
                      threads: int | None) -> None:
        """Count into the hash table(s); large batches into shards on several threads."""
        shards = len(self._shards)
        bits = shards.bit_length() - 1
        threads = min(threads or num_threads(), shards) \
            if len(keys) >= _PARALLEL_MIN_ROWS else 1
        if threads == 1:
            _table.count_rows(self._shards, bits, keys, weights)
        else:
            _count_in_parallel(self._shards, bits, keys, weights, threads)

    def _count_dense(self, keys: np.ndarray, weights: np.ndarray | None,
                     threads: int | None) -> None:
        """Count into the dense table.  With several threads each counts a share
        of the rows into a copy of its own (its cells are touched at random, too
        often to share), folded in by the next read; only while the copies fit
        in a quarter of the memory cap."""
        table = self._shards[0]
        threads = (threads or num_threads()) if len(keys) >= _PARALLEL_DENSE_MIN_ROWS else 1
        if threads == 1:
            _table.count_rows(self._shards, 0, keys, weights)
            return
        if threads * table.memory <= self.memory_limit // 4:
            while len(self._dense_copies) < threads - 1:
                self._dense_copies.append(_table.CountTable(table.key_bytes, self._num_neurons))
        tables = [table, *self._dense_copies[: threads - 1]]
        bounds = [len(keys) * part // len(tables) for part in range(len(tables) + 1)]
        run_parallel([
            lambda table=table, begin=begin, end=end: _table.count_rows(
                [table], 0, keys[begin:end], None if weights is None else weights[begin:end])
            for table, begin, end in zip(tables, bounds[:-1], bounds[1:])
        ])

    def _spill_to_disk(self) -> None:
        if self._spill is None:
            self._spill = SpillFiles(self._shards[0].key_bytes, directory=self.spill_dir)
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"{self.name}: {self.distinct_count:,} distinct states need more than "
                f"memory_limit={self.memory_limit:,} bytes; counts now spill to "
                f"{self._spill.path} and stay exact, but metrics get slower. Raise "
                "memory_limit (or TENSORSTATE_MEMORY_LIMIT) to keep them in memory.",
                StateSpaceMemoryWarning,
                stacklevel=4,
            )
        for shard in self._shards:
            self._spill.write(*shard.items())
        self._shards = self._new_tables()

    # -- reading ---------------------------------------------------------------
    def count_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (state_ids, counts) chunks; each distinct state is in exactly one."""
        if self._shards is None:
            return
        self._settle()
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

    def _count_arrays(self) -> Iterator[np.ndarray]:
        """The counts of :meth:`count_chunks` alone (no states to copy out), in
        arrays of a few shards each: small enough to reuse freed memory (fresh
        pages cost a fault each), large enough to keep NumPy's per-call cost low."""
        self._settle()
        if self._spill is not None:
            yield from (counts for _, counts in self.count_chunks())
            return
        shards = self._shards or []
        for first in range(0, len(shards), _SHARDS_PER_READ):
            yield np.concatenate([s.counts() for s in shards[first:first + _SHARDS_PER_READ]])

    @property
    def state_count(self) -> int:
        """Number of states seen, repeats included."""
        return self._state_count

    @property
    def num_neurons(self) -> int | None:
        """Width of the layer's states (None until the first batch)."""
        return self._num_neurons

    @property
    def distinct_count(self) -> int:
        """Number of distinct states seen (counts any buffered rows first)."""
        self._settle()
        if self._spill is None:
            return sum(shard.distinct for shard in self._shards or ())
        return sum(len(counts) for _, counts in self.count_chunks())

    @property
    def is_spilled(self) -> bool:
        """True once the counts outgrew ``memory_limit`` and went to disk (counts any
        buffered rows first)."""
        self._settle()
        return self._spill is not None

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """``(state_ids, counts)``: every distinct packed state and how often it occurred."""
        self._require_states()
        with self._lock:
            chunks = list(self.count_chunks())
        return np.concatenate([k for k, _ in chunks]), np.concatenate([c for _, c in chunks])

    def counts(self) -> np.ndarray:
        """How often each distinct state occurred (aligned with :meth:`state_ids`)."""
        return self.items()[1].astype(np.int64)

    def state_ids(self) -> np.ndarray:
        """The distinct packed states, one row each (aligned with :meth:`counts`)."""
        return self.items()[0]

    def max_entropy(self) -> int:
        """Largest possible entropy: the number of neurons."""
        self._require_states()
        return self._num_neurons

    def entropy(self, alpha=1) -> float:
        """Renyi entropy of order ``alpha`` of the states (``None``: max entropy)."""
        self._require_states()
        if alpha is None:
            return float(self.max_entropy())
        with self._lock:
            return metrics.entropy_of_chunks(self._count_arrays(), self._state_count, alpha)

    def efficiency(self, alpha1=1, alpha2=None) -> float:
        """``entropy(alpha1)`` over ``max_entropy()`` (or over ``entropy(alpha2)``)."""
        denominator = self.max_entropy() if alpha2 is None else self.entropy(alpha2)
        return metrics.ratio(self.entropy(alpha1), denominator, alpha2)

    @property
    def raw_states(self) -> np.ndarray:
        """Every packed state in arrival order (needs ``store_states`` or ``storage_path``)."""
        if self._store is None:
            raise ValueError(
                f"{self.name}: raw states are not stored; create the counter with "
                "store_states=True or storage_path=... to keep them"
            )
        return self._store.read()

    @property
    def states(self) -> np.ndarray:
        """Every state as ``bool[state_count, num_neurons]`` (needs stored raw states)."""
        raw = self.raw_states
        if self._num_neurons is None:
            return np.empty((0, 0), dtype=bool)
        return states.decompress_states(raw, self._num_neurons)

    def _require_states(self) -> None:
        if self._state_count == 0:
            raise ValueError(
                f"{self.name}: no states counted yet; run data through the model (or "
                "add() arrays) before asking for metrics"
            )

    # -- copying and pickling -------------------------------------------------
    def __getstate__(self) -> dict:
        """Counts and stored raw states travel; a disk store becomes an in-memory
        copy (two counters must not share a storage path)."""
        with self._lock:
            state = {k: v for k, v in self.__dict__.items()
                     if k not in ("_lock", "_shards", "_pending", "_dense_copies", "_spill",
                                  "_store")}
            state["_items_copy"] = self.items() if self._state_count else None
            state["_raw_copy"] = None if self._store is None else self._store.read()
            return state

    def __setstate__(self, state: dict) -> None:
        items, raw = state.pop("_items_copy"), state.pop("_raw_copy")
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._spill = None
        self._store = None if raw is None else RawStateStore()
        num_neurons = self._num_neurons
        self.reset_counts()
        if items is not None:
            self.add_counts(items[0], items[1], num_neurons)
        if raw is not None and raw.size:
            self._store.append(raw)

    def __repr__(self) -> str:
        return (
            f"StateCounter(name={self.name!r}, num_neurons={self._num_neurons}, "
            f"state_count={self._state_count})"
        )
