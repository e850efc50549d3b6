/*
 * Dense tables: a count per possible state, for states of at most
 * TS_DENSE_MAX_BITS neurons (the caller chooses them for narrow layers).
 *
 * dense[state as a little-endian integer] = count: no hashing, no probing,
 * at most 8 MiB.  Several threads count one batch into copies of a table
 * (a share of the rows each: its cells are touched at random, too often to
 * share), which ts_dense_fold adds up later.
 */
#ifndef TS_DENSE_H
#define TS_DENSE_H

#include <stdint.h>
#include <string.h>

#include "ts_alloc.h"
#include "ts_hash.h"
#include "ts_status.h"
#include "ts_table.h"
#include "ts_threads.h"

#define TS_DENSE_MAX_BITS 20

/* An empty dense table for states of dense_bits neurons (1 ..
 * TS_DENSE_MAX_BITS), stored in key_bytes = (dense_bits + 7) / 8 bytes: of
 * 64-bit counts (dense), or with `narrow` of byte counts (dense8), the
 * per-label tables of labelled counting (see ts_dense8_add_one; their
 * callers keep each table's total below 2**32). */
static ts_status ts_dense_init(ts_table *t, int64_t key_bytes, int dense_bits, int narrow)
{
    memset(t, 0, sizeof(*t));
    if (dense_bits < 1 || dense_bits > TS_DENSE_MAX_BITS || (dense_bits + 7) / 8 != key_bytes)
        return TS_BAD_ARGUMENT;
    t->key_bytes = key_bytes;
    t->dense_bits = dense_bits;
    const size_t cell_bytes = narrow ? sizeof(uint8_t) : sizeof(uint64_t);
    void *cells = ts_cache_take(&ts_dense_cache, ((size_t)1 << dense_bits) * cell_bytes, 1);
    if (narrow)
        t->dense8 = (uint8_t *)cells;
    else
        t->dense = (uint64_t *)cells;
    return cells == NULL ? TS_NO_MEMORY : TS_OK;
}

/* A table of byte counts (dense8): a (state, label) pair's cell of the
 * slabs touches a byte, and ten slabs of 2**20 cells (10 MiB) stay in the
 * last-level cache where 32-bit ones (40 MiB) did not.  A state's count is
 * its byte plus, once the table has one, its cell of the excess table (of
 * 32-bit cells, made by the first count past a byte, with a list of the
 * states whose excess is not 0): a counted state's byte is 1 .. 255 (0: not
 * counted), and a byte that would pass 255 moves 255 to the excess and
 * starts again from 1.  Its size is not kept as it
 * counts (an add to it per count, waiting on the one before, cost more
 * than the count: ts_dense8_size counts the bytes set when asked). */
static inline uint64_t ts_dense8_count_of(const ts_table *t, uint64_t state)
{
    return t->dense8[state] + (t->excess != NULL ? (uint64_t)t->excess[state] : 0);
}

/* Sets the count of `state` (counted, > 255) of the dense8 table t; out of
 * memory for the excess table, nothing is changed. */
static ts_status ts_dense8_set_large(ts_table *t, uint32_t state, uint64_t count)
{
    if (t->excess == NULL) {
        const size_t bytes = ((size_t)1 << t->dense_bits) * sizeof(uint32_t);
        t->excess_states = (uint32_t *)ts_cache_take(&ts_dense_cache, bytes, 0);
        t->excess = (uint32_t *)ts_cache_take(&ts_dense_cache, bytes, 1);
        if (t->excess == NULL || t->excess_states == NULL) {
            ts_cache_release(&ts_dense_cache, t->excess, bytes);
            ts_cache_release(&ts_dense_cache, t->excess_states, bytes);
            t->excess = t->excess_states = NULL;
            return TS_NO_MEMORY;
        }
    }
    if (t->excess[state] == 0) t->excess_states[t->n_excess++] = state;
    t->excess[state] = (uint32_t)(count - 1);
    t->dense8[state] = 1;
    return TS_OK;
}

/* Adds `count` (> 0) to cell `state` of the dense8 table t. */
static ts_status ts_dense8_add(ts_table *t, uint32_t state, uint64_t count)
{
    const uint64_t total = ts_dense8_count_of(t, state) + count;
    if (total > 255) return ts_dense8_set_large(t, state, total);
    t->dense8[state] = (uint8_t)total;
    return TS_OK;
}

