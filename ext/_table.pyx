# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled exact counting of packed states (ts_table.h, ts_dense.h, ts_batch.h),
used by tensorstate_callbacks.core._engine and ._spill.

A table holds the distinct states of one width and their counts; functions
count rows into lists of tables on threads of their own, releasing the GIL.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from cpython.buffer cimport PyBuffer_FillInfo
from libc.stdlib cimport free, malloc

import numpy as np


cdef extern from "ts_status.h" nogil:
    ctypedef enum ts_status:
        TS_OK
        TS_NO_MEMORY
        TS_BAD_ARGUMENT

cdef extern from "ts_hash.h" nogil:
    void ts_hash_partitions(const uint8_t *keys, int64_t n, int64_t nb, int partition_bits,
                            int32_t *out)

cdef extern from "ts_alloc.h" nogil:
    ctypedef struct ts_cache:
        pass
    ts_cache ts_scratch_cache
    void *ts_cache_take(ts_cache *cache, size_t bytes, int zeroed)
    void ts_cache_release(ts_cache *cache, void *block, size_t bytes)
    int ts_register_fork_handlers()

cdef extern from "ts_table.h" nogil:
    ctypedef struct ts_table:
        int64_t key_bytes
        int64_t size
        int dense_bits
        uint8_t *dense8
    ts_status ts_table_init(ts_table *t, int64_t key_bytes)
    void ts_table_free(ts_table *t)
    void ts_table_clear(ts_table *t)
    int64_t ts_table_memory(const ts_table *t)
    int64_t ts_dense8_memory(int dense_bits)
    void ts_table_items(const ts_table *t, uint8_t *keys, uint64_t *counts)
    void ts_byte_histograms(const uint8_t *keys, const uint64_t *counts, int64_t n,
                            int64_t nb, uint64_t *hist)
    void ts_firing_counts(const uint64_t *hist, int64_t nb, uint64_t *out)
    ctypedef struct ts_sums:
        int64_t distinct
        int64_t singletons
        uint64_t largest
        double c_log2_c
        double compensation
    ctypedef struct ts_gather:
        int64_t size, key_bytes
        uint64_t *hist
        uint64_t *fired
        ts_sums sums
    void ts_gather_flush(ts_gather *g)

cdef extern from "ts_dense.h" nogil:
    ts_status ts_dense_init(ts_table *t, int64_t key_bytes, int dense_bits, int narrow)
    ts_status ts_dense8_count(ts_table *t, const uint8_t *keys, const uint64_t *weights,
                              int64_t n)
    void ts_dense_count_threads(ts_table *const *tables, int n_tables, const uint8_t *keys,
                                const uint64_t *weights, int64_t n)
    void ts_dense_fold(ts_table *into, ts_table *source)
    int ts_pair_words(const uint8_t *keys, int64_t nb, int64_t samples, int64_t per_sample,
                      const int32_t *index, uint32_t labels, int state_bits, uint32_t *words)
    ts_status ts_count_words(const uint32_t *words, int64_t n, int word_bits, ts_sums *out,
                             uint32_t *distinct_words, uint64_t *counts, int64_t *n_distinct)
    void ts_dense_items(const ts_table *t, uint8_t *keys, uint64_t *counts)
    int64_t ts_dense8_size(const ts_table *t)
    void ts_read_table(ts_gather *g, const ts_table *t)
    ts_sums ts_dense_sum(ts_table *into, ts_table *const *slabs, int n_slabs)
    ts_status ts_dense_count_slabs(ts_table *const *slabs, const uint8_t *keys,
                                   const int32_t *slab_of, int64_t samples, int64_t per_sample,
                                   int threads)

cdef extern from "ts_batch.h" nogil:
    # Limits of the C side (macros of the headers above), given Python
    # names here instead of copies of their values.
    cpdef enum:
        TS_CHUNK_ROWS
        TS_DENSE_MAX_BITS
        TS_MAX_SHARD_BITS
        TS_MAX_PARTITION_BITS
        TS_MAX_THREADS
    ts_status ts_count_rows(ts_table *const *tables, int shard_bits, const uint8_t *keys,
                            const uint64_t *weights, int64_t n, int threads)


