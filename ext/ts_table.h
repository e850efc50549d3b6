/*
 * One table of exact counts of packed states.
 *
 * A ts_table is either a hash table (this file) or a dense table (dense !=
 * NULL, see ts_dense.h); both have the same fields for their width and size
 * and are freed by ts_table_free.
 *
 * The hash table uses open addressing (linear probing, power-of-two capacity,
 * load factor <= 5/8: see ts_table_over), so its memory grows with the number
 * of distinct states, never with the number of states counted.
 *   Narrow keys (<= 8 bytes, i.e. <= 64 neurons) live in the slot itself:
 *     slot.word = key as a little-endian integer, slot.value = count.
 *   Wide keys live in an arena, in first-seen order:
 *     slot.word = the key's hash, slot.value = arena index + 1,
 *     arena row = key bytes, counts[index] = count.
 * In both cases slot.value == 0 marks an empty slot (and a count of 0 is
 * never stored).
 *
 * Tables double when full, but are usually sized once per batch
 * (ts_table_reserve, see ts_batch.h).  Their slot arrays come from and go
 * back to ts_slot_cache (ts_alloc.h).
 */
#ifndef TS_TABLE_H
#define TS_TABLE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ts_alloc.h"
#include "ts_hash.h"
#include "ts_sketch.h"
#include "ts_status.h"

typedef struct {
    uint64_t word;
    uint64_t value;
} ts_slot;

typedef struct {
    int64_t key_bytes;
    int64_t size;         /* distinct keys held */
    /* hash tables */
    int64_t capacity;     /* slots, a power of two */
    ts_slot *slots;
    uint8_t *arena;       /* wide keys only */
    uint64_t *counts;     /* wide keys only */
    int64_t arena_capacity;
    uint64_t sketch[TS_SKETCH_WORDS]; /* of the keys held */
    /* dense tables */
    int dense_bits;       /* > 0: a dense table of 2**dense_bits counts */
    uint64_t *dense;
    uint8_t *dense8;      /* instead of dense: per-label tables (ts_dense.h), a byte a count */
    uint32_t *excess;     /* of a dense8 table, once a count passed its byte: the rest */
    uint32_t *excess_states; /* the states whose excess is not 0, in no order */
    int64_t n_excess;
} ts_table;

/* A row on its way into a table: its hash and either its row index or, for
 * unweighted narrow keys, the key itself (saving a random read per insert). */
typedef struct {
    uint64_t hash;
    uint64_t payload;
} ts_record;

/* Rows of records ahead of the one inserted whose home slot is prefetched. */
#define TS_AHEAD 16

static ts_slot *ts_alloc_slots(int64_t capacity)
{
    return (ts_slot *)ts_cache_take(&ts_slot_cache, (size_t)capacity * sizeof(ts_slot), 1);
}

static void ts_free_slots(ts_slot *slots, int64_t capacity)
{
    ts_cache_release(&ts_slot_cache, slots, (size_t)capacity * sizeof(ts_slot));
}

/* An empty hash table for keys of key_bytes (>= 1) bytes. */
static ts_status ts_table_init(ts_table *t, int64_t key_bytes)
{
    memset(t, 0, sizeof(*t));
    t->key_bytes = key_bytes;
    t->capacity = 16;
    t->slots = ts_alloc_slots(t->capacity);
    return t->slots == NULL ? TS_NO_MEMORY : TS_OK;
}

/* Frees a hash or dense table (and leaves it empty, without memory). */
static void ts_table_free(ts_table *t)
{
    ts_free_slots(t->slots, t->capacity);
    free(t->arena);
    free(t->counts);
    if (t->dense != NULL)
        ts_cache_release(&ts_dense_cache, t->dense,
                         ((size_t)1 << t->dense_bits) * sizeof(uint64_t));
    if (t->dense8 != NULL)
        ts_cache_release(&ts_dense_cache, t->dense8, (size_t)1 << t->dense_bits);
    if (t->excess != NULL)
        ts_cache_release(&ts_dense_cache, t->excess,
                         ((size_t)1 << t->dense_bits) * sizeof(uint32_t));
    if (t->excess_states != NULL)
        ts_cache_release(&ts_dense_cache, t->excess_states,
                         ((size_t)1 << t->dense_bits) * sizeof(uint32_t));
    memset(t, 0, sizeof(*t));
}

