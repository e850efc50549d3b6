# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled exact counting of packed states (see ts_table.h). Wrapped by
tensorstate_callbacks.counting."""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc

import threading

import numpy as np


cdef extern from "ts_table.h" nogil:
    ctypedef struct ts_table:
        int64_t key_bytes
        int64_t size
        uint64_t total
        int dense_bits
    int ts_table_init(ts_table *t, int64_t key_bytes, int dense_bits)
    int TS_DENSE_MAX_BITS
    void ts_table_free(ts_table *t)
    int64_t ts_table_memory(const ts_table *t)
    ctypedef struct ts_record:
        uint64_t hash
        uint64_t payload
    ctypedef struct ts_part:
        ts_record *records
        uint64_t *hashes
        int64_t *start
        int64_t *fill
        uint64_t *sketches
    int64_t TS_CHUNK_ROWS
    int TS_SKETCH_WORDS
    void ts_sketch_rows(ts_part *part, int shard_bits, const uint8_t *keys, int64_t nb,
                        int64_t begin, int64_t end)
    void ts_partition(ts_part *part, int shard_bits, const uint8_t *keys, int64_t nb,
                      int weighted, int sketched, int64_t begin, int64_t end)
    int ts_sketch_ahead(const ts_part *parts, int n_parts, int shard_bits,
                        int64_t first_chunk_rows)
    int ts_insert_parts(ts_table *const *tables, int shard_bits, int first, int step,
                        const uint8_t *keys, const uint64_t *weights,
                        const ts_part *parts, int n_parts)
    int ts_count_rows(ts_table *const *tables, int shard_bits, const uint8_t *keys,
                      const uint64_t *weights, int64_t n, ts_part *part)
    void ts_table_items(const ts_table *t, uint8_t *keys, uint64_t *counts)
    void ts_dense_fold(ts_table *into, ts_table *source)
    int ts_cache_register_fork_handlers()
    void ts_partitions(const uint8_t *keys, int64_t n, int64_t nb,
                       int partition_bits, int32_t *out)


DENSE_MAX_BITS = TS_DENSE_MAX_BITS

if ts_cache_register_fork_handlers() != 0:
    raise ImportError("could not register the fork handlers of the table memory cache")


cdef class CountTable:
    """Table of distinct packed states and how often each occurred.

    A hash table by default; ``dense_bits=n`` (n <= DENSE_MAX_BITS) makes a
    dense array of 2**n counts for states of exactly n neurons instead.
    """
    cdef ts_table table

    def __cinit__(self, int64_t key_bytes, int dense_bits=0):
        if key_bytes < 1:
            raise ValueError("key_bytes must be >= 1")
        status = ts_table_init(&self.table, key_bytes, dense_bits)
        if status == -2:
            raise ValueError(f"dense_bits={dense_bits} must be in [1, {TS_DENSE_MAX_BITS}] "
                             f"and match key_bytes={key_bytes}")
        if status != 0:
            raise MemoryError("out of memory creating a count table")

    def __dealloc__(self):
        ts_table_free(&self.table)

    @property
    def key_bytes(self):
        return self.table.key_bytes

    @property
    def is_dense(self):
        """True for a dense table (a count per possible state)."""
        return self.table.dense_bits > 0

    @property
    def distinct(self):
        """Number of distinct states held."""
        return self.table.size

    @property
    def total(self):
        """Sum of all counts held."""
        return self.table.total

    @property
    def memory(self):
        """Bytes of memory the table holds."""
        return ts_table_memory(&self.table)

    def counts(self):
        """The counts of :meth:`items` alone (uint64[distinct]), without the keys."""
        counts = np.empty(self.table.size, dtype=np.uint64)
        cdef uint64_t[::1] c = counts
        if self.table.size:
            with nogil:
                ts_table_items(&self.table, NULL, &c[0])
        return counts

    def items(self):
        """Return (keys uint8[distinct, key_bytes], counts uint64[distinct])."""
        keys = np.empty((self.table.size, self.table.key_bytes), dtype=np.uint8)
        counts = np.empty(self.table.size, dtype=np.uint64)
        cdef uint8_t[:, ::1] k = keys
        cdef uint64_t[::1] c = counts
        if self.table.size:
            with nogil:
                ts_table_items(&self.table, &k[0, 0], &c[0])
        return keys, counts


def fold_dense(CountTable into, CountTable source):
    """Add every count of the dense table `source` to `into` and empty `source`."""
    if not (into.is_dense and source.is_dense
            and into.table.dense_bits == source.table.dense_bits):
        raise ValueError("fold_dense needs two dense tables of one width")
    with nogil:
        ts_dense_fold(&into.table, &source.table)


cdef class Partitioner:
    """Scratch of one counting worker for 2**shard_bits shards (see ts_part)."""
    cdef ts_part part
    cdef readonly int shard_bits
    cdef object _buffers  # the NumPy arrays behind part's pointers
    cdef object _start, _sketches  # two of them, which Python resets

    def __cinit__(self, int shard_bits):
        n_shards = 1 << shard_bits
        records = np.empty(2 * TS_CHUNK_ROWS, dtype=np.uint64)
        hashes = np.empty(TS_CHUNK_ROWS, dtype=np.uint64)
        start = np.empty(n_shards + 1, dtype=np.int64)
        fill = np.empty(n_shards, dtype=np.int64)
        sketches = np.zeros(n_shards * TS_SKETCH_WORDS, dtype=np.uint64)
        cdef uint64_t[::1] r = records, h = hashes, k = sketches
        cdef int64_t[::1] b = start, f = fill
        self.part.records = <ts_record *>&r[0]
        self.part.hashes = &h[0]
        self.part.start = &b[0]
        self.part.fill = &f[0]
        self.part.sketches = &k[0]
        self.shard_bits = shard_bits
        self._buffers = (records, hashes, start, fill, sketches)
        self._start, self._sketches = start, sketches

    def clear_sketches(self):
        """Start a new batch: forget the rows sketched so far."""
        self._sketches.fill(0)

    def sketch(self, const uint8_t[:, ::1] keys, int64_t begin, int64_t end):
        """Sketch rows [begin, end) of `keys` (any number) by shard, for a batch
        whose rows are then partitioned with ``sketched=True``.  Releases the GIL."""
        if not 0 <= begin <= end <= keys.shape[0]:
            raise ValueError(f"bad row range [{begin}, {end}) of {keys.shape[0]} rows")
        if end > begin:
            with nogil:
                ts_sketch_rows(&self.part, self.shard_bits, &keys[0, 0], keys.shape[1],
                               begin, end)

    def partition(self, const uint8_t[:, ::1] keys, int64_t begin, int64_t end, bint weighted,
                  bint sketched=False):
        """Phase one for rows [begin, end) (at most CHUNK_ROWS) of `keys`, which
        are counted with weights or not (and already sketched or not).
        Releases the GIL."""
        if not 0 <= begin <= end <= keys.shape[0] or end - begin > TS_CHUNK_ROWS:
            raise ValueError(f"bad row range [{begin}, {end}) of {keys.shape[0]} rows")
        if keys.shape[0] == 0:
            self._start.fill(0)  # no records: every shard's range is empty
            return
        # Always run, an empty range included: it must clear the previous chunk's ranges.
        with nogil:
            ts_partition(&self.part, self.shard_bits, &keys[0, 0], keys.shape[1],
                         weighted, sketched, begin, end)


CHUNK_ROWS = TS_CHUNK_ROWS

# Partitioners of each calling thread, kept between calls and freed with it.
_scratch = threading.local()


def partitioners(int shard_bits, int count):
    """The calling thread's `count` partitioners for 2**shard_bits shards."""
    cached = getattr(_scratch, "by_bits", None)
    if cached is None:
        cached = _scratch.by_bits = {}
    parts = cached.setdefault(shard_bits, [])
    while len(parts) < count:
        parts.append(Partitioner(shard_bits))
    return parts[:count]