/* Adds 1 to cell `state` of the dense8 table t (the hot path). */
static inline ts_status ts_dense8_add_one(ts_table *t, uint32_t state)
{
    uint8_t *const cell = &t->dense8[state];
    if (__builtin_expect(*cell == 255, 0)) return ts_dense8_add(t, state, 1);
    *cell += 1;
    return TS_OK;
}

/* The states counted in the dense8 table t. */
static int64_t ts_dense8_size(const ts_table *t)
{
    const uint64_t cells = (uint64_t)1 << t->dense_bits;
    int64_t size = 0;
    for (uint64_t state = 0; state < cells; ++state) size += t->dense8[state] != 0;
    return size;
}

/* Sums over counts by how many counts have each small value: counts below
 * TS_SMALL_COUNTS are tallied in four lanes (counts that repeat, zeros most
 * of all, would otherwise wait on each other's stores), instead of a
 * logarithm and a compensated add each; four counts of at most 1 (most of a
 * slab's, zeros and ones) are added to the ones in a register, and larger
 * counts go to `large` as they come.  ts_values_sums gives the sums. */
#define TS_SMALL_COUNTS 256

typedef struct {
    uint64_t lanes[4][TS_SMALL_COUNTS]; /* lanes[l][c]: counts c (0: unused) */
    ts_sums large;
} ts_values;

static void ts_values_add(ts_values *v, const uint32_t *counts, int64_t n)
{
    const uint64_t above_one = 0xfffffffefffffffeULL; /* bits of two counts past 1 */
    uint64_t ones = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint64_t four[2];
        memcpy(four, counts + i, sizeof(four));
        if (((four[0] | four[1]) & above_one) == 0) {
            const uint64_t both = four[0] + four[1]; /* each 32-bit half: 0, 1 or 2 */
            ones += (both & 0xffffffffULL) + (both >> 32);
            continue;
        }
        for (int lane = 0; lane < 4; ++lane) {
            const uint64_t c = counts[i + lane];
            v->lanes[lane][c < TS_SMALL_COUNTS ? c : 0] += 1;
            if (c >= TS_SMALL_COUNTS) ts_sums_add(&v->large, &c, 1, 1);
        }
    }
    for (; i < n; ++i) {
        const uint64_t c = counts[i];
        if (c < TS_SMALL_COUNTS)
            v->lanes[0][c] += 1;
        else
            ts_sums_add(&v->large, &c, 1, 1);
    }
    v->lanes[1][1] += ones;
}

/* ts_values_add of n byte counts: eight counts of at most 1 (most of a slab's)
 * are added in a register, by one multiply (no popcount instruction in the
 * portable build: it is a call there). */
static void ts_values_add_bytes(ts_values *restrict v, const uint8_t *restrict counts,
                                int64_t n)
{
    const uint64_t above_one = 0xfefefefefefefefeULL; /* bits of eight counts past 1 */
    uint64_t ones = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t eight;
        memcpy(&eight, counts + i, sizeof(eight));
        if ((eight & above_one) == 0) {
            ones += (eight * 0x0101010101010101ULL) >> 56; /* their sum, in the top byte */
            continue;
        }
        for (int lane = 0; lane < 8; ++lane) v->lanes[lane & 3][counts[i + lane]] += 1;
    }
    for (; i < n; ++i) v->lanes[0][counts[i]] += 1;
    v->lanes[1][1] += ones;
}

/* Adds to s the sums over counts given by their frequencies: freqs[c] counts
 * of c, for 1 <= c < TS_SMALL_COUNTS (freqs[0] unused). */
static void ts_sums_add_freqs(ts_sums *s, const uint64_t *freqs)
{
    double small = 0.0;
    for (uint64_t c = 1; c < TS_SMALL_COUNTS; ++c) {
        if (freqs[c] == 0) continue;
        s->distinct += (int64_t)freqs[c];
        if (c == 1) s->singletons += (int64_t)freqs[c];
        if (c > s->largest) s->largest = c;
        small += (double)freqs[c] * ((double)c * log2((double)c));
    }
    const double term = small - s->compensation, next = s->c_log2_c + term;
    s->compensation = (next - s->c_log2_c) - term;
    s->c_log2_c = next;
}