/* Bytes of memory a dense table of byte counts (dense8) of dense_bits holds
 * at most: its bytes, and the excess table and list that its first count
 * past a byte adds. */
static int64_t ts_dense8_memory(int dense_bits)
{
    return ((int64_t)1 << dense_bits) * (int64_t)(1 + 2 * sizeof(uint32_t));
}

/* Bytes of memory the table holds. */
static int64_t ts_table_memory(const ts_table *t)
{
    if (t->dense != NULL) return ((int64_t)1 << t->dense_bits) * (int64_t)sizeof(uint64_t);
    if (t->dense8 != NULL) return ts_dense8_memory(t->dense_bits);
    return t->capacity * (int64_t)sizeof(ts_slot)
           + t->arena_capacity * (t->key_bytes + (int64_t)sizeof(uint64_t));
}

static inline uint64_t ts_slot_hash(const ts_table *t, const ts_slot *s)
{
    return t->key_bytes <= 8 ? ts_mix(s->word) : s->word;
}

/* Whether `keys` keys overfill `capacity` slots: a load above 5/8.  (At 1/2,
 * a power-of-two capacity sized for a batch's foreseen keys plus the sketch's
 * margin often doubled once more: a ResNet layer's shards of about 2,000
 * states each ended at a load of 1/4, 58 bytes a state, all of them fresh
 * pages to fault in and slots to scan at every read.  Linear probing at 5/8
 * looks at about 4 slots for a new key, in one or two cache lines.) */
static inline int ts_table_over(int64_t keys, int64_t capacity)
{
    return 8 * keys > 5 * capacity;
}

/* Rehashes every key into `capacity` slots (a power of two). */
static ts_status ts_table_resize(ts_table *t, int64_t capacity)
{
    ts_slot *slots = ts_alloc_slots(capacity);
    if (slots == NULL) return TS_NO_MEMORY;
    const uint64_t mask = (uint64_t)capacity - 1;
    for (int64_t i = 0; i < t->capacity; ++i) {
        const ts_slot *old = &t->slots[i];
        if (old->value == 0) continue;
        uint64_t pos = ts_hash_slot(ts_slot_hash(t, old), mask);
        while (slots[pos].value != 0) pos = (pos + 1) & mask;
        slots[pos] = *old;
    }
    ts_free_slots(t->slots, t->capacity);
    t->slots = slots;
    t->capacity = capacity;
    return TS_OK;
}

static ts_status ts_table_grow(ts_table *t)
{
    return ts_table_resize(t, t->capacity * 2);
}

/* Room in the arena (wide keys) for `keys` keys, at least. */
static ts_status ts_arena_grow(ts_table *t, int64_t keys)
{
    if (keys <= t->arena_capacity) return TS_OK;
    int64_t capacity = t->arena_capacity ? t->arena_capacity : 16;
    while (capacity < keys) capacity *= 2;
    uint8_t *arena = (uint8_t *)realloc(t->arena, (size_t)(capacity * t->key_bytes));
    if (arena == NULL) return TS_NO_MEMORY;
    t->arena = arena;
    uint64_t *counts = (uint64_t *)realloc(t->counts, (size_t)capacity * sizeof(uint64_t));
    if (counts == NULL) return TS_NO_MEMORY;
    t->counts = counts;
    t->arena_capacity = capacity;
    return TS_OK;
}

/* Grows the table (and the arena of wide keys) at once to hold `keys`
 * distinct keys at load <= 5/8, instead of step by step while they arrive.
 * `keys` may be an upper bound, not an estimate: then the arena is grown
 * only while that costs at most TS_ARENA_AHEAD bytes (its keys can be wide). */
#define TS_ARENA_AHEAD ((int64_t)1 << 20)

static ts_status ts_table_reserve(ts_table *t, int64_t keys, int upper_bound)
{
    int64_t capacity = t->capacity;
    while (ts_table_over(keys + 1, capacity)) capacity *= 2;
    if (t->key_bytes > 8
        && (!upper_bound || keys * (t->key_bytes + 8) <= TS_ARENA_AHEAD)
        && ts_arena_grow(t, keys) != TS_OK)
        return TS_NO_MEMORY;
    return capacity == t->capacity ? TS_OK : ts_table_resize(t, capacity);
}

