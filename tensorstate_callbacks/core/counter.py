"""The public counter of one layer's states: :class:`StateCounter`.

It turns arrays into packed states (:mod:`.packing`), hands them to its
counting engine (:mod:`._engine`: tables, buffers, spill, threads), computes
metrics from the counts (:mod:`.metrics`) and, when asked, keeps the raw
packed states (:mod:`.storage`).  Every probe of the integrations holds one.

A state is the firing pattern (value ``> 0``) of the neurons along one axis
at one position of the other axes; packed, neuron ``i`` is bit ``i % 8``
(least significant first) of byte ``i // 8`` (docs/architecture.md).

Example:
    >>> counter = StateCounter("fc")
    >>> counter.add(np.array([[0.5, -1.0, 2.0], [0.1, 0.0, 3.0]]))
    >>> counter.state_ids().tolist(), counter.counts().tolist()   # 1 0 1 = byte 5
    ([[5]], [2])
"""

from __future__ import annotations

import math
import os
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Integral

import numpy as np

from . import metrics, packing
from ._engine import CountEngine, IncompleteCountsError
from ._joint import JointCounts, distinct_labels
from .reduced import ReducedCounts
from .storage import RawStateStore, check_writable

__all__ = ["DEFAULT_MEMORY_LIMIT", "IncompleteCountsError", "StateCounter",
           "StateSpaceMemoryWarning", "state_divergence"]

# A label joins its states' keys as a little-endian integer of the fewest bytes
# its counter's first labels need (class indices: one byte, so keys stay narrow).
_LABEL_WIDTHS = ((1, 0, 1 << 8), (2, 0, 1 << 16), (8, -(1 << 63), (1 << 63) - 1))

DEFAULT_MEMORY_LIMIT = 1 << 30  # bytes of count tables per counter
_MAX_COUNT = (1 << 63) - 1  # counts() are int64

# Every live counter, so that a forked child can give each a lock of its own
# (one held by another thread at the fork would never be released there).
_live_counters: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for counter in list(_live_counters):
        counter._lock = threading.RLock()
        if counter._changing:  # another thread was changing it: the child's copy is torn
            for engine in (counter._engine, counter._joint):
                if engine is not None:
                    engine.fail(ChildProcessError("the process forked while another thread "
                                                  "was changing the counts"))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class StateSpaceMemoryWarning(RuntimeWarning):
    """A counter outgrew its memory cap and now keeps its counts on disk.

    Warned once per counter; its results stay exact.  Raise ``memory_limit``
    (or the environment variable ``TENSORSTATE_MEMORY_LIMIT``) to keep the
    counts in memory.  It is issued once the batch that spilled is counted:
    where warnings are errors, ``add()`` raises it with that batch counted.

    Example:
        >>> import warnings
        >>> counter = StateCounter("wide", memory_limit=4096)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     counter.add(np.random.default_rng(0).standard_normal((5000, 40)))
        >>> counter.is_spilled, caught[0].category.__name__, counter.distinct_count
        (True, 'StateSpaceMemoryWarning', 5000)
        >>> counter.reset_counts()                # removes the spill files
    """


def _check_padding(packed: np.ndarray, num_neurons: int) -> None:
    """Padding bits past the last neuron must be 0, as the packer writes them."""
    spare = -num_neurons % 8
    if spare and len(packed) and np.any(packed[:, -1] >> (8 - spare)):
        raise ValueError(
            f"packed states of {num_neurons} neurons have non-zero padding bits in their last "
            "byte; pack with tensorstate_callbacks.compress_states (or np.packbits(..., "
            "bitorder='little')) so bits past the last neuron are 0"
        )


def _check_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, Integral)
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}


def parse_bytes(text: str) -> int:
    """A number of bytes written as ``1073741824``, ``1e9``, ``512MB`` or ``4GiB``.

    Raises:
        ValueError: anything else, or a value below 1 byte.

    Example:
        >>> parse_bytes("4GiB"), parse_bytes("1e9"), parse_bytes(" 512 mb ")
        (4294967296, 1000000000, 512000000)
    """
    cleaned = text.strip().lower().replace(" ", "").replace("_", "")
    number = cleaned.rstrip("kmgtib")
    unit = cleaned[len(number):]
    try:
        value = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        value = None
    if value is None or not value >= 1 or value != value or value == float("inf"):
        raise ValueError(f"{text!r} is not a number of bytes: write it like 1073741824, 1e9, "
                         "512MB or 4GiB")
    return int(value)