/* The sums over the counts added to v. */
static ts_sums ts_values_sums(const ts_values *v)
{
    uint64_t freqs[TS_SMALL_COUNTS];
    for (int c = 0; c < TS_SMALL_COUNTS; ++c)
        freqs[c] = v->lanes[0][c] + v->lanes[1][c] + v->lanes[2][c] + v->lanes[3][c];
    ts_sums s = v->large;
    ts_sums_add_freqs(&s, freqs);
    return s;
}

/* Counts rows [0, n) of `keys` into the dense8 table t, `weights[i]` times
 * each (merging counts: not the hot path); TS_NO_MEMORY (and the counts of
 * the rows that needed the excess table missing) without memory for it. */
static ts_status ts_dense8_count(ts_table *t, const uint8_t *keys, const uint64_t *weights,
                                 int64_t n)
{
    const uint64_t mask = ((uint64_t)1 << t->dense_bits) - 1;
    ts_status status = TS_OK;
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t count = weights ? weights[i] : 1;
        if (count != 0 && ts_dense8_add(t, (uint32_t)(ts_load_word(keys + i * t->key_bytes,
                                                                   t->key_bytes) & mask),
                                        count) != TS_OK)
            status = TS_NO_MEMORY;
    }
    return status;
}

/* Counts rows [0, n) of `keys` into the dense table t.  Each row's state is
 * read once, TS_DENSE_AHEAD rows before its count, and its cell prefetched
 * then: scattered states miss the cache, and reading each key twice (to
 * prefetch and to count) costs more than the prefetch saves when states
 * repeat.  Far ahead, because between a framework's kernels the table
 * leaves the cache and a miss to memory takes longer than counting 16 rows
 * (see docs/performance.md).  Counters are kept in locals: the counts could
 * alias the table's fields. */
#define TS_DENSE_AHEAD 64

static void ts_dense_count(ts_table *t, const uint8_t *keys, const uint64_t *weights,
                           int64_t n)
{
    const int64_t nb = t->key_bytes;
    const uint64_t mask = ((uint64_t)1 << t->dense_bits) - 1;
    uint64_t *const dense = t->dense;
    uint64_t ahead[TS_DENSE_AHEAD];
    int64_t size = t->size;
    for (int64_t i = 0; i < n && i < TS_DENSE_AHEAD; ++i) {
        ahead[i] = ts_load_word(keys + i * nb, nb) & mask;
        __builtin_prefetch(&dense[ahead[i]], 1);
    }
    for (int64_t i = 0; i < n; ++i) {
        uint64_t *state = &ahead[(uint64_t)i % TS_DENSE_AHEAD];
        uint64_t *cell = &dense[*state];
        const uint64_t count = weights ? weights[i] : 1;
        size += *cell == 0 && count != 0;
        *cell += count;
        if (i + TS_DENSE_AHEAD < n) {
            *state = ts_load_word(keys + (i + TS_DENSE_AHEAD) * nb, nb) & mask;
            __builtin_prefetch(&dense[*state], 1);
        }
    }
    t->size = size;
}

/* One thread's share of a threaded dense count. */
typedef struct {
    ts_table *table;
    const uint8_t *keys;
    const uint64_t *weights; /* NULL: each row counts once */
    int64_t rows;
} ts_dense_share;

static void ts_dense_count_share(void *task)
{
    ts_dense_share *share = (ts_dense_share *)task;
    ts_dense_count(share->table, share->keys, share->weights, share->rows);
}

/* Counts rows [0, n) of `keys` into the dense tables `tables` (n_tables <=
 * TS_MAX_THREADS of one width), one thread per table, each a contiguous
 * share of the rows (tables[0] the first). */
static void ts_dense_count_threads(ts_table *const *tables, int n_tables, const uint8_t *keys,
                                   const uint64_t *weights, int64_t n)
{
    ts_dense_share shares[TS_MAX_THREADS];
    const int64_t nb = tables[0]->key_bytes;
    for (int i = 0; i < n_tables; ++i) {
        const int64_t begin = ts_share_start(0, n, i, n_tables);
        shares[i].table = tables[i];
        shares[i].keys = keys + begin * nb;
        shares[i].weights = weights ? weights + begin : NULL;
        shares[i].rows = ts_share_start(0, n, i + 1, n_tables) - begin;
    }
    ts_run_tasks(ts_dense_count_share, shares, sizeof(ts_dense_share), n_tables);
}

