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
    int64_t TS_CHUNK_ROWS
    int ts_count_rows(ts_table *const *tables, int shard_bits, int first, int step,
                      const uint8_t *keys, const uint64_t *weights, int64_t n,
                      ts_record *records, uint64_t *hashes)
    void ts_table_items(const ts_table *t, uint8_t *keys, uint64_t *counts)
    void ts_partitions(const uint8_t *keys, int64_t n, int64_t nb,
                       int partition_bits, int32_t *out)


DENSE_MAX_BITS = TS_DENSE_MAX_BITS


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

    def items(self):
        """Return (keys uint8[distinct, key_bytes], counts uint64[distinct])."""
        keys = np.empty((self.table.size, self.table.key_bytes), dtype=np.uint8)
        counts = np.empty(self.table.size, dtype=np.uint64)
        cdef uint8_t[:, ::1] k = keys
        cdef uint64_t[::1] c = counts
        if self.table.size:
            ts_table_items(&self.table, &k[0, 0], &c[0])
        return keys, counts


# Scratch of the partitioning pass, one set per thread, kept between calls
# and freed with its thread.
_scratch = threading.local()


def _thread_scratch():
    if not hasattr(_scratch, "records"):
        _scratch.records = np.empty(2 * TS_CHUNK_ROWS, dtype=np.uint64)
        _scratch.hashes = np.empty(TS_CHUNK_ROWS, dtype=np.uint64)
    return _scratch.records, _scratch.hashes


def count_rows(list shards, int shard_bits, int first, int step,
               const uint8_t[:, ::1] keys, const uint64_t[::1] weights=None):
    """Count each row of `keys` into its shard (hash-selected) among `shards`.

    Only shards first, first+step, ... are touched, so `step` threads can count
    one batch at once without locks.  `weights` (optional) gives each row's count.
    Releases the GIL.
    """
    cdef int n_shards = len(shards)
    cdef int64_t n = keys.shape[0]
    cdef int status = 0
    cdef int i
    cdef const uint64_t *w = NULL
    if n == 0:
        return
    if n_shards != (1 << shard_bits):
        raise ValueError("len(shards) must be 2**shard_bits")
    if weights is not None:
        if weights.shape[0] != n:
            raise ValueError("weights must have one entry per row")
        w = &weights[0]
    cdef uint64_t[::1] records, hashes
    records, hashes = _thread_scratch()
    cdef ts_table **tables = <ts_table **>malloc(n_shards * sizeof(ts_table *))
    if tables == NULL:
        raise MemoryError()
    try:
        for i in range(n_shards):
            table = <CountTable?>shards[i]
            if table.table.key_bytes != keys.shape[1]:
                raise ValueError("row width does not match the tables' key width")
            tables[i] = &(<CountTable>shards[i]).table
        with nogil:
            status = ts_count_rows(tables, shard_bits, first, step, &keys[0, 0], w, n,
                                   <ts_record *>&records[0], &hashes[0])
    finally:
        free(tables)
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
