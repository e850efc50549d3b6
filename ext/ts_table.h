/*
 * Exact streaming counts of packed states: an open-addressing hash table
 * (linear probing, power-of-two capacity, load factor <= 1/2) whose memory
 * grows with the number of distinct states, never with the number of states.
 *
 * Narrow keys (<= 8 bytes, i.e. <= 64 neurons) live in the slot itself:
 *     slot.word = key bytes as a little-endian integer, slot.value = count.
 * Wide keys live in an arena, in first-seen order:
 *     slot.word = 64-bit hash, slot.value = arena index + 1,
 *     arena row = key bytes, counts[index] = count.
 * In both cases slot.value == 0 marks an empty slot.
 * Dense tables (states of <= TS_DENSE_MAX_BITS neurons, chosen by the
 * caller) skip hashing: dense[state as integer] = count, at most 8 MiB.
 *
 * Every key has one 64-bit hash.  Its top bits choose a shard (so threads can
 * count disjoint parts of one batch into separate tables without locks), its
 * bits 8..15 from the top choose a spill partition, its low bits the slot.
 *
 * Tables double when full, but are usually sized once per batch: a single
 * table for its size plus the batch's rows, a shard for the distinct keys
 * the union of its own and the batch's sketches foresees (ts_sketch_estimate).
 * Freed slot arrays are kept for reuse (ts_alloc_slots): fresh memory costs a
 * page fault per 4 KiB.
 */
#ifndef TS_TABLE_H
#define TS_TABLE_H

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

/* A linear-counting sketch: TS_SKETCH_BITS bits, one set per key from hash
 * bits 34.. (independent of the shard and slot bits).  From the fraction of
 * bits still clear it estimates how many distinct keys were added.  Each hash
 * table keeps one of the keys it holds, and counting keeps one per shard of
 * the rows of a batch: the union of the two foresees the shard's size after
 * the batch, so it is sized once (ts_insert_parts).  Growing step by step
 * would rehash keys again at every doubling and touch (page-fault) several
 * times the memory the final table needs. */
#define TS_SKETCH_BITS 4096
#define TS_SKETCH_WORDS (TS_SKETCH_BITS / 64)

static inline void ts_sketch_add(uint64_t *sketch, uint64_t h)
{
    const uint64_t bit = (h >> 34) & (TS_SKETCH_BITS - 1);
    sketch[bit >> 6] |= (uint64_t)1 << (bit & 63);
}

/* Distinct keys among the rows added to the sketch, over-estimated by a
 * little more than the sketch's error (~2%): a reservation one key too small
 * would make the table grow.  Saturates near 9 * TS_SKETCH_BITS. */
static int64_t ts_sketch_estimate(const uint64_t *sketch)
{
    int64_t clear = 0;
    for (int w = 0; w < TS_SKETCH_WORDS; ++w) clear += 64 - __builtin_popcountll(sketch[w]);
    if (clear == 0) clear = 1;
    const double estimate = -(double)TS_SKETCH_BITS * log((double)clear / TS_SKETCH_BITS);
    return (int64_t)(estimate * 1.04) + 16;
}

typedef struct {
    uint64_t word;
    uint64_t value;
} ts_slot;

typedef struct {
    int64_t key_bytes;
    int64_t capacity;     /* slots, a power of two */
    int64_t size;         /* distinct keys */
    uint64_t total;       /* sum of all counts */
    ts_slot *slots;
    uint8_t *arena;       /* wide keys only */
    uint64_t *counts;     /* wide keys only */
    int64_t arena_capacity;
    int dense_bits;       /* > 0: a dense table of 2**dense_bits counts */
    uint64_t *dense;
    uint64_t sketch[TS_SKETCH_WORDS]; /* of the keys held (hash tables) */
} ts_table;

#define TS_DENSE_MAX_BITS 20

static inline uint64_t ts_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* The first n <= 8 bytes of key as a little-endian integer (byte i -> bits
 * 8i), in fixed-size loads: a memcpy of variable length is a function call. */
