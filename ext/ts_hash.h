/*
 * Keys and their hashes.
 *
 * A key is one packed state: key_bytes bytes, neuron i in bit i % 8 of byte
 * i / 8.  Narrow keys (<= 8 bytes) are also read as one little-endian integer
 * (ts_load_word), which is how hash tables store them.
 *
 * Every key has one 64-bit hash (ts_hash_key).  Each use of it reads its own
 * field of bits, so that the uses are independent of each other:
 *
 *   bit 63      56 55          46 45         34 33                 0
 *      [ shard    ][ spill part.  ][ sketch bit ][ ...  slot      ]
 *
 *  - shard (ts_hash_shard): the top shard_bits bits (<= TS_MAX_SHARD_BITS)
 *    pick the table of a sharded counter;
 *  - spill partition (ts_hash_partition): the partition_bits bits
 *    (<= TS_MAX_PARTITION_BITS) below the shard field pick the file a state
 *    spills to, so every partition spreads over all shards;
 *  - sketch bit (ts_hash_sketch_bit): TS_SKETCH_LOG2_BITS bits from bit
 *    TS_SKETCH_SHIFT pick the bit a key sets in a sketch (ts_sketch.h): the
 *    keys of one shard or partition still spread over the whole sketch;
 *  - slot (ts_hash_slot): the low bits pick the home slot in a table, whose
 *    keys share their shard bits.
 */
#ifndef TS_HASH_H
#define TS_HASH_H

#include <stdint.h>
#include <string.h>

#define TS_MAX_SHARD_BITS 8
#define TS_MAX_PARTITION_BITS 10
#define TS_SKETCH_SHIFT 34
#define TS_SKETCH_LOG2_BITS 12

/* The finaliser of MurmurHash3: every input bit affects every output bit. */
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

/* The hash of a key of nb bytes.  A narrow key's hash is ts_mix of its word,
 * so a table can recompute it from the slot alone when it grows. */
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

/* The top `bits` bits of h (0 when bits == 0).  Shifting by 64 is undefined
 * in C, so the shift is done in two steps of at most 63. */
static inline uint64_t ts_top_bits(uint64_t h, int bits)
{
    return (h >> 1) >> (63 - bits);
}

/* Shard of a key among 2**shard_bits shards. */
static inline int ts_hash_shard(uint64_t h, int shard_bits)
{
    return (int)ts_top_bits(h, shard_bits);
}

/* Spill partition of a key among 2**partition_bits partitions. */
static inline int ts_hash_partition(uint64_t h, int partition_bits)
{
    return (int)ts_top_bits(h << TS_MAX_SHARD_BITS, partition_bits);
}

/* The bit a key sets in a sketch of 2**TS_SKETCH_LOG2_BITS bits. */
static inline uint64_t ts_hash_sketch_bit(uint64_t h)
{
    return (h >> TS_SKETCH_SHIFT) & (((uint64_t)1 << TS_SKETCH_LOG2_BITS) - 1);
}

/* Home slot of a key in a table of mask + 1 slots (a power of two). */
static inline uint64_t ts_hash_slot(uint64_t h, uint64_t mask)
{
    return h & mask;
}

/* The spill partition of each of the n keys of nb bytes. */
static void ts_hash_partitions(const uint8_t *keys, int64_t n, int64_t nb, int partition_bits,
                               int32_t *out)
{
    for (int64_t i = 0; i < n; ++i)
        out[i] = ts_hash_partition(ts_hash_key(keys + i * nb, nb), partition_bits);
}

#endif /* TS_HASH_H */