CHUNK_ROWS = TS_CHUNK_ROWS
DENSE_MAX_BITS = TS_DENSE_MAX_BITS
MAX_SHARDS = 1 << TS_MAX_SHARD_BITS
MAX_PARTITION_BITS = TS_MAX_PARTITION_BITS
MAX_THREADS = TS_MAX_THREADS

if ts_register_fork_handlers() != 0:
    raise ImportError("could not register the fork handlers of the table memory caches")


cdef class CountTable:
    """Table of distinct packed states and how often each occurred.

    A hash table by default; ``dense_bits=n`` (1 <= n <= DENSE_MAX_BITS) makes
    a dense array of 2**n counts for states of exactly n neurons instead, of
    byte counts with ``narrow=True`` (per-label tables: see
    :func:`count_dense_slabs`; a count past 255 goes on in a table of 32-bit
    cells made then, and their callers keep each one's total below 2**32).
    """
    cdef ts_table table

    def __cinit__(self, int64_t key_bytes, int dense_bits=0, bint narrow=False):
        if key_bytes < 1:
            raise ValueError(f"key_bytes={key_bytes} must be >= 1")
        if narrow and not dense_bits:
            raise ValueError("narrow=True is for dense tables: give dense_bits")
        if dense_bits:
            status = ts_dense_init(&self.table, key_bytes, dense_bits, narrow)
        else:
            status = ts_table_init(&self.table, key_bytes)
        if status == TS_BAD_ARGUMENT:
            raise ValueError(f"dense_bits={dense_bits} must be in [1, {TS_DENSE_MAX_BITS}] "
                             f"and match key_bytes={key_bytes}")
        if status != TS_OK:
            raise MemoryError("out of memory creating a count table")

    def __dealloc__(self):
        ts_table_free(&self.table)

    def clear(self):
        """Forget every state of a hash table, keeping its memory for the next
        ones (no growing, no fresh pages).

        >>> table = CountTable(1)
        >>> count_rows([table], np.array([[3], [5], [3]], dtype=np.uint8))
        >>> table.clear()
        >>> table.distinct, table.items()[0].shape
        (0, (0, 1))
        """
        if self.table.dense_bits:
            raise ValueError("clear() is for hash tables; a dense table is made anew")
        with nogil:
            ts_table_clear(&self.table)

    @property
    def key_bytes(self):
        """Bytes of one state."""
        return self.table.key_bytes

    @property
    def is_dense(self):
        """True for a dense table (a count per possible state)."""
        return self.table.dense_bits > 0

    @property
    def is_narrow(self):
        """True for a dense table of byte counts (``narrow=True``)."""
        return self.table.dense8 != NULL

    @property
    def distinct(self):
        """Number of distinct states held."""
        return self._size()

    cdef int64_t _size(self) noexcept nogil:
        # a table of byte counts does not keep its size as it counts
        return ts_dense8_size(&self.table) if self.table.dense8 != NULL else self.table.size

    @property
    def memory(self):
        """Bytes of memory the table holds."""
        return ts_table_memory(&self.table)

    cdef void _items(self, uint8_t *keys, uint64_t *counts) noexcept nogil:
        if self.table.dense_bits:
            ts_dense_items(&self.table, keys, counts)
        else:
            ts_table_items(&self.table, keys, counts)

    def counts(self):
        """The counts of :meth:`items` alone (uint64[distinct]), without the keys."""
        counts = np.empty(self._size(), dtype=np.uint64)
        cdef uint64_t[::1] c = counts
        if counts.shape[0]:
            with nogil:
                self._items(NULL, &c[0])
        return counts

    def add_byte_histograms(self, uint64_t[:, ::1] out):
        """Add to ``out[j, v]`` (uint64[key_bytes, 256]) the counts of the states
        whose byte ``j`` is ``v``, read in place (see :func:`byte_histograms`)."""
        read_tables([self], out)

    def items(self):
        """Return (keys uint8[distinct, key_bytes], counts uint64[distinct])."""
        cdef int64_t size = self._size()
        keys = np.empty((size, self.table.key_bytes), dtype=np.uint8)
        counts = np.empty(size, dtype=np.uint64)
        cdef uint8_t[:, ::1] k = keys
        cdef uint64_t[::1] c = counts
        if size:
            with nogil:
                self._items(&k[0, 0], &c[0])
        return keys, counts


