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
 *
 * Every key has one 64-bit hash.  Its top bits choose a shard (so threads can
 * count disjoint parts of one batch into separate tables without locks), its
 * bits 8..15 from the top choose a spill partition, its low bits the slot.
 */
#ifndef TS_TABLE_H
#define TS_TABLE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
} ts_table;

static inline uint64_t ts_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint64_t ts_load_word(const uint8_t *key, int64_t n)
{
    uint64_t word = 0;
    memcpy(&word, key, (size_t)n); /* little-endian hosts: byte i -> bits 8i */
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

static int ts_table_init(ts_table *t, int64_t key_bytes)
{
    memset(t, 0, sizeof(*t));
    t->key_bytes = key_bytes;
    t->capacity = 1024;
    t->slots = (ts_slot *)calloc((size_t)t->capacity, sizeof(ts_slot));
    return t->slots == NULL ? -1 : 0;
}

static void ts_table_free(ts_table *t)
{
    free(t->slots);
    free(t->arena);
    free(t->counts);
    memset(t, 0, sizeof(*t));
}

static int64_t ts_table_memory(const ts_table *t)
{
    return t->capacity * (int64_t)sizeof(ts_slot)
           + t->arena_capacity * (t->key_bytes + (int64_t)sizeof(uint64_t));
}

static inline uint64_t ts_slot_hash(const ts_table *t, const ts_slot *s)
{
    return t->key_bytes <= 8 ? ts_mix(s->word) : s->word;
}

static int ts_table_grow(ts_table *t)
{
    const int64_t capacity = t->capacity * 2;
    ts_slot *slots = (ts_slot *)calloc((size_t)capacity, sizeof(ts_slot));
    if (slots == NULL) return -1;
    const uint64_t mask = (uint64_t)capacity - 1;
    for (int64_t i = 0; i < t->capacity; ++i) {
        const ts_slot *old = &t->slots[i];
        if (old->value == 0) continue;
        uint64_t pos = ts_slot_hash(t, old) & mask;
        while (slots[pos].value != 0) pos = (pos + 1) & mask;
        slots[pos] = *old;
    }
    free(t->slots);
    t->slots = slots;
    t->capacity = capacity;
    return 0;
}

static int ts_arena_reserve(ts_table *t)
{
    if (t->size < t->arena_capacity) return 0;
    const int64_t capacity = t->arena_capacity ? t->arena_capacity * 2 : 1024;
    uint8_t *arena = (uint8_t *)realloc(t->arena, (size_t)(capacity * t->key_bytes));
    if (arena == NULL) return -1;
    t->arena = arena;
    uint64_t *counts = (uint64_t *)realloc(t->counts, (size_t)capacity * sizeof(uint64_t));
    if (counts == NULL) return -1;
    t->counts = counts;
    t->arena_capacity = capacity;
    return 0;
}

/* Adds `count` occurrences of one key whose hash is `h`.  Returns 0 or -1. */
static inline int ts_table_add(ts_table *t, const uint8_t *key, uint64_t h,
                               uint64_t count)
{
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
            if (ts_arena_reserve(t) != 0) {
                t->total -= count;
                return -1;
            }
            memcpy(t->arena + t->size * t->key_bytes, key, (size_t)t->key_bytes);
            t->counts[t->size] = count;
            s->word = h;
            s->value = (uint64_t)(++t->size);
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

/* Counts rows [0, n) of `keys` (n x key_bytes) into the shards
 * tables[k] for k = first, first + step, ...; a row belongs to shard
 * (hash >> (64 - shard_bits)).  With shard_bits == 0 there is one shard.
 * `weights` may be NULL (each row counts once).  Returns 0 or -1. */
static int ts_count_rows(ts_table *const *tables, int shard_bits, int first,
                         int step, const uint8_t *keys, const uint64_t *weights,
                         int64_t n)
{
    const int64_t nb = tables[0]->key_bytes;
    for (int64_t i = 0; i < n; ++i) {
        const uint8_t *key = keys + i * nb;
        const uint64_t h = ts_hash_key(key, nb);
        const int shard = shard_bits ? (int)(h >> (64 - shard_bits)) : 0;
        if (shard < first || (shard - first) % step != 0) continue;
        if (ts_table_add(tables[shard], key, h, weights ? weights[i] : 1) != 0)
            return -1;
    }
    return 0;
}

/* Writes the distinct keys (size x key_bytes) and their counts. */
static void ts_table_items(const ts_table *t, uint8_t *keys, uint64_t *counts)
{
    const int64_t nb = t->key_bytes;
    if (nb > 8) {
        memcpy(keys, t->arena, (size_t)(t->size * nb));
        memcpy(counts, t->counts, (size_t)t->size * sizeof(uint64_t));
        return;
    }
    int64_t k = 0;
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