cdef ts_table **_table_pointers(list shards, int shard_bits, int64_t key_bytes) except NULL:
    cdef int n_shards = len(shards)
    if n_shards != (1 << shard_bits):
        raise ValueError("len(shards) must be 2**shard_bits")
    cdef ts_table **tables = <ts_table **>malloc(n_shards * sizeof(ts_table *))
    if tables == NULL:
        raise MemoryError()
    for i in range(n_shards):
        table = <CountTable?>shards[i]
        if table.table.key_bytes != key_bytes:
            free(tables)
            raise ValueError("row width does not match the tables' key width")
        tables[i] = &(<CountTable>shards[i]).table
    return tables


cdef const uint64_t *_weights_pointer(const uint64_t[::1] weights, int64_t n) except? NULL:
    if weights is None:
        return NULL
    if weights.shape[0] != n:
        raise ValueError("weights must have one entry per row")
    return &weights[0] if n else NULL


def count_rows(list shards, int shard_bits, const uint8_t[:, ::1] keys,
               const uint64_t[::1] weights=None):
    """Count each row of `keys` into its shard (hash-selected) among `shards`,
    on the calling thread.  `weights` (optional) gives each row's count.
    Releases the GIL.
    """
    cdef int64_t n = keys.shape[0]
    cdef int status = 0
    if n == 0:
        return
    cdef const uint64_t *w = _weights_pointer(weights, n)
    cdef ts_part *scratch = NULL  # only sharded tables partition
    if shard_bits > 0:
        scratch = &(<Partitioner>partitioners(shard_bits, 1)[0]).part
    cdef ts_table **tables = _table_pointers(shards, shard_bits, keys.shape[1])
    with nogil:
        status = ts_count_rows(tables, shard_bits, &keys[0, 0], w, n, scratch)
    free(tables)
    if status != 0:
        raise MemoryError("out of memory while counting states")


