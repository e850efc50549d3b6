/*
 * Counting a batch of rows into hash tables: the entry point ts_count_rows.
 *
 * One table (shard_bits == 0) takes the rows one by one (ts_table_count).
 * Sharded tables (2**shard_bits of them; a row belongs to the shard its hash
 * picks, ts_hash_shard) take them in two phases per chunk of rows, so that
 * each insert hits a table small enough to stay in cache, where inserting
 * row after row into one big table would miss on almost every row:
 *   1. partition (ts_partition): hash each row and radix-partition the chunk
 *      by shard into (hash, key or row) records (histogram, then scatter);
 *   2. insert (ts_insert_shards): each shard inserts its records, after
 *      growing once to the size that the union of its sketch and the batch's
 *      sketch of its rows foresees (ts_sketch.h).
 * With several threads, each partitions a share of the chunk's rows into its
 * own scratch (a ts_part), then each inserts the records of its own shards
 * (shards t, t + threads, ...) from every thread's scratch: no two threads
 * write to one table, so no locks.  The threads are created per phase
 * (ts_threads.h); a chunk is TS_CHUNK_ROWS rows per thread.
 *
 * When a batch's first chunk was mostly distinct rows, the rest of the batch
 * is sketched before that chunk is inserted (ts_sketch_ahead), so that each
 * shard is sized once for the whole batch instead of growing chunk by chunk.
 */
#ifndef TS_BATCH_H
#define TS_BATCH_H

#include <stdint.h>
#include <string.h>

#include "ts_alloc.h"
#include "ts_hash.h"
#include "ts_sketch.h"
#include "ts_status.h"
#include "ts_table.h"
#include "ts_threads.h"

#define TS_CHUNK_ROWS ((int64_t)1 << 18)

/* Scratch of one partitioning thread, for 2**shard_bits shards: the records
 * of its share of a chunk, grouped by shard (shard s has records [start[s],
 * start[s + 1])), and its sketches of the batch's rows, one per shard.  All
 * in one block from ts_scratch_cache: fresh buffers on every call would cost
 * more in page faults than the counting itself. */
typedef struct {
    ts_record *records; /* TS_CHUNK_ROWS */
    uint64_t *hashes;   /* TS_CHUNK_ROWS: of the share's rows, in row order */
    int64_t *start;     /* n_shards + 1 */
    int64_t *fill;      /* n_shards: next free record of each shard */
    uint64_t *sketches; /* n_shards * TS_SKETCH_WORDS */
    void *block;
    size_t bytes;
} ts_part;

static size_t ts_part_bytes(int shard_bits)
{
    const size_t n_shards = (size_t)1 << shard_bits;
    return (size_t)TS_CHUNK_ROWS * (sizeof(ts_record) + sizeof(uint64_t))
           + (2 * n_shards + 1) * sizeof(int64_t)
           + n_shards * TS_SKETCH_WORDS * sizeof(uint64_t);
}

/* Takes the scratch for a batch (its sketches cleared). */
static ts_status ts_part_take(ts_part *part, int shard_bits)
{
    const size_t n_shards = (size_t)1 << shard_bits;
    part->bytes = ts_part_bytes(shard_bits);
    part->block = ts_cache_take(&ts_scratch_cache, part->bytes, 0);
    if (part->block == NULL) return TS_NO_MEMORY;
    char *next = (char *)part->block; /* every array is 8-byte aligned */
    part->records = (ts_record *)next;
    next += TS_CHUNK_ROWS * sizeof(ts_record);
    part->hashes = (uint64_t *)next;
    next += TS_CHUNK_ROWS * sizeof(uint64_t);
    part->start = (int64_t *)next;
    next += (n_shards + 1) * sizeof(int64_t);
    part->fill = (int64_t *)next;
    next += n_shards * sizeof(int64_t);
    part->sketches = (uint64_t *)next;
    memset(part->sketches, 0, n_shards * TS_SKETCH_WORDS * sizeof(uint64_t));
    return TS_OK;
}

static void ts_part_release(ts_part *part)
{
    ts_cache_release(&ts_scratch_cache, part->block, part->bytes);
    part->block = NULL;
}

/* Records of shard s in a part. */
static inline int64_t ts_part_records(const ts_part *part, int s)
{
    return part->start[s + 1] - part->start[s];
}