cdef ts_table **_pointers(list tables) except NULL:
    """A malloc'd array of the C structs of ``tables``, CountTables checked by
    the caller (who frees it)."""
    cdef ts_table **pointers = <ts_table **>malloc(len(tables) * sizeof(ts_table *))
    if pointers == NULL:
        raise MemoryError()
    for i, table in enumerate(tables):
        pointers[i] = &(<CountTable>table).table
    return pointers


cdef ts_table **_tables(list tables, int64_t key_bytes, bint dense,
                        bint narrow=False) except NULL:
    """A malloc'd array of the tables' C structs (the caller frees it), after
    checking that they are CountTables of the right kind (``narrow``: of
    byte counts) and width."""
    if not tables:
        raise ValueError("no tables to count into")
    for table in tables:
        if not isinstance(table, CountTable):
            raise TypeError(f"expected CountTable objects, got {type(table).__name__}")
        if (<CountTable>table).table.key_bytes != key_bytes:
            raise ValueError(f"rows of {key_bytes} bytes do not fit tables of "
                             f"{(<CountTable>table).table.key_bytes}-byte states")
        if (<CountTable>table).is_dense != dense:
            raise ValueError("count_dense takes dense tables, count_rows hash tables"
                             f" (got {'a dense' if not dense else 'a hash'} table)")
        if (<CountTable>table).is_narrow != narrow:
            raise ValueError(f"expected dense tables of {'byte' if narrow else '64-bit'} counts")
    if dense and len({(<CountTable>table).table.dense_bits for table in tables}) != 1:
        raise ValueError("dense tables of different widths")
    return _pointers(tables)


cdef ts_table **_wide_count_tables(list tables, str what) except NULL:
    """A malloc'd array of the C structs of ``tables`` (the caller frees it):
    CountTables of one width, hash or dense, of 64-bit counts, which ``what``
    is read from."""
    for table in tables:
        if not isinstance(table, CountTable):
            raise TypeError(f"expected CountTable objects, got {type(table).__name__}")
        if (<CountTable>table).is_narrow:
            raise ValueError(f"{what} are read from tables of 64-bit counts only")
        if (<CountTable>table).table.key_bytes != (<CountTable>tables[0]).table.key_bytes:
            raise ValueError(f"{what} are read from tables of one width")
    return _pointers(tables)


cdef const uint64_t *_weights(const uint64_t[::1] weights, int64_t n) except? NULL:
    if weights is None:
        return NULL
    if weights.shape[0] != n:
        raise ValueError(f"{weights.shape[0]} weights for {n} rows: give one per row")
    return &weights[0] if n else NULL


def count_rows(list shards, const uint8_t[:, ::1] keys, const uint64_t[::1] weights=None,
               int threads=1):
    """Count each row of ``keys`` into its shard among the hash tables ``shards``.

    Args:
        shards: 1, 2, 4, ... MAX_SHARDS hash tables (CountTable); a row goes
            to the one its hash picks.
        keys: uint8[n, key_bytes], one state per row (C-contiguous).
        weights: uint64[n], each row's count; None: 1 each.
        threads: threads to count on (at most one per shard is used).

    Releases the GIL.

    Raises:
        ValueError: for bad arguments (nothing is counted then).
        MemoryError: when out of memory; part of the rows may be counted.
    """
    cdef int n_shards = len(shards)
    cdef int shard_bits = n_shards.bit_length() - 1
    if n_shards < 1 or n_shards != 1 << shard_bits or shard_bits > TS_MAX_SHARD_BITS:
        raise ValueError(f"{n_shards} shards: give a power of two up to {MAX_SHARDS}")
    if threads < 1:
        raise ValueError(f"threads={threads} must be >= 1")
    cdef int64_t n = keys.shape[0]
    cdef const uint64_t *w = _weights(weights, n)
    cdef ts_table **tables = _tables(shards, keys.shape[1], False)
    cdef ts_status status = TS_OK
    if n:
        with nogil:
            status = ts_count_rows(tables, shard_bits, &keys[0, 0], w, n, threads)
    free(tables)
    if status != TS_OK:
        raise MemoryError("out of memory while counting states")


