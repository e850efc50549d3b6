"""Counts of (state, label) pairs, for a counter's mutual information.

A :class:`JointCounts` keeps the pairs of one counter in one of three layouts:

- *words*: a narrow layer's pairs (states of at most 20 neurons) start as
  32-bit words, the state and its label's index, appended in arrival order
  while they fit a quarter of the memory cap; the states are counted in their
  own table as without labels, and the pairs' sums are made at the next read
  by a counting sort of the words (``_table.word_sums``: a few sequential
  passes, where a count per pair in a table per label touches a cache line
  of its own in tens of MiB).  That pays while the words are fewer than a
  sixteenth of the slabs' cells (below); past that (a counter whose last
  epoch had more starts with slabs), past their memory budget, when changed
  words are read a fourth time, or for merging and pickling, they move to
- *slabs*: while the states fit a dense table (narrow layers) and one dense
  table per label fits a quarter of the memory cap, each label has a dense
  table of its own (its "slab", a byte a count, and what passes 255 in
  32-bit cells made then: a slab whose total would pass 2**32 - 1 moves
  every pair to the hashed layout) and a state counts into its label's slab
  alone (LeNet's ``conv_1``: 20 neurons, 10 labels, 10 MiB of bytes, which
  stay in the last-level cache).  The states' own dense table is then the sum of the slabs, made
  when it is next read or counted into
  (:meth:`~._engine.CountEngine.derive_from`), in a pass that also tallies
  the pairs' counts for their sums: a labelled state costs one count, as an
  unlabelled one;
- *hashed*: otherwise a :class:`~._engine.CountEngine` of (state, label)
  keys, the packed state followed by the label in a few bytes (the first
  label past the slabs' budget moves the slabs' counts there).

Either way it yields the pairs as ``(state bytes + label bytes)`` keys, so
that merging, pickling and spilling see one format.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import _table
from ._engine import CountEngine, IncompleteCountsError, _failure
from .metrics import CountSums
from .packing import num_threads

# Below this many rows a labelled batch is counted into its slabs on one thread;
# so is a batch of fewer rows a sample than the second: each thread reads every
# sample's label to find its own (see ext/ts_dense.h), which costs more than
# counting a few rows, and misses the branch half the time on two threads.
_PARALLEL_MIN_ROWS = 1 << 16
_PARALLEL_MIN_PER_SAMPLE = 16
# Labels in [0, _SMALL_LABELS) (class indices) are told apart by a count, not a sort.
_SMALL_LABELS = 1 << 16
_SLAB_MAX_TOTAL = (1 << 32) - 1  # a slab's counts pass their byte in 32-bit cells
_WORD_BITS = 32  # a buffered (state, label) pair: the state, then its label's index
_WORD_BYTES = 12  # a word's memory, with the scratch of its read (see _words_fit)
_WORD_READS = 3  # reads of changed words that they stay words for (see sums)
_SLAB_CELLS_PER_WORD = 16  # words pay below a sixteenth of the slabs' cells
_NO_PAIRS = CountSums(0, 0, 0, 0.0)


def _small(labels: np.ndarray) -> bool:
    return bool(len(labels)) and labels.min() >= 0 and labels.max() < _SMALL_LABELS


def distinct_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)`` of int64 labels as ``np.unique`` gives them, without
    sorting class indices.

    >>> [part.tolist() for part in distinct_labels(np.array([3, 1, 3, 3]))]
    [[1, 3], [1, 3]]
    """
    counts = _table.label_counts(np.ascontiguousarray(labels, np.int64), _SMALL_LABELS)
    if counts is not None:
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(labels, return_counts=True)