static inline uint64_t ts_load_word(const uint8_t *key, int64_t n)
{
    uint64_t word = 0;
    if (n == 8) {
        memcpy(&word, key, 8);
        return word;
    }
    int shift = 0;
    if (n & 4) {
        uint32_t part;
        memcpy(&part, key, 4);
        word = part;
        key += 4;
        shift = 32;
    }
    if (n & 2) {
        uint16_t part;
        memcpy(&part, key, 2);
        word |= (uint64_t)part << shift;
        key += 2;
        shift += 16;
    }
    if (n & 1) word |= (uint64_t)key[0] << shift;
    return word;
}

static inline uint64_t ts_hash_key(const uint8_t *key, int64_t nb)
{
    if (nb <= 8) return ts_mix(ts_load_word(key, nb));
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)nb;
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        uint64_t w;
        memcpy(&w, key + i, 8);
        h = (h ^ w) * 0x9fb21c651e98df25ULL;
        h = (h << 31) | (h >> 33);
    }
    if (i < nb) h = (h ^ ts_load_word(key + i, nb - i)) * 0x9fb21c651e98df25ULL;
    return ts_mix(h);
}

/* Fresh zeroed memory for `bytes`.  Large blocks are aligned to 2 MiB and
 * marked for huge pages: every insert lands on a random slot, and 4 KiB pages
 * would make most of them a TLB miss on top of the cache miss. */
static void *ts_alloc_zeroed(size_t bytes)
{
    const size_t huge = (size_t)1 << 21;
    if (bytes < huge) return calloc(1, bytes);
    void *memory = NULL;
    if (posix_memalign(&memory, huge, bytes) != 0) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(memory, bytes, MADV_HUGEPAGE);
#endif
    memset(memory, 0, bytes);
    return memory;
}

/* Slot arrays freed by growing or dropped tables are kept for reuse, one
 * list per capacity (a power of two), up to TS_CACHE_BYTES in all.  Fresh
 * memory costs a page fault per 4 KiB (the kernel zeroes each page), which
 * for tables that grow in many steps, or are built anew every epoch, costs
 * more than all their inserts; clearing a reused array costs a memset. */
#define TS_CACHE_BYTES ((int64_t)64 << 20)
#define TS_CACHE_CLASSES 64

static struct {
    pthread_mutex_t lock;
    void *head[TS_CACHE_CLASSES]; /* each free array starts with the next one */
    int64_t bytes;
} ts_cache = {PTHREAD_MUTEX_INITIALIZER, {NULL}, 0};

/* A child forked while another thread held the lock would wait for it
 * forever: hold it across fork() (pthread_atfork, registered at import). */
static void ts_cache_lock(void) { pthread_mutex_lock(&ts_cache.lock); }
static void ts_cache_unlock(void) { pthread_mutex_unlock(&ts_cache.lock); }

static int ts_cache_register_fork_handlers(void)
{
    return pthread_atfork(ts_cache_lock, ts_cache_unlock, ts_cache_unlock);
}

static inline int ts_capacity_class(int64_t capacity)
{
    return 63 - __builtin_clzll((unsigned long long)capacity);
}

static ts_slot *ts_alloc_slots(int64_t capacity)
{
    const size_t bytes = (size_t)capacity * sizeof(ts_slot);
    const int cls = ts_capacity_class(capacity);
    pthread_mutex_lock(&ts_cache.lock);
    void *memory = ts_cache.head[cls];
    if (memory != NULL) {
        memcpy(&ts_cache.head[cls], memory, sizeof(void *));
        ts_cache.bytes -= (int64_t)bytes;
    }
    pthread_mutex_unlock(&ts_cache.lock);
    if (memory == NULL) return (ts_slot *)ts_alloc_zeroed(bytes);
    memset(memory, 0, bytes);
    return (ts_slot *)memory;
}

static void ts_free_slots(ts_slot *slots, int64_t capacity)
{
    if (slots == NULL) return;
    const int64_t bytes = capacity * (int64_t)sizeof(ts_slot);
    const int cls = ts_capacity_class(capacity);
    pthread_mutex_lock(&ts_cache.lock);
    const int keep = ts_cache.bytes + bytes <= TS_CACHE_BYTES;
    if (keep) {
        memcpy(slots, &ts_cache.head[cls], sizeof(void *));
        ts_cache.head[cls] = slots;
        ts_cache.bytes += bytes;
    }
    pthread_mutex_unlock(&ts_cache.lock);
    if (!keep) free(slots);
}