def count_dense(list tables, const uint8_t[:, ::1] keys, const uint64_t[::1] weights=None):
    """Count the rows of ``keys`` into the dense tables ``tables``, one thread
    per table, each a contiguous share of the rows (``tables[0]`` the first).

    The tables, of one width, add up to the counts: fold the others into the
    first with :func:`fold_dense`.  Releases the GIL.

    Raises:
        ValueError: for bad arguments (nothing is counted then).
    """
    if len(tables) > TS_MAX_THREADS:
        raise ValueError(f"{len(tables)} tables: at most {MAX_THREADS} (one per thread)")
    cdef int64_t n = keys.shape[0]
    cdef const uint64_t *w = _weights(weights, n)
    cdef ts_table **pointers = _tables(tables, keys.shape[1], True)
    cdef int n_tables = len(tables)
    if n:
        with nogil:
            ts_dense_count_threads(pointers, n_tables, &keys[0, 0], w, n)
    free(pointers)


def fold_dense(CountTable into, CountTable source):
    """Add every count of the dense table ``source`` to ``into`` and empty ``source``."""
    if not (into.is_dense and source.is_dense and not into.is_narrow and not source.is_narrow
            and into.table.dense_bits == source.table.dense_bits):
        raise ValueError("fold_dense needs two dense tables of 64-bit counts of one width")
    if into is source:
        raise ValueError("fold_dense needs two different tables")
    with nogil:
        ts_dense_fold(&into.table, &source.table)


def partitions(const uint8_t[:, ::1] keys, int partition_bits):
    """Spill partition (0 .. 2**partition_bits - 1) of each row, from its hash.

    Every state always gets the same partition, and a partition's states
    spread over all shards (see ts_hash.h).
    """
    if not 0 <= partition_bits <= TS_MAX_PARTITION_BITS:
        raise ValueError(f"partition_bits={partition_bits} must be in "
                         f"[0, {TS_MAX_PARTITION_BITS}]")
    out = np.empty(keys.shape[0], dtype=np.int32)
    cdef int32_t[::1] o = out
    if keys.shape[0]:
        with nogil:
            ts_hash_partitions(&keys[0, 0], keys.shape[0], keys.shape[1], partition_bits, &o[0])
    return out


cdef _check_histograms(const uint64_t[:, ::1] out, int64_t key_bytes):
    if out.shape[0] != key_bytes or out.shape[1] != 256:
        raise ValueError(f"histograms of {key_bytes}-byte states are uint64[{key_bytes}, 256],"
                         f" got shape ({out.shape[0]}, {out.shape[1]})")


def byte_histograms(const uint8_t[:, ::1] keys, const uint64_t[::1] counts,
                    uint64_t[:, ::1] out):
    """Add to ``out[j, v]`` (uint64[key_bytes, 256]) the counts of the rows of
    ``keys`` whose byte ``j`` is ``v``: neuron ``8 j + b`` fires in the states
    counted under the values ``v`` with bit ``b`` set.  Releases the GIL."""
    _check_histograms(out, keys.shape[1])
    if counts.shape[0] != keys.shape[0]:
        raise ValueError(f"{counts.shape[0]} counts for {keys.shape[0]} keys: give one per key")
    if keys.shape[0]:
        with nogil:
            ts_byte_histograms(&keys[0, 0], &counts[0], keys.shape[0], keys.shape[1],
                               &out[0, 0])


def firing_counts(const uint64_t[:, ::1] histograms):
    """``uint64[8 * key_bytes]``: for each bit ``8 j + b`` of the states, the
    counts of those with it set, from their byte histograms
    (``uint64[key_bytes, 256]``, see :func:`byte_histograms`).  Releases the GIL."""
    if histograms.shape[1] != 256:
        raise ValueError(f"byte histograms have 256 columns, got {histograms.shape[1]}")
    out = np.zeros(8 * histograms.shape[0], dtype=np.uint64)
    cdef uint64_t[::1] o = out
    if histograms.shape[0]:
        with nogil:
            ts_firing_counts(&histograms[0, 0], histograms.shape[0], &o[0])
    return out