def _index_of(labels: np.ndarray, values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``index[i]`` for each label equal to ``values[i]`` (every label is one of
    the sorted ``values``): a table lookup for class indices, else a search."""
    if _small(values):
        table = np.zeros(int(values[-1]) + 1, index.dtype)
        table[values] = index
        return table[labels]
    return index[np.searchsorted(values, labels)]


class JointCounts:
    """Exact counts of (state, label) pairs, within a memory cap.

    Not thread-safe: the owning counter serialises every call.

    Args:
        name: for messages.
        state_neurons: neurons of a state (None: unknown, hashed layout).
        label_bytes: bytes of a label in the keys (1, 2 or 8: see the counter).
        memory_limit, spill_dir, threads, on_spill: as for a CountEngine.
        last_epoch: ``(states, labels)`` that the counter's previous
            measurement counted, or None: too many for words start in slabs.

    >>> states = CountEngine("fc", num_neurons=3, memory_limit=1 << 30)
    >>> joint = JointCounts("fc", state_neurons=3, label_bytes=1, memory_limit=1 << 30)
    >>> keys = np.array([[5], [5], [1]], np.uint8)
    >>> labels = np.array([7, 7, 2])
    >>> joint.count_labelled(states, keys, labels, distinct_labels(labels), 1, 1)
    >>> [(keys.tolist(), counts.tolist()) for keys, counts in joint.count_chunks()]
    [([[1, 2]], [1]), ([[5, 7]], [2])]
    >>> [counts.tolist() for counts in states.count_arrays()]   # states 1 and 5
    [[1, 2]]
    """

    def __init__(self, name: str, state_neurons: int | None, label_bytes: int,
                 memory_limit: int, spill_dir=None, threads: int | None = None,
                 on_spill=None, last_epoch: tuple[int, int] | None = None):
        self.name = name
        self.label_bytes = label_bytes
        self.state_neurons = state_neurons
        self.state_bytes = None if state_neurons is None else (state_neurons + 7) // 8
        self.memory_limit = memory_limit
        self._engine_args = (spill_dir, threads, on_spill)
        self.threads = threads
        self._slab_index: dict[int, int] = {}  # label -> index in _slabs
        self._slabs: list = []
        self._totals: list[int] = []  # pairs counted into each slab
        self._hashed: CountEngine | None = None
        self.changes = 0  # counting calls begun (as CountEngine.changes)
        self.stale = False  # slabs counted since the states' table was last their sum
        self._states: CountEngine | None = None  # the states' engine, while it derives
        self.failure: str | None = None  # why the slabs' counts are incomplete
        self._sums: CountSums | None = None  # of the pairs, once read (see sums)
        # the words layout: the words in arrival order, each label's index in
        # them, and the reads of changed words; None once the pairs moved on
        self._words: np.ndarray | None = None  # room for more: _buffered are words
        self._buffered = 0
        self._word_index: dict[int, int] = {}
        self._word_reads = 0
        if not self._slabs_fit(1):
            self._hash_slabs()
        elif state_neurons < _WORD_BITS - 1 and (
                last_epoch is None or last_epoch[0] <= self._words_pay(last_epoch[1])):
            # room for as many words as the last measurement had (within the cap)
            expected = 0 if last_epoch is None else last_epoch[0]
            self._words = _table.word_buffer(
                min(expected, self.memory_limit // 4 // _WORD_BYTES))

    @property
    def num_neurons(self) -> int:
        """Bits of a (state, label) key: the state's bytes and the label's."""
        return 8 * self.key_bytes

    @property
    def key_bytes(self) -> int:
        """Bytes of a (state, label) key."""
        if self._hashed is not None:
            return self._hashed.key_bytes
        return self.state_bytes + self.label_bytes

    def _slabs_fit(self, slabs: int) -> bool:
        """True while ``slabs`` dense tables (and what they keep as they
        count: see ext/ts_dense.h) fit a quarter of the memory cap."""
        bits = self.state_neurons
        return (bits is not None and bits <= _table.DENSE_MAX_BITS
                and slabs * _table.narrow_memory(bits) <= self.memory_limit // 4)

    def _hash_slabs(self) -> None:
        """From now on count into a hash engine, which takes the slabs' counts
        (and the states are counted in their own table again)."""
        if self._states is not None:
            self._states.settle()  # its table takes the slabs' sum first
            self._states.derive_from(None)
            self._states = None
        width = 8 * (self.label_bytes + (self.state_bytes or 0))
        slabs = list(self._slab_chunks())
        self._hashed = CountEngine(f"{self.name} (state, label)", width, self.memory_limit,
                                   *self._engine_args, histograms=False)
        self._slabs, self._slab_index, self._totals = [], {}, []
        self._sums = None
        for keys, counts in slabs:
            self._hashed.count(keys, counts, self.threads)

    def _slabs_of(self, values: np.ndarray, added: list[int]) -> np.ndarray | None:
        """The slab index of each of the distinct label ``values`` (new slabs
        made) that ``added`` pairs are about to be counted with, or None once
        the slabs would outgrow their memory budget or their counts 2**32 - 1
        (the counts then move to a hash engine)."""
        values = values.tolist()
        new = [value for value in values if value not in self._slab_index]
        totals = [self._totals[self._slab_index[value]] if value in self._slab_index else 0
                  for value in values]
        if not self._slabs_fit(len(self._slabs) + len(new)) or any(
                total + count > _SLAB_MAX_TOTAL for total, count in zip(totals, added)):
            self._hash_slabs()
            return None
        for value in new:
            self._slab_index[value] = len(self._slabs)
            self._slabs.append(_table.CountTable(self.state_bytes, self.state_neurons, True))
            self._totals.append(0)
        index = [self._slab_index[value] for value in values]
        for slab, count in zip(index, added):
            self._totals[slab] += count
        return np.array(index, np.int32)

    def _label_columns(self, labels: np.ndarray) -> np.ndarray:
        """Each label as its ``label_bytes`` little-endian bytes, one row each."""
        as_bytes = np.asarray(labels, dtype="<i8").view(np.uint8).reshape(-1, 8)
        return as_bytes[:, :self.label_bytes]

    def check(self) -> None:
        """Raise :class:`~._engine.IncompleteCountsError` if the counts are incomplete."""
        if self._hashed is not None:
            self._hashed.check()
        if self.failure is not None:
            raise IncompleteCountsError(self.failure)

    def fail(self, error: BaseException) -> None:
        """Mark the counts incomplete because of ``error`` (the first cause stays)."""
        if self._hashed is not None:
            self._hashed.fail(error)
        elif self.failure is None:
            self.failure = _failure(f"{self.name} (state, label)", error)

    # -- counting --------------------------------------------------------------
    def count_labelled(self, engine: CountEngine, states: np.ndarray, labels: np.ndarray,
                       distinct: tuple[np.ndarray, np.ndarray], per_sample: int,
                       threads: int | None) -> None:
        """Count packed ``states`` (``per_sample`` rows per sample, each sample's
        rows together) with the int64 ``labels`` of their samples (``distinct``:
        their :func:`distinct_labels`), and the states alone into ``engine``
        (the counter's, of a dense table while the pairs go to slabs)."""
        self.changes += 1
        self._sums = None
        if not len(labels):
            return
        values, counts = distinct
        engine.read_with(self)
        if self._words is not None:
            index = self._word_indices(values)
            if index is not None and self._words_fit(len(states)) and (
                    self._buffered + len(states) <= self._words_pay(len(self._word_index))):
                engine.count(states, None, threads)
                _table.pair_words(states, max(per_sample, 1), _index_of(labels, values, index),
                                  self.state_neurons, self._room_for_words(len(states)))
                self._buffered += len(states)
                return
            self._words_to_slabs()
        if self._hashed is None:
            slab_of_value = self._slabs_of(values, (counts * per_sample).tolist())
            if slab_of_value is not None:
                slab_of = _index_of(labels, values, slab_of_value)
                threads = (threads or num_threads()) if (
                    len(states) >= _PARALLEL_MIN_ROWS
                    and per_sample >= _PARALLEL_MIN_PER_SAMPLE) else 1
                self._states = engine
                engine.derive_from(self)
                self.stale = True
                _table.count_dense_slabs(self._slabs, states, max(per_sample, 1), slab_of,
                                         threads)
                return
        engine.count(states, None, threads)
        label_columns = np.repeat(self._label_columns(labels), per_sample, axis=0)
        self._hashed.count(np.concatenate([states, label_columns], axis=1), None, threads)

    def count(self, keys: np.ndarray, weights: np.ndarray | None, threads: int | None) -> None:
        """Count (state, label) keys (``weights``: a uint64 count per row, or
        None for 1 each), as :meth:`count_chunks` yields them."""
        self.changes += 1
        self._sums = None
        if not len(keys):
            return
        self._words_to_slabs()
        if self._hashed is None:
            label_part = np.zeros((len(keys), 8), np.uint8)
            label_part[:, :self.label_bytes] = keys[:, self.state_bytes:]
            labels = label_part.view("<i8").reshape(-1)
            order = np.argsort(labels, kind="stable")
            values, starts = np.unique(labels[order], return_index=True)
            groups = np.split(order, starts[1:])
            weights = np.ones(len(keys), np.uint64) if weights is None else weights
            added = [int(weights[rows].sum(dtype=np.uint64)) for rows in groups]
            slab_of = self._slabs_of(values, added)
            if slab_of is not None:
                states = keys[:, :self.state_bytes]
                for slab, rows in zip(slab_of.tolist(), groups):
                    _table.count_narrow(self._slabs[slab], np.ascontiguousarray(states[rows]),
                                        np.ascontiguousarray(weights[rows]))
                return
        self._hashed.count(np.ascontiguousarray(keys), weights, threads)

    def _word_indices(self, values: np.ndarray) -> np.ndarray | None:
        """The index in the words of each of the distinct label ``values`` (new
        ones numbered on), or None once they would not fit beside the states."""
        new = [value for value in values.tolist() if value not in self._word_index]
        if len(self._word_index) + len(new) > 1 << (_WORD_BITS - self.state_neurons):
            return None
        for value in new:
            self._word_index[value] = len(self._word_index)
        return np.array([self._word_index[value] for value in values.tolist()], np.int32)

    def _words_pay(self, labels: int) -> int:
        """Words that count faster than slabs would for ``labels`` labels."""
        return (max(labels, 1) << self.state_neurons) // _SLAB_CELLS_PER_WORD

    def _words_fit(self, rows: int) -> bool:
        """Whether ``rows`` more words (and their read) fit a quarter of the cap."""
        return (self._buffered + rows) * _WORD_BYTES <= self.memory_limit // 4

    def _room_for_words(self, rows: int) -> np.ndarray:
        """Where the next ``rows`` words go (the buffer doubles when full; its
        memory is reused from epoch to epoch: see ``_table.word_buffer``)."""
        if self._buffered + rows > len(self._words):
            grown = _table.word_buffer(max(2 * len(self._words), self._buffered + rows, 1 << 16))
            grown[:self._buffered] = self._words[:self._buffered]
            self._words = grown
        return self._words[self._buffered:self._buffered + rows]

    def _all_words(self) -> np.ndarray:
        """The buffered words."""
        return self._words[:self._buffered]

    def _word_bits(self) -> int:
        return self.state_neurons + max(1, (len(self._word_index) - 1).bit_length())

    def _words_to_slabs(self) -> None:
        """Move the buffered pairs into slabs (or a hash engine, where they do
        not fit), counted once each with how often it came; the states' own
        table holds them already."""
        if self._words is None:
            return
        words = self._all_words()
        if not len(words):
            self._words, self._word_index, self._buffered = None, {}, 0
            return
        pairs, counts = _table.word_counts(words, self._word_bits())
        labels = np.zeros(len(self._word_index), np.int64)
        labels[list(self._word_index.values())] = list(self._word_index.keys())
        self._words, self._word_index, self._buffered = None, {}, 0
        states = (pairs & ((1 << self.state_neurons) - 1)).astype("<u4")
        state_bytes = states.view(np.uint8).reshape(-1, 4)[:, :self.state_bytes]
        label_bytes = self._label_columns(labels[pairs >> self.state_neurons])
        self.count(np.ascontiguousarray(np.concatenate([state_bytes, label_bytes], axis=1)),
                   counts.astype(np.uint64), self.threads)

    # -- reading ---------------------------------------------------------------
    def settle(self) -> None:
        """Put every pair's count in place before the states' engine reads (it
        calls this first: see :meth:`~._engine.CountEngine.read_with`): the
        buffered words' sums, or the hash engine's buffered rows."""
        if self._words is not None:
            self.sums()
        elif self._hashed is not None:
            self._hashed.settle()

    def fold_into(self, table) -> None:
        """Make the states' dense ``table`` hold each state's count over every
        label (see :meth:`~._engine.CountEngine.derive_from`), and keep the
        sums of the pairs' counts, read in the same pass (see :meth:`sums`)."""
        self._sums = CountSums(*_table.sum_dense(table, self._slabs))
        self.stale = False

    def sums(self) -> CountSums:
        """The :class:`~.metrics.CountSums` of the pairs' counts (what their
        entropy needs): of the words, by their counting sort; of the slabs,
        read with the pass that sums them into the states' table (or by a
        pass of their own, where none did since they changed); of the hash
        engine, read from its tables in place.

        Raises:
            IncompleteCountsError: the counts are incomplete.
        """
        self.check()
        if self._words is not None and self._sums is None:
            self._word_reads += 1
            if self._word_reads > _WORD_READS:  # read often: slabs keep their sums
                self._words_to_slabs()
        if self._words is not None:
            if self._sums is None:
                words = self._all_words()
                self._sums = (CountSums(*_table.word_sums(words, self._word_bits()))
                              if len(words) else _NO_PAIRS)
            return self._sums
        if self._hashed is not None:
            return self._hashed.sums()
        if self._states is not None:
            self._states.settle()  # the states' table takes the slabs' sum, and these
        if self._sums is None:
            self._sums = (CountSums(*_table.sum_dense(None, self._slabs)) if self._slabs
                          else _NO_PAIRS)
        return self._sums

    def _slab_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for value, slab in self._slab_index.items():
            states, counts = self._slabs[slab].items()
            if len(counts):
                label = np.repeat(self._label_columns(np.array([value])), len(states), axis=0)
                yield np.concatenate([states, label], axis=1), counts

    def count_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(keys, counts)`` chunks; each distinct (state, label) pair is in
        exactly one."""
        self._words_to_slabs()
        if self._hashed is not None:
            yield from self._hashed.count_chunks()
        else:
            yield from self._slab_chunks()

    def count_arrays(self) -> Iterator[np.ndarray]:
        """The counts of :meth:`count_chunks` alone."""
        self._words_to_slabs()
        if self._hashed is not None:
            yield from self._hashed.count_arrays()
        else:
            yield from (slab.counts() for slab in self._slabs)

    def close(self) -> None:
        """Give the slabs back (for the next counter: fresh memory costs a page
        fault per page) and delete the spill files, if any."""
        if self._states is not None:
            self._states.derive_from(None)
            self._states = None
        self._slabs, self._slab_index, self._totals = [], {}, []
        self._words, self._buffered = None, 0
        if self._hashed is not None:
            self._hashed.close()