/* Forgets every key of a hash table but keeps its memory, zeroed: counting
 * as many keys again (the next epoch of a layer) neither grows the table nor
 * faults in fresh pages. */
static void ts_table_clear(ts_table *t)
{
    memset(t->slots, 0, (size_t)t->capacity * sizeof(ts_slot));
    memset(t->sketch, 0, sizeof(t->sketch));
    t->size = 0;
}

/* Adds `count` (> 0) occurrences of one wide key (> 8 bytes) whose hash is h. */
static ts_status ts_table_add_wide(ts_table *t, const uint8_t *key, uint64_t h, uint64_t count)
{
    if (ts_table_over(t->size + 1, t->capacity) && ts_table_grow(t) != TS_OK)
        return TS_NO_MEMORY;
    const uint64_t mask = (uint64_t)t->capacity - 1;
    const size_t nb = (size_t)t->key_bytes;
    for (uint64_t pos = ts_hash_slot(h, mask);; pos = (pos + 1) & mask) {
        ts_slot *s = &t->slots[pos];
        if (s->value == 0) {
            if (ts_arena_grow(t, t->size + 1) != TS_OK) return TS_NO_MEMORY;
            memcpy(t->arena + (size_t)t->size * nb, key, nb);
            t->counts[t->size] = count;
            s->word = h;
            s->value = (uint64_t)(++t->size);
            ts_sketch_add(t->sketch, h);
            return TS_OK;
        }
        if (s->word == h) {
            const int64_t index = (int64_t)s->value - 1;
            if (memcmp(t->arena + (size_t)index * nb, key, nb) == 0) {
                t->counts[index] += count;
                return TS_OK;
            }
        }
    }
}

/* Inserts m records of narrow keys (<= 8 bytes), the hot case: with
 * `weights`, records hold row numbers into `keys` and `weights`, without,
 * the keys themselves (each counted once).  The table's fields are held in
 * locals: stores into slots could alias them, and reloading them on every
 * row costs more than the probe.  Each record's home slot is prefetched
 * TS_AHEAD records before its insert. */
static ts_status ts_insert_narrow(ts_table *t, const ts_record *records, int64_t m,
                                  const uint8_t *keys, const uint64_t *weights)
{
    const int64_t nb = t->key_bytes;
    ts_slot *slots = t->slots;
    uint64_t mask = (uint64_t)t->capacity - 1;
    int64_t size = t->size;
    for (int64_t j = 0; j < m; ++j) {
        if (j + TS_AHEAD < m)
            __builtin_prefetch(&slots[ts_hash_slot(records[j + TS_AHEAD].hash, mask)], 1);
        const uint64_t payload = records[j].payload;
        const uint64_t word = weights ? ts_load_word(keys + payload * nb, nb) : payload;
        const uint64_t count = weights ? weights[payload] : 1;
        if (count == 0) continue; /* a zero count adds no state (and 0 marks empty slots) */
        uint64_t pos = ts_hash_slot(records[j].hash, mask);
        for (;;) {
            ts_slot *slot = &slots[pos];
            if (slot->word == word && slot->value != 0) {
                slot->value += count;
                break;
            }
            if (slot->value == 0) {
                if (ts_table_over(size + 1, (int64_t)mask + 1)) { /* full: grow, probe again */
                    t->size = size;
                    if (ts_table_grow(t) != TS_OK) return TS_NO_MEMORY;
                    slots = t->slots;
                    mask = (uint64_t)t->capacity - 1;
                    pos = ts_hash_slot(records[j].hash, mask);
                    continue;
                }
                slot->word = word;
                slot->value = count;
                ++size;
                ts_sketch_add(t->sketch, records[j].hash);
                break;
            }
            pos = (pos + 1) & mask;
        }
    }
    t->size = size;
    return TS_OK;
}

/* Inserts m records (see ts_record) of rows of `keys` (n x key_bytes),
 * counted once each or `weights[row]` times. */
