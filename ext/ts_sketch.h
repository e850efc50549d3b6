/*
 * A linear-counting sketch: how many distinct keys were added, estimated
 * from TS_SKETCH_BITS bits of which each key sets one (ts_hash_sketch_bit).
 *
 * Each hash table keeps a sketch of the keys it holds, and counting a batch
 * into shards keeps one per shard of the batch's rows: the union of the two
 * foresees how many keys the shard holds after the batch, so that it is sized
 * once (ts_batch.h).  Growing step by step instead would rehash the keys
 * again at every doubling and touch (page-fault) several times the memory
 * the final table needs.
 */
#ifndef TS_SKETCH_H
#define TS_SKETCH_H

#include <math.h>
#include <stdint.h>

#include "ts_hash.h"

#define TS_SKETCH_BITS (1 << TS_SKETCH_LOG2_BITS)
#define TS_SKETCH_WORDS (TS_SKETCH_BITS / 64)

static inline void ts_sketch_add(uint64_t *sketch, uint64_t h)
{
    const uint64_t bit = ts_hash_sketch_bit(h);
    sketch[bit >> 6] |= (uint64_t)1 << (bit & 63);
}

/* Adds every key of `other` to `sketch` (the sketch of the union). */
static inline void ts_sketch_union(uint64_t *sketch, const uint64_t *other)
{
    for (int w = 0; w < TS_SKETCH_WORDS; ++w) sketch[w] |= other[w];
}

/* Distinct keys added to the sketch, over-estimated by a little more than
 * the sketch's error (~2%): a reservation one key too small would make the
 * table grow.  Saturates near 9 * TS_SKETCH_BITS (all bits set). */
static int64_t ts_sketch_estimate(const uint64_t *sketch)
{
    int64_t clear = 0;
    for (int w = 0; w < TS_SKETCH_WORDS; ++w) clear += 64 - __builtin_popcountll(sketch[w]);
    if (clear == 0) clear = 1;
    const double estimate = -(double)TS_SKETCH_BITS * log((double)clear / TS_SKETCH_BITS);
    return (int64_t)(estimate * 1.04) + 16;
}

#endif /* TS_SKETCH_H */