def _default_memory_limit() -> int:
    configured = os.environ.get("TENSORSTATE_MEMORY_LIMIT")
    if configured is None:
        return DEFAULT_MEMORY_LIMIT
    try:
        return parse_bytes(configured)
    except ValueError as error:
        raise ValueError(f"TENSORSTATE_MEMORY_LIMIT: {error}") from None


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

    A counter may be fed from several threads (its methods hold a lock), merged
    with another one (:meth:`merge`), and pickled (counts and stored raw
    states travel).

    Args:
        name: a name for messages (probes use their probe name).
        store_states: keep every raw packed state in memory (needs zarr).
        storage_path: keep every raw packed state in a zarr array in this
            directory (new or empty; needs zarr).
        memory_limit: bytes of count tables before spilling to disk (default
            1 GiB, or the environment variable ``TENSORSTATE_MEMORY_LIMIT``).
        spill_dir: where spill files go (default: the temp directory).
        threads: the most threads one batch uses (default: the environment
            variable ``TENSORSTATE_NUM_THREADS``, or every usable core).

    Raises:
        ValueError: ``memory_limit`` or ``threads`` is not a positive integer,
            or ``storage_path`` / ``spill_dir`` cannot be written.
        ImportError: raw states are asked for and zarr is not installed.

    Example:
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
        self._engine: CountEngine | None = None
        self._joint: CountEngine | None = None
        self._warned = False
        self._changing = False  # inside _transaction (see _after_fork_in_child)
        self._lock = threading.RLock()  # hooks may feed one counter from several threads
        self.reset_states()
        _live_counters.add(self)

    # -- feeding ---------------------------------------------------------------
    def reset_states(self) -> None:
        """Forget every state seen so far, stored raw states included.

        The next batch may have another number of neurons.  The hash tables'
        memory is kept for the next states of the same width (a layer's next
        epoch): they are counted without growing the tables again.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.ones((4, 3)))
            >>> counter.reset_states()
            >>> counter.state_count, counter.num_neurons
            (0, None)
        """
        with self._lock:
            self.reset_counts()
            if self._store is not None:
                self._store.clear()

    def reset_counts(self) -> None:
        """Forget the counts (and the layer width) but keep stored raw states.

        Example:
            >>> counter = StateCounter(store_states=True)
            >>> counter.add(np.ones((4, 3)))
            >>> counter.reset_counts()
            >>> counter.state_count, counter.raw_states.shape
            (0, (4, 1))
        """
        with self._lock:
            for engine in (self._engine, getattr(self, "_joint", None)):
                if engine is not None:
                    engine.close()
            # Tables sized by these states, for the next ones of the same width.
            self._reusable_engine = (self._engine if self._engine is not None
                                     and not self._labelled and self._engine.clear() else None)
            if getattr(self, "_labelled", None):  # how the pairs of the next epoch start
                self._last_labelled = (self._state_count, len(self._label_counts))
            self._engine: CountEngine | None = None  # created by the first batch
            self._state_count = 0
            # With labels: (state, label) pairs and labels are counted too.
            self._labelled: bool | None = None  # set by the first batch
            self._joint: CountEngine | None = None
            self._label_counts: dict[int, int] = {}
            self._spill_notice: tuple | None = None  # (directory, distinct) to warn about

    def add(self, array, neuron_axis: int = -1, dtype: str | None = None, *,
            labels=None, threads: int | None = None) -> None:
        """Pack and count one batch of activations.

        Each position along the axes other than ``neuron_axis`` is one state of
        ``array.shape[neuron_axis]`` neurons.

        Args:
            array: NumPy array of any float/int/bool dtype and memory layout (read
                in place), or a CUDA array (CuPy, DLPack), packed on its GPU.
            neuron_axis: the axis whose entries are the neurons.
            dtype: ``"bfloat16"`` reads an int16 array as bfloat16 bits.
            labels: one integer per sample (along axis 0), labelling all of
                that sample's states (for :meth:`mutual_information`); either
                every batch of a counter has labels or none has.
            threads: caps the threads of this batch (default: the counter's).

        Raises:
            ValueError: the array has another number of neurons than the
                states counted before, ``neuron_axis`` is out of range, or the
                labels do not fit (one per sample, integers, all batches or none).
            TypeError: the dtype holds no numbers.

        Example:
            >>> counter = StateCounter("conv")
            >>> counter.add(np.ones((2, 3, 4, 4)), neuron_axis=1)
            >>> counter.state_count, counter.num_neurons
            (32, 3)
        """
        threads = self.threads if threads is None else _check_threads(threads)
        if labels is not None:
            with self._transaction(raw=True):
                self._add_labelled(array, neuron_axis, dtype, labels, threads)
            return
        if not isinstance(array, np.ndarray) and _is_cuda_array(array):
            self._add_own_packing(*self._pack_batch(array, neuron_axis, dtype, threads), threads)
            return
        array = packing.kernel_readable(array)
        plan = packing.layout(array.shape, array.strides, array.dtype, neuron_axis, dtype)
        with self._transaction(raw=True):
            self._check_labelled(False)
            engine = self._engine_for(plan.num_neurons)
            # Small batches are packed straight into the row buffer.
            space = engine.buffer_space(plan.num_states, threads)
            packed = packing.pack_layout(array, plan, out=space, threads=threads)
            if space is None:
                engine.count_now(packed, None, threads)
            else:
                engine.commit(plan.num_states)
            self._added(packed)

    @staticmethod
    def _pack_batch(array, neuron_axis, dtype, threads) -> tuple[np.ndarray, int]:
        """``(packed states, num_neurons)`` of a batch in an array of its own: a
        CUDA array packed on its GPU, anything else by the compiled kernel."""
        if not isinstance(array, np.ndarray) and _is_cuda_array(array):
            from ._cuda import pack_cuda

            return pack_cuda(array, neuron_axis)
        array = packing.kernel_readable(array)
        plan = packing.layout(array.shape, array.strides, array.dtype, neuron_axis, dtype)
        return packing.pack_layout(array, plan, threads=threads), plan.num_neurons

    def _add_labelled(self, array, neuron_axis, dtype, labels, threads) -> None:
        """Pack a batch, then count it with its labels (see :meth:`_count_labelled`)."""
        packed, num_neurons = self._pack_batch(array, neuron_axis, dtype, threads)
        if packing.neuron_axis_index(array.ndim, neuron_axis) == 0:
            raise ValueError(f"{self.name}: labels go with the samples along axis 0, which "
                             "here holds the neurons; pass neuron_axis of another axis")
        self._count_labelled(packed, num_neurons, labels, array.shape[0], threads)

    def _count_labelled(self, packed: np.ndarray, num_neurons: int, labels, samples: int,
                        threads) -> None:
        """Count packed states of ``samples`` samples (each one's states together,
        in order), the labels, and the (state, label) pairs."""
        labels = np.asarray(labels)
        if labels.shape != (samples,) or labels.dtype.kind not in "iub" or (
                samples and len(packed) % samples):
            raise ValueError(
                f"{self.name}: labels must be one integer per sample along axis 0: {samples} "
                f"for this batch, got {labels.dtype} {labels.shape}")
        per_sample = len(packed) // samples if samples else 0
        labels = labels.astype(np.int64, copy=False)
        values, counts = distinct_labels(labels)
        with self._lock:
            self._check_labelled(True)
            width = self._label_width(values)
            engine = self._engine_for(num_neurons)
            self._joint_for(8 * (packed.shape[1] + width)).count_labelled(
                engine, packed, labels, (values, counts), per_sample, threads)
            for value, count in zip(values.tolist(), counts.tolist()):
                self._label_counts[value] = self._label_counts.get(value, 0) + count * per_sample
            self._added(packed)

    def _label_width(self, values: np.ndarray) -> int:
        """Bytes of a label in the (state, label) keys: fixed by the first labels."""
        if self._joint is not None:
            width = self._joint.key_bytes - self._engine.key_bytes
        else:
            width = next(bytes_ for bytes_, low, high in _LABEL_WIDTHS
                         if not len(values) or low <= values.min() and values.max() < high)
        low, high = next((low, high) for bytes_, low, high in _LABEL_WIDTHS if bytes_ == width)
        if len(values) and (values.min() < low or values.max() >= high):
            raise ValueError(f"{self.name}: labels {values.min()}..{values.max()} do not fit the "
                             f"{width}-byte labels of the first batches (in [{low}, {high})); "
                             "reset_states() to count with these labels")
        return width

    def _check_labelled(self, labelled: bool) -> None:
        if self._labelled is None:
            self._labelled = labelled
        elif self._labelled != labelled:
            had = "had labels" if self._labelled else "had none"
            raise ValueError(f"{self.name}: every batch of a counter has labels or none has; "
                             f"this one {'has' if labelled else 'has none'}, earlier ones {had} "
                             "(reset_states() to start again)")

    def add_packed(self, packed: np.ndarray, num_neurons: int, *, labels=None,
                   threads: int | None = None) -> None:
        """Count states that are already packed.

        Args:
            packed: ``uint8[n, ceil(num_neurons / 8)]``, bits past the last neuron 0.
            num_neurons: the width of the states.
            labels: one integer per sample, the rows of each sample together
                and in order (as in :meth:`add`).
            threads: as in :meth:`add`.

        Raises:
            ValueError: wrong dtype, shape or padding bits, or another width
                than the states counted before.

        Example:
            >>> counter = StateCounter()
            >>> counter.add_packed(np.array([[5], [5]], dtype=np.uint8), num_neurons=3)
            >>> counter.distinct_count
            1
        """
        threads = self.threads if threads is None else _check_threads(threads)
        packed = np.ascontiguousarray(packed)
        num_bytes = (num_neurons + 7) // 8
        if packed.ndim != 2 or packed.dtype != np.uint8 or packed.shape[1] != num_bytes:
            raise ValueError(
                f"packed states of {num_neurons} neurons must be uint8 with shape "
                f"(n, {num_bytes}), got {packed.dtype} {packed.shape}"
            )
        _check_padding(packed, num_neurons)
        if labels is not None:
            with self._transaction(raw=True):
                self._count_labelled(packed, num_neurons, labels, len(np.asarray(labels)),
                                     threads)
            return
        self._add_own_packing(packed, num_neurons, threads)

    def _add_own_packing(self, packed: np.ndarray, num_neurons: int,
                         threads: int | None) -> None:
        """Count packed states whose shape and padding are known to be right."""
        with self._transaction(raw=True):
            self._check_labelled(False)
            self._engine_for(num_neurons).count(packed, None, threads)
            self._added(packed)

    def _added(self, packed: np.ndarray) -> None:
        """Book a counted batch: its states, and its raw rows where they are kept."""
        self._state_count += packed.shape[0]
        if self._store is not None:
            self._store.append(packed)

    def merge(self, other: StateCounter) -> None:
        """Add every count of ``other`` (same layer width) to this counter, exactly.

        ``other`` is left as it is; its raw states are not copied.

        Args:
            other: another counter of states of the same width.

        Raises:
            ValueError: ``other`` is this counter, or holds states of another width.
            OverflowError: the merged counts would pass 2**63 - 1 states.

        Example:
            >>> a, b = StateCounter("a"), StateCounter("b")
            >>> a.add(np.array([[1.0, 0.0]])); b.add(np.array([[0.0, 1.0]]))
            >>> a.merge(b); a.state_count, a.distinct_count
            (2, 2)
        """
        if other is self:
            raise ValueError(f"{self.name}: cannot merge a counter into itself")
        # Both locks, always in one order: a.merge(b) and b.merge(a) at once cannot deadlock.
        first, second = sorted((self, other), key=id)
        with first._lock, second._lock, self._transaction():
            if other._engine is None:
                return
            self._check_room(other._state_count)
            self._check_labelled(bool(other._labelled))
            engine = self._engine_for(other.num_neurons)
            for keys, counts in other.count_chunks():
                engine.count(keys, counts, self.threads)
            if other._joint is not None:
                joint = self._joint_for(other._joint.num_neurons)
                for keys, counts in other._joint.count_chunks():
                    joint.count(keys, counts, self.threads)
                for value, count in other._label_counts.items():
                    self._label_counts[value] = self._label_counts.get(value, 0) + count
            self._state_count += other._state_count

    def add_counts(self, state_ids: np.ndarray, counts: np.ndarray, num_neurons: int) -> None:
        """Add packed states with how often each occurred (e.g. from another process).

        Args:
            state_ids: ``uint8[n, ceil(num_neurons / 8)]`` packed states.
            counts: ``n`` integers >= 0, one per row of ``state_ids``.
            num_neurons: the width of the states.

        Raises:
            ValueError: wrong dtype or shape, padding bits set, negative
                counts, or another width than the states counted before.
            OverflowError: the counts would pass 2**63 - 1 states.

        Example:
            >>> counter = StateCounter()
            >>> counter.add_counts(np.array([[1], [2]], np.uint8), np.array([3, 1]), 2)
            >>> counter.state_count
            4
        """
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
        if num_neurons < 1:
            raise ValueError(f"{self.name}: num_neurons must be >= 1, got {num_neurons}")
        keep = counts > 0
        added = _exact_sum(counts)
        with self._transaction():
            self._check_room(added)
            self._check_labelled(False)
            self._engine_for(num_neurons).count(
                np.ascontiguousarray(state_ids[keep]),
                np.ascontiguousarray(counts[keep], dtype=np.uint64), self.threads)
            self._state_count += added

    def _engine_for(self, num_neurons: int) -> CountEngine:
        """The engine counting states of ``num_neurons`` neurons (made by the
        first batch); a ValueError for states of another width."""
        if self._engine is None:
            reusable, self._reusable_engine = self._reusable_engine, None
            self._engine = (reusable if reusable is not None
                            and reusable.num_neurons == num_neurons
                            else CountEngine(self.name, num_neurons, self.memory_limit,
                                             self.spill_dir, self.threads, self._warn_spilled))
        elif num_neurons != self._engine.num_neurons:
            raise ValueError(
                f"{self.name}: got states of {num_neurons} neurons, but this counter holds "
                f"states of {self._engine.num_neurons}; call reset_states() before changing "
                "layers or check neuron_axis"
            )
        return self._engine

    def _joint_for(self, width: int) -> CountEngine:
        """The engine counting (state, label) keys of ``width`` bits (made by the
        first labelled batch); a ValueError for keys of another label width."""
        if self._joint is None:
            state_bytes = None if self._engine is None else self._engine.key_bytes
            self._joint = JointCounts(self.name, self.num_neurons, width // 8 - (state_bytes or 0),
                                      self.memory_limit, self.spill_dir, self.threads,
                                      self._warn_spilled,
                                      last_epoch=getattr(self, "_last_labelled", None))
        elif width != self._joint.num_neurons:
            raise ValueError(f"{self.name}: cannot merge counts whose labels have another "
                             "width (label values beyond 255 or 65535 in one counter only); "
                             "label both with values of one range")
        return self._joint

    def _warn_spilled(self, directory, distinct: int) -> None:
        """The engines' spill callback: noted here, warned by :meth:`_transaction`
        once the counts are consistent."""
        if not self._warned and self._spill_notice is None:
            self._spill_notice = (directory, distinct)

    def _check_room(self, added: int) -> None:
        if self._state_count + added > _MAX_COUNT:
            raise OverflowError(
                f"{self.name}: {self._state_count:,} + {added:,} states pass the 2**63 - 1 a "
                "count can hold; count fewer states per counter (reset_states() between "
                "measurements)")

    @contextmanager
    def _transaction(self, raw: bool = False):
        """Holds the lock around a change of the counts (``raw``: one that also
        appends raw states).

        An exception inside leaves the counter exactly as it was when nothing
        had been counted yet, and marks it incomplete otherwise (every read
        then raises :class:`IncompleteCountsError` until :meth:`reset_states`).
        The spill warning is issued after the change, the counts consistent.
        """
        with self._lock:
            if raw and self._store is not None:
                self._store.check_appendable()
            engines = (self._engine, self._joint)
            before = (self._state_count, self._labelled, *_changes(*engines))
            self._changing = True
            try:
                yield
            except BaseException as error:
                now = (self._engine, self._joint)
                if (self._state_count, self._labelled, *_changes(*engines)) == before and all(
                        new is old or new.changes == 0 for new, old in zip(now, engines)):
                    self._engine, self._joint = engines  # nothing counted: as before
                    self._labelled = before[1]
                else:
                    for engine in now:
                        if engine is not None:
                            engine.fail(error)
                raise
            finally:
                self._changing = False
            notice, self._spill_notice = self._spill_notice, None
        if notice is not None and not self._warned:
            self._warned = True
            warnings.warn(
                f"{self.name}: {notice[1]:,} distinct states need more than "
                f"memory_limit={self.memory_limit:,} bytes; counts now spill to "
                f"{notice[0]} and stay exact, but metrics get slower. Raise "
                "memory_limit (or TENSORSTATE_MEMORY_LIMIT) to keep them in memory.",
                StateSpaceMemoryWarning,
                stacklevel=4,
            )

    # -- reading ---------------------------------------------------------------
    def count_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(state_ids, counts)`` chunks; each distinct state is in exactly one.

        Counts are read chunk by chunk, so a counter spilled to disk never
        loads all its states at once.  Yields nothing before the first batch.
        The counter's lock is held until the iteration ends (or the iterator
        is closed): other threads' adds wait meanwhile.

        Yields:
            ``(uint8[k, ceil(num_neurons / 8)], uint64[k])``: packed states and
            how often each occurred.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.array([[1.0], [1.0]]))
            >>> [(k.tolist(), c.tolist()) for k, c in counter.count_chunks()]
            [([[1]], [2])]
        """
        with self._lock:
            if self._engine is not None:
                yield from self._engine.count_chunks()

    @property
    def state_count(self) -> int:
        """Number of states seen, repeats included.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.ones((2, 3, 5)), neuron_axis=1)   # 2 * 5 states of 3 neurons
            >>> counter.state_count
            10
        """
        return self._state_count

    @property
    def num_neurons(self) -> int | None:
        """Width of the layer's states (None until the first batch).

        Example:
            >>> counter = StateCounter()
            >>> counter.num_neurons is None
            True
            >>> counter.add(np.ones((2, 3, 5)), neuron_axis=1)
            >>> counter.num_neurons
            3
        """
        return None if self._engine is None else self._engine.num_neurons

    @property
    def distinct_count(self) -> int:
        """Number of distinct states seen (counts any buffered rows first).

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
            >>> counter.distinct_count
            2
        """
        with self._lock:
            return 0 if self._engine is None else self._engine.distinct

    @property
    def incomplete(self) -> str | None:
        """Why the counts are incomplete (every read raises
        :class:`IncompleteCountsError` until :meth:`reset_states`), or None.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.ones((4, 3)))
            >>> counter.incomplete is None
            True
        """
        with self._lock:
            for engine in (self._engine, self._joint):
                if engine is not None and engine.failure is not None:
                    return engine.failure
            return None

    @property
    def is_spilled(self) -> bool:
        """True once the counts outgrew ``memory_limit`` and went to disk.

        See :class:`StateSpaceMemoryWarning`.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.ones((4, 3)))
            >>> counter.is_spilled
            False
        """
        with self._lock:
            return self._engine is not None and self._engine.is_spilled

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """Every distinct packed state and how often it occurred.

        The order of the rows is the tables' own (not arrival order); the two
        arrays are aligned.

        Returns:
            ``(state_ids, counts)``: ``uint8[distinct, ceil(num_neurons / 8)]``
            and ``uint64[distinct]``.

        Raises:
            ValueError: no state counted yet.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
            >>> state_ids, counts = counter.items()
            >>> sorted(zip(state_ids[:, 0].tolist(), counts.tolist()))   # 0b101, 0b010
            [(2, 1), (5, 2)]
        """
        self._require_states()
        with self._lock:
            chunks = list(self.count_chunks())
        return np.concatenate([k for k, _ in chunks]), np.concatenate([c for _, c in chunks])

    def counts(self) -> np.ndarray:
        """How often each distinct state occurred (aligned with :meth:`state_ids`).

        Returns:
            ``int64[distinct_count]``, summing to :attr:`state_count`.

        Raises:
            ValueError: no state counted yet.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.array([[1.0], [1.0], [0.0]]))
            >>> sorted(counter.counts().tolist())
            [1, 2]
        """
        return self.items()[1].astype(np.int64)

    def state_ids(self) -> np.ndarray:
        """The distinct packed states, one row each (aligned with :meth:`counts`).

        Returns:
            ``uint8[distinct_count, ceil(num_neurons / 8)]``; neuron ``i`` is
            bit ``i % 8`` of byte ``i // 8``.

        Raises:
            ValueError: no state counted yet.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.array([[1.0, -1.0, 1.0]]))
            >>> counter.state_ids()
            array([[5]], dtype=uint8)
        """
        return self.items()[0]

    def max_entropy(self) -> int:
        """Largest possible entropy: the number of neurons.

        Raises:
            ValueError: no state counted yet.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.ones((4, 6)))
            >>> counter.max_entropy()
            6
        """
        self._require_states()
        return self._engine.num_neurons

    def entropy(self, alpha=1, estimator: str = "plugin") -> float:
        """Renyi entropy (base 2) of the distribution of the states counted.

        Args:
            alpha: the order: ``1`` Shannon, ``0`` the log of the number of
                distinct states, ``math.inf`` the min-entropy, any number >= 0;
                ``None`` gives :meth:`max_entropy`.
            estimator: ``"plugin"`` (default, TensorState's), or for ``alpha=1``
                ``"miller_madow"`` or ``"chao_shen"`` (see
                :func:`tensorstate_callbacks.core.metrics.entropy`).

        Returns:
            The entropy in bits.

        Raises:
            ValueError: no state counted yet, or ``alpha`` is not a number >= 0.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]]))
            >>> counter.entropy(), counter.entropy(alpha=0), counter.entropy(alpha=None)
            (1.5, 1.584962500721156, 2.0)
        """
        self._require_states()
        if alpha is None:
            return float(self.max_entropy())
        with self._lock:
            if metrics.sums_suffice(alpha, estimator):
                return metrics.entropy_from_sums(self._engine.sums(), self._state_count,
                                                 alpha, estimator)
            return metrics.entropy_of_chunks(self._engine.count_arrays, self._state_count,
                                             alpha, estimator)

    def efficiency(self, alpha1=1, alpha2=None, estimator: str = "plugin") -> float:
        """The layer's efficiency: ``entropy(alpha1)`` over ``max_entropy()``.

        Args:
            alpha1: order of the entropy in the numerator.
            alpha2: ``None`` divides by the number of neurons; a number divides
                by ``entropy(alpha2)`` instead.
            estimator: of the numerator's entropy (see :meth:`entropy`).

        Returns:
            The efficiency, between 0 and 1 when ``alpha2`` is None.

        Raises:
            ValueError: no state counted yet, or the denominator is 0 (a single
                distinct state with ``alpha2`` set).

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
            >>> counter.efficiency(), counter.efficiency(alpha1=1, alpha2=0)
            (1.0, 1.0)
        """
        denominator = self.max_entropy() if alpha2 is None else self.entropy(alpha2)
        return metrics.ratio(self.entropy(alpha1, estimator), denominator, alpha2)

    # -- sample limits, neurons, labels ------------------------------------------
    def coverage(self) -> float:
        """Good-Turing coverage ``1 - f1 / N`` of the states seen (``f1``: states
        seen once): near 1, the sample has seen most of what the layer does; near
        0, most states were seen once and more data would show new ones.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]]))
            >>> counter.coverage()
            0.5
        """
        self._require_states()
        with self._lock:
            singletons = self._engine.sums().singletons
        return 1.0 - singletons / self._state_count

    def efficiency_ceiling(self) -> float:
        """The largest efficiency this many states can show, ``log2(min(2**n, N)) / n``.

        A layer whose efficiency sits at its ceiling reports its sample size, not
        how it uses its neurons (see docs/reading-the-numbers.md).

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.random.default_rng(0).normal(size=(2000, 100)))
            >>> round(counter.efficiency_ceiling(), 4), round(counter.efficiency(), 4)
            (0.1097, 0.1097)
        """
        self._require_states()
        return metrics.efficiency_ceiling(self._engine.num_neurons, self._state_count)

    def firing_rates(self) -> np.ndarray:
        """For each neuron, the fraction of states in which it fires (exact).

        0 marks a dead neuron, 1 one that always fires.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.array([[1.0, 0.0, 2.0], [1.0, 0.0, -1.0]]))
            >>> counter.firing_rates().tolist()
            [1.0, 0.0, 0.5]
        """
        return self.firing_counts() / self._state_count

    def firing_counts(self) -> np.ndarray:
        """For each neuron, the number of states in which it fires (exact below 2**53).

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.array([[1.0, 0.0, 2.0], [1.0, 0.0, -1.0]]))
            >>> counter.firing_counts().tolist()
            [2, 0, 1]
        """
        self._require_states()
        with self._lock:
            return self._engine.firing_counts().astype(np.int64)

    @property
    def has_labels(self) -> bool:
        """True when the states were counted with ``labels=`` (see :meth:`add`)."""
        return bool(self._labelled)

    def label_counts(self) -> dict[int, int]:
        """How many states each label labelled (empty without labels).

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.ones((3, 2)), labels=np.array([4, 4, 7]))
            >>> counter.label_counts()
            {4: 2, 7: 1}
        """
        with self._lock:
            return dict(self._label_counts)

    def joint_count_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(keys, counts)`` chunks of the (state, label) pairs counted with
        labels, like :meth:`count_chunks`; nothing without labels.

        A key is the packed state followed by its label, a little-endian integer
        of ``keys.shape[1] - ceil(num_neurons / 8)`` bytes.

        Example:
            >>> counter = StateCounter()
            >>> counter.add(np.ones((2, 3)), labels=np.array([5, 5]))
            >>> [(k.tolist(), c.tolist()) for k, c in counter.joint_count_chunks()]
            [([[7, 5]], [2])]
        """
        with self._lock:
            if self._joint is not None:
                yield from self._joint.count_chunks()

    def mutual_information(self) -> float:
        """I(state; label) in bits, plug-in and exact: ``H(S) + H(Y) - H(S, Y)``
        over the states counted with ``add(..., labels=...)``.

        Raises:
            ValueError: no state counted yet, or the states came without labels.

        Example:
            >>> counter = StateCounter()
            >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
            >>> counter.add(x, labels=np.array([0, 1, 0, 1]))
            >>> counter.mutual_information()
            1.0
        """
        self._require_states()
        if not self._labelled:
            raise ValueError(f"{self.name}: no labels were counted; pass labels= to add() "
                             "(one integer per sample) to measure mutual information")
        with self._lock:
            total = self._state_count
            states = metrics.entropy_from_sums(self._engine.sums(), total)
            joint = metrics.entropy_from_sums(self._joint.sums(), total)
            labels = metrics.entropy_from_sums(_sums_of_few(list(self._label_counts.values())),
                                               total)
        return max(states + labels - joint, 0.0) + 0.0

    @property
    def raw_states(self) -> np.ndarray:
        """Every packed state in arrival order (needs ``store_states`` or ``storage_path``).

        Returns:
            ``uint8[state_count, ceil(num_neurons / 8)]``.

        Raises:
            ValueError: the counter keeps no raw states.

        Example:
            >>> counter = StateCounter(store_states=True)
            >>> counter.add(np.array([[1.0, -1.0, 2.0], [0.0, 3.0, 0.0]]))
            >>> counter.raw_states.ravel().tolist()     # 0b101, 0b010
            [5, 2]
        """
        if self._store is None:
            raise ValueError(
                f"{self.name}: raw states are not stored; create the counter with "
                "store_states=True or storage_path=... to keep them"
            )
        with self._lock:
            return self._store.read()

    @property
    def states(self) -> np.ndarray:
        """Every state as ``bool[state_count, num_neurons]`` (needs stored raw states).

        Raises:
            ValueError: the counter keeps no raw states.

        Example:
            >>> counter = StateCounter(store_states=True)
            >>> counter.add(np.array([[1.0, -1.0, 2.0], [0.0, 3.0, 0.0]]))
            >>> counter.states.tolist()
            [[True, False, True], [False, True, False]]
        """
        raw = self.raw_states
        if self._engine is None:
            return np.empty((0, 0), dtype=bool)
        return packing.decompress_states(raw, self._engine.num_neurons)

    def _require_states(self) -> None:
        """Raise unless there are counts to read: none yet, or incomplete ones."""
        for engine in (self._engine, self._joint):
            if engine is not None:
                engine.check()
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
                     if k not in ("_lock", "_engine", "_joint", "_store", "_reusable_engine")}
            state["_joint_copy"] = None if self._joint is None else (
                self._joint.num_neurons, *_concatenated(self._joint.count_chunks(),
                                                        self._joint.key_bytes))
            state["_items_copy"] = self.items() if self._state_count else None
            state["_num_neurons"] = self.num_neurons
            state["_raw_copy"] = None if self._store is None else self._store.read()
            return state

    def __setstate__(self, state: dict) -> None:
        items, raw = state.pop("_items_copy"), state.pop("_raw_copy")
        num_neurons, joint = state.pop("_num_neurons"), state.pop("_joint_copy", None)
        labelled, label_counts = state.pop("_labelled", None), state.pop("_label_counts", {})
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._changing = False
        _live_counters.add(self)
        self._engine = self._joint = None
        self._store = None if raw is None else RawStateStore()
        self.reset_counts()
        if items is not None:
            self._engine_for(num_neurons).count(items[0], items[1].astype(np.uint64),
                                                self.threads)
            self._state_count = int(items[1].sum())
        if joint is not None:
            self._joint_for(joint[0]).count(joint[1], joint[2].astype(np.uint64), self.threads)
        self._labelled, self._label_counts = labelled, label_counts
        if raw is not None and raw.size:
            self._store.append(raw)

    def __repr__(self) -> str:
        return (
            f"StateCounter(name={self.name!r}, num_neurons={self.num_neurons}, "
            f"state_count={self._state_count})"
        )