def read_tables(list tables, uint64_t[:, ::1] out=None, uint64_t[::1] fired=None):
    """What the metrics of a counter read from its tables (of one width, hash
    or dense, 64-bit counts), in one pass over each, in place.

    Args:
        tables: the CountTables.
        out: None, or uint64[key_bytes, 256], to which the byte histograms of
            the states are added (see :func:`byte_histograms`).
        fired: None, or (with ``out``) uint64[8 * key_bytes], to which the
            firing counts of the states counted once in hash tables of more
            than 8-byte states are added, instead of their byte histograms to
            ``out`` (cheaper: most states of a wide layer are counted once);
            the states' firing counts are then ``firing_counts(out) + fired``.

    Returns:
        ``(distinct, singletons, largest, c_log2_c)``: the number of counts > 0
        and of counts == 1, the largest count, and the sum of ``c * log2(c)``
        over every count ``c`` (what the plug-in entropy needs).

    Releases the GIL.

    Raises:
        ValueError: tables of different widths or of byte counts, or an
            ``out`` of the wrong shape.
    """
    if not tables:
        return 0, 0, 0, 0.0
    if out is not None and isinstance(tables[0], CountTable):
        _check_histograms(out, (<CountTable>tables[0]).table.key_bytes)
    if fired is not None and (out is None or fired.shape[0] != 8 * out.shape[0]):
        raise ValueError("fired is uint64[8 * key_bytes] and comes with out")
    cdef ts_table **pointers = _wide_count_tables(tables, "sums and histograms")
    cdef ts_gather *gather = <ts_gather *>malloc(sizeof(ts_gather))
    if gather == NULL:
        free(pointers)
        raise MemoryError()
    gather.size = 0
    gather.key_bytes = pointers[0].key_bytes
    gather.hist = NULL if out is None else &out[0, 0]
    gather.fired = NULL if fired is None else &fired[0]
    gather.sums.distinct = gather.sums.singletons = gather.sums.largest = 0
    gather.sums.c_log2_c = gather.sums.compensation = 0.0
    cdef int i, n = len(tables)
    with nogil:
        for i in range(n):
            ts_read_table(gather, pointers[i])
        ts_gather_flush(gather)
    free(pointers)
    sums = gather.sums
    free(gather)
    return sums.distinct, sums.singletons, sums.largest, sums.c_log2_c


def count_dense_slabs(list slabs, const uint8_t[:, ::1] keys, int64_t per_sample,
                      const int32_t[::1] slab_of, int threads=1):
    """Count (state, label) pairs into one dense table per label (its "slab").

    Args:
        slabs: dense tables of byte counts (``CountTable(..., narrow=True)``)
            of one width, one per label; the caller keeps each one's total
            below 2**32.
        keys: uint8[samples * per_sample, key_bytes], the states of each sample
            together and in order.
        per_sample: rows per sample (>= 1).
        slab_of: int32[samples], the index in ``slabs`` of each sample's label.
        threads: threads to count on; each counts the samples of its own slabs
            (slab index modulo threads), so at most one per slab is used.

    Releases the GIL.

    Raises:
        ValueError: for bad arguments (nothing is counted then).
        MemoryError: a slab's first count past 255 found no memory for the
            table of what its counts hold past their byte (the counts are
            then incomplete).
    """
    cdef int64_t samples = slab_of.shape[0]
    if per_sample < 1 or samples * per_sample != keys.shape[0]:
        raise ValueError(f"{keys.shape[0]} rows are not {samples} samples of "
                         f"{per_sample} rows (per_sample must be >= 1)")
    cdef int64_t i
    cdef uint32_t largest = 0, n_slabs = len(slabs)
    with nogil:
        for i in range(samples):  # negative indices too, as unsigned
            largest = max(largest, <uint32_t>slab_of[i])
    if samples and largest >= n_slabs:
        raise ValueError(f"slab_of must index the {len(slabs)} slabs")
    if threads < 1:
        raise ValueError(f"threads={threads} must be >= 1")
    threads = min(threads, len(slabs), TS_MAX_THREADS)
    cdef ts_table **pointers = _tables(slabs, keys.shape[1], True, True)
    cdef ts_status status = TS_OK
    if samples:
        with nogil:
            status = ts_dense_count_slabs(pointers, &keys[0, 0], &slab_of[0], samples,
                                          per_sample, threads)
    free(pointers)
    if status != TS_OK:
        raise MemoryError("out of memory counting (state, label) pairs")