/* What every thread counting one batch shares. */
typedef struct {
    ts_table *const *tables;
    int shard_bits;
    const uint8_t *keys;
    int64_t key_bytes;
    const uint64_t *weights; /* NULL: each row counts once */
    ts_part *parts;          /* one per thread */
    int threads;
    int sketched;            /* the batch's rows are all in the sketches already */
} ts_batch;

/* One thread's task in a phase: its part, its rows [begin, end), and for
 * inserts the shards index, index + threads, ... */
typedef struct {
    ts_batch *batch;
    int index;
    int64_t begin, end;
    ts_status status;
} ts_worker;

/* Adds rows [begin, end) to the part's sketches, each to its shard's. */
static void ts_sketch_rows(const ts_batch *b, ts_part *part, int64_t begin, int64_t end)
{
    for (int64_t i = begin; i < end; ++i) {
        const uint64_t h = ts_hash_key(b->keys + i * b->key_bytes, b->key_bytes);
        ts_sketch_add(part->sketches + ts_hash_shard(h, b->shard_bits) * TS_SKETCH_WORDS, h);
    }
}

/* Phase one for rows [begin, end) (at most TS_CHUNK_ROWS, maybe none): hashed,
 * sketched (unless the batch is already) and grouped by shard into
 * part->records.  A record's payload is the key itself for narrow keys
 * counted once each, else the row number (see ts_record). */
static void ts_partition(const ts_batch *b, ts_part *part, int64_t begin, int64_t end)
{
    const int n_shards = 1 << b->shard_bits;
    const int64_t nb = b->key_bytes;
    const int key_in_record = nb <= 8 && b->weights == NULL;
    int64_t *const start = part->start, *const fill = part->fill;
    uint64_t *const hashes = part->hashes;
    memset(fill, 0, (size_t)n_shards * sizeof(int64_t));
    for (int64_t i = begin; i < end; ++i) {
        const uint64_t h = ts_hash_key(b->keys + i * nb, nb);
        const int s = ts_hash_shard(h, b->shard_bits);
        hashes[i - begin] = h;
        ++fill[s];
        if (!b->sketched) ts_sketch_add(part->sketches + s * TS_SKETCH_WORDS, h);
    }
    start[0] = 0;
    for (int s = 0; s < n_shards; ++s) {
        start[s + 1] = start[s] + fill[s];
        fill[s] = start[s];
    }
    for (int64_t i = begin; i < end; ++i) {
        const uint64_t h = hashes[i - begin];
        ts_record *r = &part->records[fill[ts_hash_shard(h, b->shard_bits)]++];
        r->hash = h;
        r->payload = key_in_record ? ts_load_word(b->keys + i * nb, nb) : (uint64_t)i;
    }
}

/* ORs shard s's sketch of every part (the batch's rows so far) into `sketch`. */
static void ts_add_parts_sketch(uint64_t *sketch, const ts_batch *b, int s)
{
    for (int p = 0; p < b->threads; ++p)
        ts_sketch_union(sketch, b->parts[p].sketches + s * TS_SKETCH_WORDS);
}

/* Whether the rows after a batch's first chunk (of first_chunk_rows rows,
 * partitioned) are worth sketching before that chunk is inserted: when the
 * chunk's rows were mostly distinct, so that tables would grow chunk after
 * chunk.  (Where the first chunk already holds most of the batch's keys,
 * hashing the rest twice would cost more than it saves.) */
static int ts_sketch_ahead(const ts_batch *b, int64_t first_chunk_rows)
{
    uint64_t sketch[TS_SKETCH_WORDS];
    int64_t distinct = 0;
    for (int s = 0; s < (1 << b->shard_bits); ++s) {
        memset(sketch, 0, sizeof(sketch));
        ts_add_parts_sketch(sketch, b, s);
        distinct += ts_sketch_estimate(sketch);
    }
    return 4 * distinct > first_chunk_rows;
}

/* Phase two: shards first, first + step, ... insert their records from every
 * part, each after growing at once to the size foreseen by the union of the
 * table's sketch and the parts' sketches of the batch. */