def _changes(*engines) -> list[int]:
    """How many counting calls each engine (or None) has begun."""
    return [-1 if engine is None else engine.changes for engine in engines]


def _exact_sum(counts: np.ndarray) -> int:
    """The sum of non-negative integer counts as a Python int (no wrap-around)."""
    if not counts.size or int(counts.max()) < _MAX_COUNT // counts.size:
        return int(counts.sum(dtype=np.uint64))
    return sum(counts.tolist())


def _sums_of_few(counts: list[int]) -> metrics.CountSums:
    """The :class:`~.metrics.CountSums` of a few counts > 0 (a counter's labels),
    in plain Python where they are few (NumPy's cost per call would weigh more)."""
    if len(counts) > 256:
        return metrics.sums_of_counts([np.array(counts, dtype=np.int64)])
    return metrics.CountSums(len(counts), counts.count(1), max(counts, default=0),
                             math.fsum(c * math.log2(c) for c in counts if c > 1))


def _concatenated(chunks, key_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    chunks = list(chunks)
    if not chunks:
        return np.empty((0, key_bytes), np.uint8), np.empty(0, np.uint64)
    return np.concatenate([k for k, _ in chunks]), np.concatenate([c for _, c in chunks])


def state_divergence(a: StateCounter, b: StateCounter) -> float:
    """Jensen-Shannon divergence in bits between the state distributions of two
    counters of one width: 0 when they are the same, 1 when they share no state
    (e.g. one layer's states at two epochs: how much it changed).

    Raises:
        ValueError: a counter is empty, or their widths differ.

    Example:
        >>> a, b = StateCounter("a"), StateCounter("b")
        >>> a.add(np.array([[1.0, 0.0], [0.0, 1.0]])); b.add(np.array([[1.0, 0.0], [1.0, 0.0]]))
        >>> round(state_divergence(a, b), 4)
        0.3113
    """
    if a.num_neurons != b.num_neurons or not a.state_count or not b.state_count:
        raise ValueError(f"state_divergence needs two non-empty counters of one width, got "
                         f"{a!r} and {b!r}")
    if isinstance(b, ReducedCounts):  # spread over processes: computed by their merge
        return b.divergence_from(a)
    keys_a, counts_a = a.items()
    keys_b, counts_b = b.items()
    keys = np.concatenate([keys_a, keys_b])
    rows = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel()
    _, index = np.unique(rows, return_inverse=True)
    aligned = np.zeros((2, int(index.max()) + 1), dtype=np.float64)
    np.add.at(aligned[0], index[:len(keys_a)], counts_a)
    np.add.at(aligned[1], index[len(keys_a):], counts_b)
    return metrics.js_divergence(aligned[0], aligned[1])