/* Counting (state, label) pairs: one dense8 table per label ("slab"),
 * all of one width.  Rows [0, samples * per_sample) of `keys` are the states of
 * `samples` samples, each sample's per_sample rows together; sample s's rows
 * count into slabs[slab_of[s]].  Thread `thread` of `threads` counts the
 * samples whose slab is `thread` modulo `threads`, so each slab is written
 * by one thread only: no copies, no locks.  As in ts_dense_count, each cell
 * is prefetched TS_DENSE_AHEAD rows before its count; the rows of a sample
 * and of the next ones flow through one ring, whatever their slab. */
typedef struct {
    ts_table *const *slabs;
    const uint8_t *keys;
    const int32_t *slab_of;
    int64_t samples;
    int64_t per_sample;
    int thread;
    int threads;
    ts_status status; /* TS_NO_MEMORY: a count needed an excess table that was not had */
} ts_slab_share;

static void ts_dense_count_slab_share(void *task)
{
    ts_slab_share *share = (ts_slab_share *)task;
    const int64_t nb = share->slabs[0]->key_bytes, per_sample = share->per_sample;
    const uint64_t mask = ((uint64_t)1 << share->slabs[0]->dense_bits) - 1;
    const int threads = share->threads, thread = share->thread;
    uint8_t *cells[TS_DENSE_AHEAD]; /* the ring: each row's cell, and its slab (for */
    ts_table *owners[TS_DENSE_AHEAD]; /* a count past 255 alone) */
    int64_t queued = 0;
    int failed = 0;
    const uint8_t *row = share->keys;
    for (int64_t s = 0; s < share->samples; ++s, row += per_sample * nb) {
        const int32_t slab = share->slab_of[s];
        if (threads > 1 && slab % threads != thread) continue; /* 1: no division */
        ts_table *const table = share->slabs[slab];
        const uint8_t *key = row;
        for (int64_t r = 0; r < per_sample; ++r, key += nb, ++queued) {
            const int64_t at = queued % TS_DENSE_AHEAD;
            if (queued >= TS_DENSE_AHEAD) {
                if (__builtin_expect(*cells[at] == 255, 0))
                    failed |= ts_dense8_add(owners[at], (uint32_t)(cells[at] - owners[at]->dense8),
                                            1) != TS_OK;
                else
                    *cells[at] += 1;
            }
            cells[at] = table->dense8 + (ts_load_word(key, nb) & mask);
            owners[at] = table;
            __builtin_prefetch(cells[at], 1);
        }
    }
    for (int64_t at = 0; at < queued && at < TS_DENSE_AHEAD; ++at)
        failed |= ts_dense8_add_one(owners[at], (uint32_t)(cells[at] - owners[at]->dense8))
                  != TS_OK;
    share->status = failed ? TS_NO_MEMORY : TS_OK;
}

/* Counts the states of `samples` samples into the slabs of their labels (see
 * ts_slab_share) on `threads` threads (1 .. TS_MAX_THREADS); TS_NO_MEMORY
 * where an excess table was not had (those counts are missing). */
static ts_status ts_dense_count_slabs(ts_table *const *slabs, const uint8_t *keys,
                                      const int32_t *slab_of, int64_t samples,
                                      int64_t per_sample, int threads)
{
    ts_slab_share shares[TS_MAX_THREADS];
    for (int i = 0; i < threads; ++i) {
        shares[i].slabs = slabs;
        shares[i].keys = keys;
        shares[i].slab_of = slab_of;
        shares[i].samples = samples;
        shares[i].per_sample = per_sample;
        shares[i].thread = i;
        shares[i].threads = threads;
    }
    ts_run_tasks(ts_dense_count_slab_share, shares, sizeof(ts_slab_share), threads);
    for (int i = 0; i < threads; ++i)
        if (shares[i].status != TS_OK) return shares[i].status;
    return TS_OK;
}

/* Makes the dense table `into` (unless NULL) hold the sum of the dense8
 * tables `slabs` (n_slabs >= 1, of its width): a state's count over
 * every label; and returns the sums (ts_sums) over the slabs' counts, the
 * counts of the (state, label) pairs, read in the same pass (ts_values).
 * Block by block, so that each block of `into` stays in cache while the
 * slabs' bytes stream past it, added up in 16-bit sums first (of up to
 * TS_SUM_SLABS slabs: 255 each) and these into `into`; the counts past a
 * byte are put right after, from the slabs' lists of them. */