/* dense_bits > 0 (and <= TS_DENSE_MAX_BITS) makes a dense table for
 * states of that many neurons; 0 makes a hash table. */
static int ts_table_init(ts_table *t, int64_t key_bytes, int dense_bits)
{
    memset(t, 0, sizeof(*t));
    t->key_bytes = key_bytes;
    if (dense_bits > 0) {
        if (dense_bits > TS_DENSE_MAX_BITS || (dense_bits + 7) / 8 != key_bytes) return -2;
        t->dense_bits = dense_bits;
        t->dense = (uint64_t *)ts_alloc_zeroed(((size_t)1 << dense_bits) * sizeof(uint64_t));
        return t->dense == NULL ? -1 : 0;
    }
    t->capacity = 16;
    t->slots = ts_alloc_slots(t->capacity);
    return t->slots == NULL ? -1 : 0;
}

static void ts_table_free(ts_table *t)
{
    ts_free_slots(t->slots, t->capacity);
    free(t->arena);
    free(t->counts);
    free(t->dense);
    memset(t, 0, sizeof(*t));
}

static int64_t ts_table_memory(const ts_table *t)
{
    if (t->dense != NULL) return ((int64_t)1 << t->dense_bits) * (int64_t)sizeof(uint64_t);
    return t->capacity * (int64_t)sizeof(ts_slot)
           + t->arena_capacity * (t->key_bytes + (int64_t)sizeof(uint64_t));
}

static inline uint64_t ts_slot_hash(const ts_table *t, const ts_slot *s)
{
    return t->key_bytes <= 8 ? ts_mix(s->word) : s->word;
}

/* Rehashes every key into `capacity` slots (a power of two). */
static int ts_table_resize(ts_table *t, int64_t capacity)
{
    ts_slot *slots = ts_alloc_slots(capacity);
    if (slots == NULL) return -1;
    const uint64_t mask = (uint64_t)capacity - 1;
    for (int64_t i = 0; i < t->capacity; ++i) {
        const ts_slot *old = &t->slots[i];
        if (old->value == 0) continue;
        uint64_t pos = ts_slot_hash(t, old) & mask;
        while (slots[pos].value != 0) pos = (pos + 1) & mask;
        slots[pos] = *old;
    }
    ts_free_slots(t->slots, t->capacity);
    t->slots = slots;
    t->capacity = capacity;
    return 0;
}

static int ts_table_grow(ts_table *t)
{
    return ts_table_resize(t, t->capacity * 2);
}

/* Room in the arena (wide keys) for `keys` keys, at least. */
static int ts_arena_grow(ts_table *t, int64_t keys)
{
    if (keys <= t->arena_capacity) return 0;
    int64_t capacity = t->arena_capacity ? t->arena_capacity : 16;
    while (capacity < keys) capacity *= 2;
    uint8_t *arena = (uint8_t *)realloc(t->arena, (size_t)(capacity * t->key_bytes));
    if (arena == NULL) return -1;
    t->arena = arena;
    uint64_t *counts = (uint64_t *)realloc(t->counts, (size_t)capacity * sizeof(uint64_t));
    if (counts == NULL) return -1;
    t->counts = counts;
    t->arena_capacity = capacity;
    return 0;
}

/* Grows the table (and the arena of wide keys) at once to hold `keys`
 * distinct keys at load <= 1/2, instead of step by step while they arrive.
 * `keys` may be an upper bound, not an estimate: then the arena is grown
 * only while that costs at most TS_ARENA_AHEAD bytes (its keys can be wide). */
#define TS_ARENA_AHEAD ((int64_t)1 << 20)

static int ts_table_reserve(ts_table *t, int64_t keys, int upper_bound)
{
    int64_t capacity = t->capacity;
    while (capacity < 2 * (keys + 1)) capacity *= 2;
    if (t->key_bytes > 8
        && (!upper_bound || keys * (t->key_bytes + 8) <= TS_ARENA_AHEAD)
        && ts_arena_grow(t, keys) != 0)
        return -1;
    return capacity == t->capacity ? 0 : ts_table_resize(t, capacity);
}