static ts_status ts_table_insert(ts_table *t, const ts_record *records, int64_t m,
                                 const uint8_t *keys, const uint64_t *weights)
{
    if (t->key_bytes <= 8) return ts_insert_narrow(t, records, m, keys, weights);
    const int64_t nb = t->key_bytes;
    for (int64_t j = 0; j < m; ++j) {
        if (j + TS_AHEAD < m) { /* its slot, and its key (rows arrive in shard order) */
            __builtin_prefetch(
                &t->slots[ts_hash_slot(records[j + TS_AHEAD].hash, (uint64_t)t->capacity - 1)],
                1);
            __builtin_prefetch(keys + records[j + TS_AHEAD].payload * nb, 0);
        }
        const uint64_t row = records[j].payload;
        const uint64_t count = weights ? weights[row] : 1;
        if (count != 0 && ts_table_add_wide(t, keys + row * nb, records[j].hash, count) != TS_OK)
            return TS_NO_MEMORY;
    }
    return TS_OK;
}

/* Counts rows [0, n) of `keys` into one hash table, without partitioning:
 * each row is hashed TS_AHEAD rows before it is inserted, and its home slot
 * prefetched then.  The table is first sized for all of them: it holds at
 * most size + n keys after this (callers split into shards before it gets
 * large). */
static ts_status ts_table_count(ts_table *t, const uint8_t *keys, const uint64_t *weights,
                                int64_t n)
{
    if (ts_table_reserve(t, t->size + n, 1) != TS_OK) return TS_NO_MEMORY;
    const int64_t nb = t->key_bytes;
    const int key_in_record = nb <= 8 && weights == NULL; /* as ts_insert_narrow expects */
    ts_record ring[TS_AHEAD];
    for (int64_t i = 0; i < n + TS_AHEAD; ++i) {
        ts_record *record = &ring[i % TS_AHEAD];
        if (i >= TS_AHEAD && ts_table_insert(t, record, 1, keys, weights) != TS_OK)
            return TS_NO_MEMORY;
        if (i < n) {
            record->hash = ts_hash_key(keys + i * nb, nb);
            record->payload = key_in_record ? ts_load_word(keys + i * nb, nb) : (uint64_t)i;
            __builtin_prefetch(
                &t->slots[ts_hash_slot(record->hash, (uint64_t)t->capacity - 1)], 1);
        }
    }
    return TS_OK;
}

/* Writes the distinct keys (size x key_bytes, unless `keys` is NULL) and
 * their counts, in slot order (narrow keys) or first-seen order (wide). */
static void ts_table_items(const ts_table *t, uint8_t *keys, uint64_t *counts)
{
    const int64_t nb = t->key_bytes;
    int64_t k = 0;
    if (nb > 8) {
        if (keys) memcpy(keys, t->arena, (size_t)(t->size * nb));
        memcpy(counts, t->counts, (size_t)t->size * sizeof(uint64_t));
        return;
    }
    if (keys == NULL) {
        /* Every slot's count is written to the next output position, which
         * only a used slot advances: no branch to mispredict on a partly empty
         * table (the reads of the epoch's metrics). */
        for (int64_t i = 0; i < t->capacity && k < t->size; ++i) {
            counts[k] = t->slots[i].value;
            k += t->slots[i].value != 0;
        }
        return;
    }
    for (int64_t i = 0; i < t->capacity; ++i) {
        const ts_slot *s = &t->slots[i];
        if (s->value == 0) continue;
        memcpy(keys + k * nb, &s->word, (size_t)nb); /* little-endian hosts */
        counts[k++] = s->value;
    }
}

/* Sums over the counts of distinct states: what the plug-in entropy, the
 * coverage and the number of distinct states need, read in one pass over a
 * table in place (no counts copied out, no logarithm of a count of 1, which
 * most states of a wide layer have).  c log2 c is summed with Kahan's
 * compensation: a table holds millions of terms. */
typedef struct {
    int64_t distinct;     /* counts > 0 */
    int64_t singletons;   /* counts == 1 */
    uint64_t largest;     /* the largest count */
    double c_log2_c;      /* sum of c log2 c over the counts > 1 */
    double compensation;  /* Kahan's: what the sum lost to rounding */
} ts_sums;

/* Adds n counts, `stride` words apart, to s; zeros (empty slots) add nothing. */
static void ts_sums_add(ts_sums *s, const uint64_t *counts, int64_t n, int64_t stride)
{
    int64_t distinct = 0, singletons = 0;
    uint64_t largest = s->largest;
    double sum = s->c_log2_c, compensation = s->compensation;
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t c = counts[i * stride];
        distinct += c != 0;
        singletons += c == 1;
        if (c > largest) largest = c;
        if (c > 1) {
            const double term = (double)c * log2((double)c) - compensation;
            const double next = sum + term;
            compensation = (next - sum) - term;
            sum = next;
        }
    }
    s->distinct += distinct;
    s->singletons += singletons;
    s->largest = largest;
    s->c_log2_c = sum;
    s->compensation = compensation;
}