cdef ts_part *_parts_array(list parts) except NULL:
    """A malloc'd array of the parts' scratch (the caller frees it)."""
    for part in parts:
        if not isinstance(part, Partitioner):
            raise TypeError("parts must be Partitioner objects")
    cdef ts_part *scratch = <ts_part *>malloc(len(parts) * sizeof(ts_part))
    if scratch == NULL:
        raise MemoryError()
    for i in range(len(parts)):
        scratch[i] = (<Partitioner>parts[i]).part
    return scratch


def sketch_ahead(list parts, int64_t first_chunk_rows):
    """Whether to sketch a batch's rows after its first chunk (partitioned by
    `parts`, of `first_chunk_rows` rows) before inserting it (ts_sketch_ahead)."""
    if not parts:
        return False
    cdef ts_part *scratch = _parts_array(parts)
    cdef int shard_bits = (<Partitioner>parts[0]).shard_bits
    ahead = ts_sketch_ahead(scratch, len(parts), shard_bits, first_chunk_rows)
    free(scratch)
    return bool(ahead)


def insert_partitioned(list shards, int shard_bits, int first, int step,
                       const uint8_t[:, ::1] keys, const uint64_t[::1] weights, list parts):
    """Phase two: shards first, first + step, ... insert their records from every
    partitioner of `parts` (filled from these `keys`).  Releases the GIL."""
    cdef int64_t n = keys.shape[0]
    cdef int status = 0
    cdef int n_parts = len(parts)
    cdef const uint64_t *w = _weights_pointer(weights, n)
    cdef ts_part *scratch = _parts_array(parts)
    cdef ts_table **tables
    try:
        tables = _table_pointers(shards, shard_bits, keys.shape[1])
    except BaseException:
        free(scratch)
        raise
    with nogil:
        status = ts_insert_parts(tables, shard_bits, first, step, &keys[0, 0], w,
                                 scratch, n_parts)
    free(tables)
    free(scratch)
    if status != 0:
        raise MemoryError("out of memory while counting states")


def partitions(const uint8_t[:, ::1] keys, int partition_bits):
    """Spill partition (0 .. 2**partition_bits - 1) of each row, from its hash."""
    out = np.empty(keys.shape[0], dtype=np.int32)
    cdef int32_t[::1] o = out
    if keys.shape[0]:
        with nogil:
            ts_partitions(&keys[0, 0], keys.shape[0], keys.shape[1], partition_bits, &o[0])
    return out