/* Adds `count` occurrences of one key whose hash is `h`.  Returns 0 or -1. */
static inline int ts_table_add(ts_table *t, const uint8_t *key, uint64_t h,
                               uint64_t count)
{
    if (count == 0) return 0; /* a zero count adds no state (and 0 marks empty slots) */
    if (t->dense != NULL) {
        const uint64_t mask = ((uint64_t)1 << t->dense_bits) - 1;
        uint64_t *cell = &t->dense[ts_load_word(key, t->key_bytes) & mask];
        t->size += *cell == 0;
        *cell += count;
        t->total += count;
        return 0;
    }
    if (2 * (t->size + 1) > t->capacity && ts_table_grow(t) != 0) return -1;
    const uint64_t mask = (uint64_t)t->capacity - 1;
    uint64_t pos = h & mask;
    t->total += count;
    if (t->key_bytes <= 8) {
        const uint64_t word = ts_load_word(key, t->key_bytes);
        for (;;) {
            ts_slot *s = &t->slots[pos];
            if (s->value == 0) {
                s->word = word;
                s->value = count;
                ++t->size;
                ts_sketch_add(t->sketch, h);
                return 0;
            }
            if (s->word == word) {
                s->value += count;
                return 0;
            }
            pos = (pos + 1) & mask;
        }
    }
    for (;;) {
        ts_slot *s = &t->slots[pos];
        if (s->value == 0) {
            if (ts_arena_grow(t, t->size + 1) != 0) {
                t->total -= count;
                return -1;
            }
            memcpy(t->arena + t->size * t->key_bytes, key, (size_t)t->key_bytes);
            t->counts[t->size] = count;
            s->word = h;
            s->value = (uint64_t)(++t->size);
            ts_sketch_add(t->sketch, h);
            return 0;
        }
        if (s->word == h) {
            const int64_t index = (int64_t)s->value - 1;
            if (memcmp(t->arena + index * t->key_bytes, key, (size_t)t->key_bytes) == 0) {
                t->counts[index] += count;
                return 0;
            }
        }
        pos = (pos + 1) & mask;
    }
}

/* Counting many rows into many shards: rows are first radix-partitioned by
 * shard (hash, histogram, scatter of (hash, key or row) records: phase one,
 * ts_partition), then each shard's records are inserted together (phase
 * two, ts_insert_parts): with many shards each table is small enough to stay
 * in cache, where inserting row after row into one big table would miss on
 * almost every row.  Inserts also prefetch the home slot a few records
 * ahead.  Threads split phase one by rows and phase two by shards. */
#define TS_CHUNK_ROWS ((int64_t)1 << 18)
#define TS_AHEAD 16

/* A row routed to its shard: its hash and either its row index or, for
 * unweighted narrow keys, the key itself (saving a random read per insert). */
typedef struct {
    uint64_t hash;
    uint64_t payload;
} ts_record;

/* Narrow keys (<= 8 bytes), the hot case, with the table's fields held in
 * locals: stores into slots could alias them, and reloading them on every
 * row costs more than the probe. */