/* ts_sums_add of the counts a hash table holds. */
static void ts_table_sums(const ts_table *t, ts_sums *s)
{
    if (t->key_bytes > 8)
        ts_sums_add(s, t->counts, t->size, 1);
    else
        ts_sums_add(s, &t->slots[0].value, t->capacity, 2);
}

/* Adds, for each byte position j of the n keys (n x nb bytes) and each
 * value v, the counts of the keys whose byte j is v to hist[j * 256 + v]:
 * a neuron's firing count is then the sum over the values with its bit set.
 * Where repeated_only, of the keys counted more than once alone (the others
 * go to ts_once_firing). */
#define TS_HISTOGRAM_BLOCK 64

static void ts_byte_histograms_of(const uint8_t *keys, const uint64_t *counts, int64_t n,
                                  int64_t nb, uint64_t *hist, int repeated_only)
{
    /* A block of keys byte position by byte position: the histogram of one
     * position (2 KiB) stays in L1, where wide keys' whole histogram (nb *
     * 2 KiB) would not.  The block's counts are copied to a local, which the
     * histogram's stores cannot alias. */
    uint64_t block[TS_HISTOGRAM_BLOCK];
    const uint8_t *taken[TS_HISTOGRAM_BLOCK];
    for (int64_t first = 0; first < n; first += TS_HISTOGRAM_BLOCK) {
        const int64_t stop = n - first < TS_HISTOGRAM_BLOCK ? n : first + TS_HISTOGRAM_BLOCK;
        int64_t rows = 0;
        for (int64_t i = first; i < stop; ++i) {
            if (repeated_only && counts[i] == 1) continue;
            block[rows] = counts[i];
            taken[rows++] = keys + i * nb;
        }
        for (int64_t j = 0; j < nb; ++j) {
            uint64_t *const row = hist + j * 256;
            for (int64_t i = 0; i < rows; ++i) row[taken[i][j]] += block[i];
        }
    }
}

/* ts_byte_histograms_of every key. */
static void ts_byte_histograms(const uint8_t *keys, const uint64_t *counts, int64_t n,
                               int64_t nb, uint64_t *hist)
{
    ts_byte_histograms_of(keys, counts, n, nb, hist, 0);
}

/* Adds to fired[8 i + b] how many of the n keys (nb bytes each, nb > 8)
 * counted once (counts[k] == 1) have bit b of byte i set.  Nearly every key
 * of a wide layer's table is counted once (its own state), and bits need no
 * histogram there: bit b of each byte of a 64-bit word, (w >> b) &
 * 0x0101..01, is added to the byte lanes of accumulator b, eight neurons by
 * one shift, mask and add where a histogram pays an increment per byte;
 * lanes are emptied every 255 keys, before one could overflow.  (Narrow
 * keys gain nothing from it: their histograms, ts_word_histograms, cost
 * as much.) */
#define TS_LANE_ROWS 255

static void ts_once_firing(const uint8_t *keys, int64_t nb, const uint64_t *counts,
                           int64_t n, uint64_t *fired)
{
    const uint64_t ones = 0x0101010101010101ULL;
    for (int64_t first = 0; first < n; first += TS_LANE_ROWS) {
        const int64_t rows = n - first < TS_LANE_ROWS ? n - first : TS_LANE_ROWS;
        for (int64_t w = 0; 8 * w < nb; ++w) {
            const int64_t bytes = nb - 8 * w < 8 ? nb - 8 * w : 8;
            uint64_t lanes[8] = {0};
            for (int64_t i = 0; i < rows; ++i) { /* the word, or 0 for a repeated key */
                const uint64_t x = ts_load_word(keys + (first + i) * nb + 8 * w, bytes)
                                   & -(uint64_t)(counts[first + i] == 1);
                for (int b = 0; b < 8; ++b) lanes[b] += (x >> b) & ones;
            }
            for (int b = 0; b < 8; ++b)
                for (int64_t j = 0; j < bytes; ++j)
                    fired[64 * w + 8 * j + b] += (lanes[b] >> (8 * j)) & 255;
        }
    }
}