def label_counts(const int64_t[::1] labels, int64_t limit):
    """``int64[labels.max() + 1]``: how many ``labels`` have each value, as
    ``np.bincount`` gives them, in two passes (the range, then the counts);
    None where a label is outside ``[0, limit)`` (or there are none).
    Releases the GIL.

    >>> label_counts(np.array([3, 1, 3, 3]), 10).tolist()
    [0, 1, 0, 3]
    >>> label_counts(np.array([3, -1]), 10) is None
    True
    """
    cdef int64_t n = labels.shape[0], i, smallest = 0, largest = -1
    if n == 0:
        return None
    with nogil:
        smallest = largest = labels[0]
        for i in range(n):
            smallest = min(smallest, labels[i])
            largest = max(largest, labels[i])
    if smallest < 0 or largest >= limit:
        return None
    counts = np.zeros(largest + 1, np.int64)
    cdef int64_t[::1] c = counts
    with nogil:
        for i in range(n):
            c[labels[i]] += 1
    return counts


def pair_words(const uint8_t[:, ::1] keys, int64_t per_sample, const int32_t[::1] index,
               int state_bits, uint32_t[::1] out=None):
    """``uint32[samples * per_sample]``: each state of ``keys`` (of
    ``state_bits`` neurons, ``per_sample`` rows per sample, each sample's rows
    together) as one word, ``state | index[sample] << state_bits`` (a
    (state, label) pair: ``index`` holds each sample's label index, below
    ``2 ** (32 - state_bits)``), written to ``out`` if given (one word a row).
    Releases the GIL."""
    cdef int64_t samples = index.shape[0]
    if per_sample < 1 or samples * per_sample != keys.shape[0]:
        raise ValueError(f"{keys.shape[0]} rows are not {samples} samples of "
                         f"{per_sample} rows (per_sample must be >= 1)")
    if not 1 <= state_bits <= 31 or (state_bits + 7) // 8 != keys.shape[1]:
        raise ValueError(f"state_bits={state_bits} must be in [1, 31] and match rows of "
                         f"{keys.shape[1]} bytes")
    if out is None:
        out = np.empty(keys.shape[0], dtype=np.uint32)
    elif out.shape[0] != keys.shape[0]:
        raise ValueError(f"out holds {out.shape[0]} words for {keys.shape[0]} rows")
    cdef uint32_t[::1] o = out
    cdef int bad = 0
    if keys.shape[0]:
        with nogil:
            bad = ts_pair_words(&keys[0, 0], keys.shape[1], samples, per_sample, &index[0],
                                <uint32_t>1 << (32 - state_bits), state_bits, &o[0])
    if bad:
        raise ValueError(f"label indices must be in [0, 2**{32 - state_bits})")
    return np.asarray(out)


cdef _count_words(const uint32_t[::1] words, int word_bits, bint distinct):
    if not 1 <= word_bits <= 32:
        raise ValueError(f"word_bits={word_bits} must be in [1, 32]")
    cdef int64_t n = words.shape[0], found = 0
    values = np.empty(n if distinct else 0, dtype=np.uint32)
    counts = np.empty(n if distinct else 0, dtype=np.uint64)
    cdef uint32_t[::1] v = values
    cdef uint64_t[::1] c = counts
    cdef ts_sums sums
    cdef ts_status status
    with nogil:
        status = ts_count_words(&words[0] if n else NULL, n, word_bits, &sums,
                                &v[0] if distinct and n else NULL,
                                &c[0] if distinct and n else NULL, &found)
    if status == TS_BAD_ARGUMENT:
        raise ValueError(f"words must be below 2**{word_bits}")
    if status != TS_OK:
        raise MemoryError("out of memory counting (state, label) words")
    return (sums.distinct, sums.singletons, sums.largest, sums.c_log2_c), values[:found], \
        counts[:found]


def word_sums(const uint32_t[::1] words, int word_bits):
    """``(distinct, singletons, largest, c_log2_c)`` (as :func:`read_tables`) of
    how often each distinct value occurs among ``words`` (each below
    ``2 ** word_bits``, 1 <= word_bits <= 32), by a counting sort in place of a
    table as large as the values.  Releases the GIL.

    >>> word_sums(np.array([7, 3, 7, 7], np.uint32), 3)[:3]
    (2, 1, 3)
    """
    return _count_words(words, word_bits, False)[0]