static int ts_insert_narrow(ts_table *t, const ts_record *records, int64_t m,
                            const uint8_t *keys, const uint64_t *weights)
{
    const int64_t nb = t->key_bytes;
    ts_slot *slots = t->slots;
    uint64_t mask = (uint64_t)t->capacity - 1;
    int64_t size = t->size;
    uint64_t total = 0;
    for (int64_t j = 0; j < m; ++j) {
        if (j + TS_AHEAD < m) __builtin_prefetch(&slots[records[j + TS_AHEAD].hash & mask], 1);
        const uint64_t payload = records[j].payload;
        const uint64_t word = weights ? ts_load_word(keys + payload * nb, nb) : payload;
        const uint64_t count = weights ? weights[payload] : 1;
        if (count == 0) continue;
        uint64_t pos = records[j].hash & mask;
        total += count;
        for (;;) {
            ts_slot *slot = &slots[pos];
            if (slot->word == word && slot->value != 0) {
                slot->value += count;
                break;
            }
            if (slot->value == 0) {
                if (2 * (size + 1) > (int64_t)mask + 1) {
                    t->size = size;
                    if (ts_table_grow(t) != 0) {
                        t->total += total - count;
                        return -1;
                    }
                    slots = t->slots;
                    mask = (uint64_t)t->capacity - 1;
                    pos = records[j].hash & mask;
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
    t->total += total;
    return 0;
}

static int ts_insert_records(ts_table *t, const ts_record *records, int64_t m,
                             const uint8_t *keys, const uint64_t *weights)
{
    if (t->key_bytes <= 8) return ts_insert_narrow(t, records, m, keys, weights);
    const int64_t nb = t->key_bytes;
    for (int64_t j = 0; j < m; ++j) {
        if (j + TS_AHEAD < m)
            __builtin_prefetch(
                &t->slots[records[j + TS_AHEAD].hash & (uint64_t)(t->capacity - 1)], 1);
        const uint64_t row = records[j].payload;
        if (ts_table_add(t, keys + row * nb, records[j].hash, weights ? weights[row] : 1) != 0)
            return -1;
    }
    return 0;
}

/* One dense table: no hashing, no shards.  Each row's state is read once,
 * TS_DENSE_AHEAD rows before its count, and its cell prefetched then
 * (scattered states miss the cache; reading each key twice, to prefetch and
 * to count, cost more than the prefetch saves when states repeat).  Far
 * ahead: between a framework's kernels the table leaves the cache, and a miss
 * to memory takes longer than counting 16 rows (64 rows ahead: LeNet conv_1
 * in a Lightning loop counted 5.76M states in 14 ms instead of 19.5 ms).
 * Counters are kept in locals: the counts could alias the table's fields. */
#define TS_DENSE_AHEAD 64
static void ts_count_dense(ts_table *t, const uint8_t *keys, const uint64_t *weights,
                           int64_t n)
{
    const int64_t nb = t->key_bytes;
    const uint64_t mask = ((uint64_t)1 << t->dense_bits) - 1;
    uint64_t *const dense = t->dense;
    uint64_t ahead[TS_DENSE_AHEAD];
    int64_t size = t->size;
    uint64_t total = 0;
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
        total += count;
        if (i + TS_DENSE_AHEAD < n) {
            *state = ts_load_word(keys + (i + TS_DENSE_AHEAD) * nb, nb) & mask;
            __builtin_prefetch(&dense[*state], 1);
        }
    }
    t->size = size;
    t->total += total;
}

/* One hash table: no partitioning; each row is hashed TS_AHEAD rows before
 * it is inserted, and its home slot prefetched then. */
static int ts_count_direct(ts_table *t, const uint8_t *keys, const uint64_t *weights,
                           int64_t n)
{
    const int64_t nb = t->key_bytes;
    const int key_in_record = nb <= 8 && weights == NULL; /* as ts_insert_narrow expects */
    ts_record ring[TS_AHEAD];
    for (int64_t i = 0; i < n + TS_AHEAD; ++i) {
        ts_record *slot = &ring[i % TS_AHEAD];
        if (i >= TS_AHEAD
            && ts_insert_records(t, slot, 1, keys, weights) != 0) return -1;
        if (i < n) {
            slot->hash = ts_hash_key(keys + i * nb, nb);
            slot->payload = key_in_record ? ts_load_word(keys + i * nb, nb) : (uint64_t)i;
            __builtin_prefetch(&t->slots[slot->hash & (uint64_t)(t->capacity - 1)], 1);
        }
    }
    return 0;
}

/* Scratch of one partitioning worker, owned by the caller (who keeps it
 * between calls: fresh buffers on every call would cost more in page faults
 * than the counting itself).  For 2**shard_bits shards:
 *   records, hashes: TS_CHUNK_ROWS each;  start: n_shards + 1;  fill: n_shards;
 *   sketches: n_shards * TS_SKETCH_WORDS, cleared by the caller at the start
 *   of a batch and accumulated over its chunks. */
typedef struct {
    ts_record *records;
    uint64_t *hashes;
    int64_t *start;
    int64_t *fill;
    uint64_t *sketches;
} ts_part;

/* Adds rows [begin, end) of `keys` to part->sketches, each to its shard's:
 * the rows after the first chunk of a batch, before that chunk's inserts, so
 * that they size each shard for the whole batch at once. */
static void ts_sketch_rows(ts_part *part, int shard_bits, const uint8_t *keys, int64_t nb,
                           int64_t begin, int64_t end)
{
    for (int64_t i = begin; i < end; ++i) {
        const uint64_t h = ts_hash_key(keys + i * nb, nb);
        ts_sketch_add(part->sketches + (h >> (64 - shard_bits)) * TS_SKETCH_WORDS, h);
    }
}

/* Phase one of counting: rows [begin, end) of `keys` (at most TS_CHUNK_ROWS)
 * hashed, sketched (unless `sketched` already) and grouped by shard into
 * part->records; shard s gets records [start[s], start[s + 1]).  A record's
 * payload is the key itself for narrow keys counted once each, else the row
 * number (see ts_record). */
static void ts_partition(ts_part *part, int shard_bits, const uint8_t *keys, int64_t nb,
                         int weighted, int sketched, int64_t begin, int64_t end)
{
    const int n_shards = 1 << shard_bits;
    const int key_in_record = nb <= 8 && !weighted;
    int64_t *const start = part->start, *const fill = part->fill;
    uint64_t *const hashes = part->hashes;
    memset(fill, 0, (size_t)n_shards * sizeof(int64_t));
    for (int64_t i = begin; i < end; ++i) {
        const uint64_t h = ts_hash_key(keys + i * nb, nb);
        const int s = (int)(h >> (64 - shard_bits));
        hashes[i - begin] = h;
        ++fill[s];
        if (!sketched) ts_sketch_add(part->sketches + s * TS_SKETCH_WORDS, h);
    }
    start[0] = 0;
    for (int s = 0; s < n_shards; ++s) {
        start[s + 1] = start[s] + fill[s];
        fill[s] = start[s];
    }
    for (int64_t i = begin; i < end; ++i) {
        const uint64_t h = hashes[i - begin];
        ts_record *r = &part->records[fill[h >> (64 - shard_bits)]++];
        r->hash = h;
        r->payload = key_in_record ? ts_load_word(keys + i * nb, nb) : (uint64_t)i;
    }
}

/* ORs shard s's sketch of every part (the rows of one batch so far) into `sketch`. */
static void ts_add_parts_sketch(uint64_t *sketch, const ts_part *parts, int n_parts, int s)
{
    for (int p = 0; p < n_parts; ++p)
        for (int w = 0; w < TS_SKETCH_WORDS; ++w)
            sketch[w] |= parts[p].sketches[s * TS_SKETCH_WORDS + w];
}

/* Distinct keys that the parts' sketches (of one batch so far) foresee, over
 * all shards. */
static int64_t ts_parts_estimate(const ts_part *parts, int n_parts, int shard_bits)
{
    uint64_t sketch[TS_SKETCH_WORDS];
    int64_t distinct = 0;
    for (int s = 0; s < (1 << shard_bits); ++s) {
        memset(sketch, 0, sizeof(sketch));
        ts_add_parts_sketch(sketch, parts, n_parts, s);
        distinct += ts_sketch_estimate(sketch);
    }
    return distinct;
}

/* Whether the rows after a batch's first chunk are worth sketching before
 * that chunk is inserted: when its rows were mostly distinct, so that tables
 * would grow chunk after chunk (hashing them twice costs more than it saves
 * where the first chunk already holds most of the batch's keys). */
static int ts_sketch_ahead(const ts_part *parts, int n_parts, int shard_bits,
                           int64_t first_chunk_rows)
{
    return 4 * ts_parts_estimate(parts, n_parts, shard_bits) > first_chunk_rows;
}

/* Phase two: shards first, first + step, ... each insert their records from
 * every part (so `step` threads can insert at once, each into its own
 * shards), after growing at once to the size foreseen by the union of the
 * table's sketch and the parts' sketches of the batch. */
static int ts_insert_parts(ts_table *const *tables, int shard_bits, int first, int step,
                           const uint8_t *keys, const uint64_t *weights,
                           const ts_part *parts, int n_parts)
{
    uint64_t sketch[TS_SKETCH_WORDS];
    for (int s = first; s < (1 << shard_bits); s += step) {
        ts_table *t = tables[s];
        int64_t m_s = 0;
        for (int p = 0; p < n_parts; ++p) m_s += parts[p].start[s + 1] - parts[p].start[s];
        if (2 * (t->size + m_s + 1) > t->capacity) {
            memcpy(sketch, t->sketch, sizeof(sketch));
            ts_add_parts_sketch(sketch, parts, n_parts, s);
            if (ts_table_reserve(t, ts_sketch_estimate(sketch), 0) != 0) return -1;
        }
        for (int p = 0; p < n_parts; ++p)
            if (ts_insert_records(t, parts[p].records + parts[p].start[s],
                                  parts[p].start[s + 1] - parts[p].start[s], keys, weights) != 0)
                return -1;
    }
    return 0;
}

/* Counts rows [0, n) of `keys` (n x key_bytes) into the shards `tables`
 * (2**shard_bits of them; a row belongs to shard hash >> (64 - shard_bits))
 * on the calling thread.  `weights` may be NULL (each row counts once);
 * `part` (scratch, see ts_part) may be NULL when shard_bits == 0.
 * Returns 0 or -1 (out of memory). */
static int ts_count_rows(ts_table *const *tables, int shard_bits, const uint8_t *keys,
                         const uint64_t *weights, int64_t n, ts_part *part)
{
    if (tables[0]->dense != NULL) {
        ts_count_dense(tables[0], keys, weights, n);
        return 0;
    }
    if (shard_bits == 0) {
        /* A single table holds at most size + n keys after this: sized for
         * that at once (callers split into shards before it gets large). */
        if (ts_table_reserve(tables[0], tables[0]->size + n, 1) != 0) return -1;
        return ts_count_direct(tables[0], keys, weights, n);
    }
    const int64_t nb = tables[0]->key_bytes;
    int sketched = 0; /* the rows after the first chunk, ahead (see ts_sketch_ahead) */
    memset(part->sketches, 0, ((size_t)TS_SKETCH_WORDS << shard_bits) * sizeof(uint64_t));
    for (int64_t base = 0; base < n; base += TS_CHUNK_ROWS) {
        const int64_t end = n - base < TS_CHUNK_ROWS ? n : base + TS_CHUNK_ROWS;
        ts_partition(part, shard_bits, keys, nb, weights != NULL, sketched, base, end);
        if (base == 0 && end < n && ts_sketch_ahead(part, 1, shard_bits, end)) {
            ts_sketch_rows(part, shard_bits, keys, nb, end, n);
            sketched = 1;
        }
        if (ts_insert_parts(tables, shard_bits, 0, 1, keys, weights, part, 1) != 0) return -1;
    }
    return 0;
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
    into->total += source->total;
    source->size = 0;
    source->total = 0;
}

/* Writes the distinct keys (size x key_bytes, unless `keys` is NULL) and
 * their counts. */
static void ts_table_items(const ts_table *t, uint8_t *keys, uint64_t *counts)
{
    const int64_t nb = t->key_bytes;
    int64_t k = 0;
    if (t->dense != NULL) {
        for (uint64_t state = 0; state < ((uint64_t)1 << t->dense_bits); ++state) {
            if (t->dense[state] == 0) continue;
            if (keys) memcpy(keys + k * nb, &state, (size_t)nb); /* little-endian hosts */
            counts[k++] = t->dense[state];
        }
        return;
    }
    if (nb > 8) {
        if (keys) memcpy(keys, t->arena, (size_t)(t->size * nb));
        memcpy(counts, t->counts, (size_t)t->size * sizeof(uint64_t));
        return;
    }
    if (keys == NULL) {
        /* Every slot's count is written to the next output position, which
         * only a used slot advances: no branch to mispredict on a half-empty
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
        memcpy(keys + k * nb, &s->word, (size_t)nb);
        counts[k++] = s->value;
    }
}

/* Spill partition of each key: bits 8..8+partition_bits from the top. */
static void ts_partitions(const uint8_t *keys, int64_t n, int64_t nb,
                          int partition_bits, int32_t *out)
{
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t h = ts_hash_key(keys + i * nb, nb);
        out[i] = (int32_t)((h << 8) >> (64 - partition_bits));
    }
}

#endif /* TS_TABLE_H */