#define TS_SUM_BLOCK 4096
#define TS_SUM_SLABS 257

static ts_sums ts_dense_sum(ts_table *into, ts_table *const *slabs, int n_slabs)
{
    ts_values values;
    memset(&values, 0, sizeof(values));
    const uint64_t cells = (uint64_t)1 << slabs[0]->dense_bits;
    uint64_t *const to = into != NULL ? into->dense : NULL;
    int64_t size = 0;
    for (uint64_t begin = 0; begin < cells; begin += TS_SUM_BLOCK) {
        const uint64_t end = begin + TS_SUM_BLOCK < cells ? begin + TS_SUM_BLOCK : cells;
        const int64_t n = (int64_t)(end - begin);
        for (int first = 0; first < n_slabs; first += TS_SUM_SLABS) {
            const int last = n_slabs - first < TS_SUM_SLABS ? n_slabs : first + TS_SUM_SLABS;
            uint16_t sums16[TS_SUM_BLOCK];
            for (int i = first; i < last; ++i) {
                /* restrict: bytes may alias anything, which would keep the
                 * loops below from being vectorised */
                const uint8_t *restrict const bytes = slabs[i]->dense8 + begin;
                ts_values_add_bytes(&values, bytes, n);
                if (to == NULL) continue;
                if (i == first)
                    for (int64_t k = 0; k < n; ++k) sums16[k] = bytes[k];
                else
                    for (int64_t k = 0; k < n; ++k) sums16[k] += bytes[k];
            }
            if (to == NULL) continue;
            uint64_t *restrict const out = to + begin;
            if (first == 0) {
                int64_t counted = 0; /* the block's states, where one group holds them all */
                for (int64_t k = 0; k < n; ++k) {
                    out[k] = sums16[k];
                    counted += sums16[k] != 0;
                }
                if (last == n_slabs) size += counted;
            } else {
                for (int64_t k = 0; k < n; ++k) out[k] += sums16[k];
            }
        }
        for (uint64_t state = begin; to != NULL && n_slabs > TS_SUM_SLABS && state < end; ++state)
            size += to[state] != 0;
    }
    for (int i = 0; i < n_slabs; ++i) { /* the counts past a byte, tallied above as it */
        const ts_table *const slab = slabs[i];
        for (int64_t k = 0; k < slab->n_excess; ++k) {
            const uint32_t state = slab->excess_states[k];
            const uint64_t byte = slab->dense8[state], count = byte + slab->excess[state];
            values.lanes[0][byte] -= 1; /* tallied in some lane: their sum is right */
            ts_sums_add(&values.large, &count, 1, 1); /* > 255 */
            if (to != NULL) to[state] += slab->excess[state];
        }
    }
    if (into != NULL) into->size = size;
    return ts_values_sums(&values);
}

/* (state, label) pairs of a narrow layer buffered as 32-bit words, state |
 * label index << state_bits, in arrival order, and counted at the read
 * (ts_word_sums): a few sequential passes instead of a random count per
 * pair into a table per label (each pair a cache line of its own in tens of
 * MiB).  ts_pair_words writes the words of the states of `samples` samples
 * (each sample's per_sample rows together) whose label indices are
 * index[s]; it returns 0, or 1 (nothing written) where an index is not
 * below labels. */
static int ts_pair_words(const uint8_t *keys, int64_t nb, int64_t samples, int64_t per_sample,
                         const int32_t *index, uint32_t labels, int state_bits, uint32_t *words)
{
    const uint64_t mask = ((uint64_t)1 << state_bits) - 1;
    uint32_t largest = 0;
    for (int64_t s = 0; s < samples; ++s)
        largest = (uint32_t)index[s] > largest ? (uint32_t)index[s] : largest;
    if (samples && largest >= labels) return 1; /* negative indices too (as unsigned) */
    if (per_sample == 1) { /* a state per sample: one flat loop */
        for (int64_t s = 0; s < samples; ++s)
            words[s] = (uint32_t)(ts_load_word(keys + s * nb, nb) & mask)
                       | (uint32_t)index[s] << state_bits;
        return 0;
    }
    for (int64_t s = 0; s < samples; ++s) {
        const uint32_t label = (uint32_t)index[s] << state_bits;
        const uint8_t *row = keys + s * per_sample * nb;
        uint32_t *out = words + s * per_sample;
        for (int64_t r = 0; r < per_sample; ++r, row += nb)
            out[r] = (uint32_t)(ts_load_word(row, nb) & mask) | label;
    }
    return 0;
}