/* out[8 j + b] = the counts of the states whose bit b of byte j is set (a
 * neuron's firing count), from the byte histograms hist (nb x 256, see
 * ts_byte_histograms): the top bit's count is the sum of the upper half of
 * the values; folding that half onto the lower one leaves the histogram of
 * the lower bits, and so on down (contiguous sums, 512 adds a byte). */
static void ts_firing_counts(const uint64_t *hist, int64_t nb, uint64_t *out)
{
    uint64_t folded[256];
    for (int64_t j = 0; j < nb; ++j) {
        memcpy(folded, hist + j * 256, sizeof(folded));
        for (int b = 7; b >= 0; --b) {
            const int half = 1 << b;
            uint64_t fired = 0;
            for (int v = 0; v < half; ++v) {
                fired += folded[half + v];
                folded[v] += folded[half + v];
            }
            out[8 * j + b] = fired;
        }
    }
}

/* The counts of narrow keys (<= 8 bytes, as words) whose byte j is v, added
 * to hist[j * 256 + v]: one byte position at a time, into two local
 * histograms that alternate between keys, so that keys sharing a byte (a
 * dead or always-on group of neurons) do not wait on each other's stores. */
static void ts_word_histograms(const uint64_t *words, const uint64_t *counts, int64_t n,
                               int64_t nb, uint64_t *hist)
{
    uint64_t local[2][256];
    for (int64_t j = 0; j < nb; ++j) {
        memset(local, 0, sizeof(local));
        const int shift = 8 * (int)j;
        int64_t i = 0;
        for (; i + 2 <= n; i += 2) {
            local[0][(words[i] >> shift) & 255] += counts[i];
            local[1][(words[i + 1] >> shift) & 255] += counts[i + 1];
        }
        if (i < n) local[0][(words[i] >> shift) & 255] += counts[i];
        uint64_t *const row = hist + j * 256;
        for (int v = 0; v < 256; ++v) row[v] += local[0][v] + local[1][v];
    }
}

/* What the epoch's metrics read from the tables of one counter (see
 * ts_read_table), gathered here: the sums over their counts and, unless
 * hist is NULL, the byte histograms of their keys, added to hist.  Narrow
 * keys are gathered from their slots without a branch per slot (half or
 * more of the slots are empty, at random) until there are enough for
 * ts_word_histograms to pay its fixed cost. */
#define TS_GATHER_KEYS 8192

typedef struct {
    uint64_t words[TS_GATHER_KEYS], counts[TS_GATHER_KEYS];
    int64_t size, key_bytes;
    uint64_t *hist;
    uint64_t *fired; /* NULL, or 8 x key_bytes: firing counts of wide keys counted
                      * once (ts_once_firing), kept out of hist */
    ts_sums sums;
} ts_gather;

static void ts_gather_flush(ts_gather *g)
{
    ts_sums_add(&g->sums, g->counts, g->size, 1);
    if (g->hist != NULL)
        ts_word_histograms(g->words, g->counts, g->size, g->key_bytes, g->hist);
    g->size = 0;
}

/* Adds a hash table's sums, and its keys' byte histograms unless g->hist is
 * NULL, to g (narrow keys through g's buffer: flush it at the end). */
static void ts_gather_hashed(ts_gather *g, const ts_table *t)
{
    if (t->key_bytes > 8 || g->hist == NULL) {
        ts_table_sums(t, &g->sums);
        if (g->hist == NULL) return;
        ts_byte_histograms_of(t->arena, t->counts, t->size, t->key_bytes, g->hist,
                              g->fired != NULL);
        if (g->fired != NULL)
            ts_once_firing(t->arena, t->key_bytes, t->counts, t->size, g->fired);
        return;
    }
    int64_t k = g->size;
    for (int64_t i = 0; i < t->capacity; ++i) {
        if (k == TS_GATHER_KEYS) {
            g->size = k;
            ts_gather_flush(g);
            k = 0;
        }
        g->words[k] = t->slots[i].word;
        g->counts[k] = t->slots[i].value;
        k += t->slots[i].value != 0;
    }
    g->size = k;
}

#endif /* TS_TABLE_H */