def word_counts(const uint32_t[::1] words, int word_bits):
    """``(values, counts)`` as ``np.unique(words, return_counts=True)`` gives
    them (uint32 and uint64), by the counting sort of :func:`word_sums`.

    >>> [part.tolist() for part in word_counts(np.array([7, 3, 7, 7], np.uint32), 3)]
    [[3, 7], [1, 3]]
    """
    return _count_words(words, word_bits, True)[1:]


cdef class _ScratchBlock:
    """Memory from the scratch cache (ts_alloc.h), given back when freed; a
    buffer of its bytes (see :func:`word_buffer`)."""
    cdef void *block
    cdef size_t size

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        PyBuffer_FillInfo(buffer, self, self.block, self.size, 0, flags)

    def __dealloc__(self):
        ts_cache_release(&ts_scratch_cache, self.block, self.size)


def word_buffer(int64_t words):
    """``uint32[words]``, not zeroed, in memory that goes back to a cache of
    the compiled core when the array is freed, for the next buffer: the words
    of (state, label) pairs are buffered anew every epoch, and fresh memory
    costs a page fault per page.

    Raises:
        MemoryError: when the memory cannot be had.
    """
    if words < 0:
        raise ValueError(f"words={words} must be >= 0")
    cdef _ScratchBlock owner = _ScratchBlock()
    owner.size = <size_t>max(words, 1) * sizeof(uint32_t)
    owner.block = ts_cache_take(&ts_scratch_cache, owner.size, 0)
    if owner.block == NULL:
        raise MemoryError(f"out of memory for {words} words")
    return np.frombuffer(owner, np.uint32, words)


def narrow_memory(int dense_bits):
    """Bytes of memory a dense table of byte counts (``narrow=True``) of
    ``dense_bits`` neurons holds at most: its cells, and the 32-bit cells its
    first count past 255 adds."""
    if not 1 <= dense_bits <= TS_DENSE_MAX_BITS:
        raise ValueError(f"dense_bits={dense_bits} must be in [1, {TS_DENSE_MAX_BITS}]")
    return ts_dense8_memory(dense_bits)


def sum_dense(CountTable into, list slabs):
    """Make the dense table ``into`` (64-bit counts; None: no table) hold the
    sum of the dense tables ``slabs`` (byte counts, one width, at least
    one): each state's count over every label (what it held before is
    overwritten).

    Returns:
        ``(distinct, singletons, largest, c_log2_c)`` of the slabs' counts,
        the (state, label) pairs (as :func:`read_tables`), read in the same
        pass (``into`` None: that pass alone).

    Releases the GIL.
    """
    cdef ts_table **pointers = _tables(slabs, slabs[0].key_bytes if slabs else 1, True, True)
    cdef int n_slabs = len(slabs)
    cdef ts_table *to = NULL
    if into is not None:
        to = &into.table
        if not into.is_dense or into.is_narrow or to.dense_bits != pointers[0].dense_bits:
            free(pointers)
            raise ValueError("sum_dense needs a dense table of 64-bit counts of the slabs' "
                             "width")
    cdef ts_sums sums
    with nogil:
        sums = ts_dense_sum(to, pointers, n_slabs)
    free(pointers)
    return sums.distinct, sums.singletons, sums.largest, sums.c_log2_c


def count_narrow(CountTable table, const uint8_t[:, ::1] keys, const uint64_t[::1] weights=None):
    """Count the rows of ``keys`` (each ``weights[i]`` times, or once) into the
    dense table of byte counts ``table``; the caller keeps its total below
    2**32.  Releases the GIL.

    Raises:
        MemoryError: no memory for the table of what counts hold past their
            byte (part of the rows are counted then).
    """
    cdef int64_t n = keys.shape[0]
    cdef const uint64_t *w = _weights(weights, n)
    cdef ts_table **pointers = _tables([table], keys.shape[1], True, True)
    cdef ts_status status = TS_OK
    if n:
        with nogil:
            status = ts_dense8_count(pointers[0], &keys[0, 0], w, n)
    free(pointers)
    if status != TS_OK:
        raise MemoryError("out of memory counting (state, label) pairs")