/* The sums (ts_sums) over how often each distinct word occurs among
 * words[0, n) of word_bits (1 .. 32) bits, and unless `distinct` is NULL the
 * distinct words themselves, in increasing order, with their counts (at
 * most n of them; *n_distinct set): the words are partitioned by their high
 * bits into blocks of at most 2**16 values (a counting sort, keeping only the
 * low bits), and each block is counted in a table of 2**16 32-bit cells that
 * stays in cache, listing the cells it counts, whose counts are then read
 * into frequencies (see ts_sums_add_freqs) and zeroed.  TS_BAD_ARGUMENT (and
 * nothing counted) for a word of more bits; TS_NO_MEMORY when the scratch (2
 * bytes a word, 256 KiB, the blocks' offsets) cannot be had. */
#define TS_WORD_BLOCK_BITS 16

static int ts_compare_u16(const void *a, const void *b)
{
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

static ts_status ts_count_words(const uint32_t *words, int64_t n, int word_bits, ts_sums *out,
                                uint32_t *distinct_words, uint64_t *counts, int64_t *n_distinct)
{
    const int low_bits = word_bits < TS_WORD_BLOCK_BITS ? word_bits : TS_WORD_BLOCK_BITS;
    const int64_t blocks = (int64_t)1 << (word_bits - low_bits);
    const uint32_t low_mask = (uint32_t)(((uint64_t)1 << low_bits) - 1);
    int64_t *starts = (int64_t *)calloc((size_t)blocks + 1, sizeof(int64_t));
    uint16_t *lows = (uint16_t *)malloc((size_t)(n > 0 ? n : 1) * sizeof(uint16_t));
    uint32_t *cells = (uint32_t *)calloc((size_t)1 << low_bits, sizeof(uint32_t));
    uint16_t *listed = (uint16_t *)malloc((((size_t)1 << low_bits) + 1) * sizeof(uint16_t));
    uint64_t freqs[TS_SMALL_COUNTS] = {0}, ones = 0;
    ts_sums sums = {0, 0, 0, 0.0, 0.0};
    ts_status status = TS_OK;
    if (n_distinct != NULL) *n_distinct = 0;
    if (starts == NULL || lows == NULL || cells == NULL || listed == NULL) {
        status = TS_NO_MEMORY;
        goto done;
    }
    uint64_t above = 0; /* bits past word_bits: a bad argument */
    for (int64_t i = 0; i < n; ++i) {
        above |= (uint64_t)words[i] >> word_bits;
        starts[((words[i] >> low_bits) & (uint32_t)(blocks - 1)) + 1] += 1;
    }
    if (above) {
        status = TS_BAD_ARGUMENT;
        goto done;
    }
    for (int64_t b = 0; b < blocks; ++b) starts[b + 1] += starts[b];
    for (int64_t i = 0; i < n; ++i) /* starts[b] moves to the end of block b */
        lows[starts[words[i] >> low_bits]++] = (uint16_t)(words[i] & low_mask);
    for (int64_t b = 0, begin = 0; b < blocks; begin = starts[b], ++b) {
        int64_t distinct = 0;
        for (int64_t i = begin; i < starts[b]; ++i) { /* listed without a branch */
            const uint16_t cell = lows[i];
            listed[distinct] = cell;
            distinct += cells[cell] == 0;
            cells[cell] += 1;
        }
        if (distinct_words != NULL) qsort(listed, (size_t)distinct, sizeof(uint16_t),
                                          ts_compare_u16);
        for (int64_t k = 0; k < distinct; ++k) {
            const uint64_t c = cells[listed[k]];
            if (c == 1) /* most words of a sparse read: in a register (an add to */
                ++ones; /* freqs[1] would wait on the one before) */
            else if (c < TS_SMALL_COUNTS)
                freqs[c] += 1;
            else
                ts_sums_add(&sums, &c, 1, 1);
            if (distinct_words != NULL) {
                distinct_words[*n_distinct] = (uint32_t)(b << low_bits) | listed[k];
                counts[(*n_distinct)++] = c;
            }
            cells[listed[k]] = 0;
        }
    }
done:
    freqs[1] += ones;
    free(starts);
    free(lows);
    free(cells);
    free(listed);
    ts_sums_add_freqs(&sums, freqs);
    *out = sums;
    return status;
}

/* Adds every count of the dense table `source` to `into` (of the same
 * width) and empties `source`. */
static void ts_dense_fold(ts_table *into, ts_table *source)
{
    const uint64_t cells = (uint64_t)1 << into->dense_bits;
    uint64_t *const to = into->dense;
    const uint64_t *const add = source->dense;
    int64_t added = 0;
    for (uint64_t state = 0; state < cells; ++state) { /* branch-free: vectorisable */
        added += (to[state] == 0) & (add[state] != 0);
        to[state] += add[state];
    }
    memset(source->dense, 0, cells * sizeof(uint64_t));
    into->size += added;
    source->size = 0;
}

/* Writes the states counted (size x key_bytes, unless `keys` is NULL), in
 * increasing order, and their counts.  Little-endian keys, as everywhere. */
static void ts_dense_items(const ts_table *t, uint8_t *keys, uint64_t *counts)
{
    const int64_t nb = t->key_bytes;
    int64_t k = 0;
    const uint64_t cells = (uint64_t)1 << t->dense_bits;
    if (t->dense8 != NULL) {
        const int64_t size = ts_dense8_size(t); /* not kept as it counts */
        for (uint64_t state = 0; state < cells && k < size; ++state) {
            if (keys)
                for (int64_t j = 0; j < nb; ++j) keys[k * nb + j] = (uint8_t)(state >> (8 * j));
            counts[k] = ts_dense8_count_of(t, state);
            k += t->dense8[state] != 0; /* as below */
        }
        return;
    }
    if (keys == NULL) {
        /* Every cell is written to the next output position, which only a
         * counted state advances: no branch to mispredict on states that
         * are scattered over the table (the reads of the epoch's metrics). */
        for (uint64_t state = 0; state < cells && k < t->size; ++state) {
            counts[k] = t->dense[state];
            k += t->dense[state] != 0;
        }
        return;
    }
    for (uint64_t state = 0; state < cells && k < t->size; ++state) {
        for (int64_t j = 0; j < nb; ++j) keys[k * nb + j] = (uint8_t)(state >> (8 * j));
        counts[k] = t->dense[state];
        k += t->dense[state] != 0; /* as above */
    }
}

/* ts_byte_histograms of a dense table (hist: key_bytes x 256), from its
 * cells in order: the low byte of the state runs through each block of 256
 * cells (added as a vector), the higher bytes are fixed within a block. */
static void ts_dense_byte_histograms(const ts_table *t, uint64_t *hist)
{
    const uint64_t cells = (uint64_t)1 << t->dense_bits;
    const uint64_t *dense = t->dense;
    if (cells <= 256) {
        for (uint64_t state = 0; state < cells; ++state) hist[state] += dense[state];
        return;
    }
    uint64_t low[256] = {0}; /* a local: the compiler knows the cells do not alias it */
    for (uint64_t block = 0; block < cells / 256; ++block, dense += 256) {
        uint64_t total = 0;
        for (int v = 0; v < 256; ++v) { /* vectorisable */
            low[v] += dense[v];
            total += dense[v];
        }
        for (int64_t j = 1; j < t->key_bytes; ++j)
            hist[j * 256 + ((block >> (8 * (j - 1))) & 255)] += total;
    }
    for (int v = 0; v < 256; ++v) hist[v] += low[v];
}

/* ts_sums_add of the counts a dense table of 64-bit counts holds. */
static void ts_dense_sums(const ts_table *t, ts_sums *s)
{
    ts_sums_add(s, t->dense, (int64_t)1 << t->dense_bits, 1);
}

/* Adds what the epoch's metrics read from a table, hash or dense (of 64-bit
 * counts), to g (see ts_gather; flush it after the last table). */
static void ts_read_table(ts_gather *g, const ts_table *t)
{
    if (!t->dense_bits) {
        ts_gather_hashed(g, t);
        return;
    }
    ts_dense_sums(t, &g->sums);
    if (g->hist != NULL) ts_dense_byte_histograms(t, g->hist);
}

#endif /* TS_DENSE_H */