static ts_status ts_insert_shards(const ts_batch *b, int first, int step)
{
    uint64_t sketch[TS_SKETCH_WORDS];
    for (int s = first; s < (1 << b->shard_bits); s += step) {
        ts_table *t = b->tables[s];
        int64_t records = 0;
        for (int p = 0; p < b->threads; ++p) records += ts_part_records(&b->parts[p], s);
        if (ts_table_over(t->size + records + 1, t->capacity)) {
            memcpy(sketch, t->sketch, sizeof(sketch));
            ts_add_parts_sketch(sketch, b, s);
            if (ts_table_reserve(t, ts_sketch_estimate(sketch), 0) != TS_OK) return TS_NO_MEMORY;
        }
        for (int p = 0; p < b->threads; ++p) {
            const ts_part *part = &b->parts[p];
            if (ts_table_insert(t, part->records + part->start[s], ts_part_records(part, s),
                                b->keys, b->weights) != TS_OK)
                return TS_NO_MEMORY;
        }
    }
    return TS_OK;
}

static void ts_partition_task(void *task)
{
    ts_worker *w = (ts_worker *)task;
    ts_partition(w->batch, &w->batch->parts[w->index], w->begin, w->end);
}

static void ts_sketch_task(void *task)
{
    ts_worker *w = (ts_worker *)task;
    ts_sketch_rows(w->batch, &w->batch->parts[w->index], w->begin, w->end);
}

static void ts_insert_task(void *task)
{
    ts_worker *w = (ts_worker *)task;
    w->status = ts_insert_shards(w->batch, w->index, w->batch->threads);
}

/* Runs `task` on every thread, each on its share of rows [begin, end);
 * returns TS_NO_MEMORY if any failed. */
static ts_status ts_run_phase(ts_batch *b, ts_worker *workers, ts_task_fn task,
                              int64_t begin, int64_t end)
{
    for (int i = 0; i < b->threads; ++i) {
        workers[i].batch = b;
        workers[i].index = i;
        workers[i].begin = ts_share_start(begin, end, i, b->threads);
        workers[i].end = ts_share_start(begin, end, i + 1, b->threads);
        workers[i].status = TS_OK;
    }
    ts_run_tasks(task, workers, sizeof(ts_worker), b->threads);
    for (int i = 0; i < b->threads; ++i)
        if (workers[i].status != TS_OK) return workers[i].status;
    return TS_OK;
}

/* Counts rows [0, n) into the shards, chunk after chunk (see the top). */
static ts_status ts_count_chunks(ts_batch *b, int64_t n)
{
    ts_worker workers[TS_MAX_THREADS];
    const int64_t step = TS_CHUNK_ROWS * b->threads;
    for (int64_t base = 0; base < n; base += step) {
        const int64_t end = n - base < step ? n : base + step;
        ts_run_phase(b, workers, ts_partition_task, base, end);
        if (base == 0 && end < n && ts_sketch_ahead(b, end)) {
            ts_run_phase(b, workers, ts_sketch_task, end, n);
            b->sketched = 1;
        }
        if (ts_run_phase(b, workers, ts_insert_task, 0, 0) != TS_OK) return TS_NO_MEMORY;
    }
    return TS_OK;
}

/* Counts rows [0, n) of `keys` (n x key_bytes, the tables' width) into the
 * hash tables `tables`: 2**shard_bits (<= 2**TS_MAX_SHARD_BITS) shards,
 * on up to `threads` threads (at most one per shard).  `weights` (NULL: each
 * row counts once) gives each row's count.  Returns TS_OK, or TS_NO_MEMORY
 * with part of the rows counted. */
static ts_status ts_count_rows(ts_table *const *tables, int shard_bits, const uint8_t *keys,
                               const uint64_t *weights, int64_t n, int threads)
{
    if (n == 0) return TS_OK;
    if (shard_bits == 0) return ts_table_count(tables[0], keys, weights, n);
    if (threads > 1 << shard_bits) threads = 1 << shard_bits;
    if (threads > TS_MAX_THREADS) threads = TS_MAX_THREADS;
    if (threads < 1) threads = 1;
    ts_part parts[TS_MAX_THREADS];
    int taken = 0;
    while (taken < threads && ts_part_take(&parts[taken], shard_bits) == TS_OK) ++taken;
    ts_batch batch = {tables, shard_bits, keys, tables[0]->key_bytes, weights, parts, threads, 0};
    const ts_status status = taken == threads ? ts_count_chunks(&batch, n) : TS_NO_MEMORY;
    for (int i = 0; i < taken; ++i) ts_part_release(&parts[i]);
    return status;
}

#endif /* TS_BATCH_H */
