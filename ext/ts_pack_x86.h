/*
 * float32 packing kernels and byte transposes for x86-64 (included by
 * ts_pack.h, which declares ts_view, ts_isa and ts_isa_limit).
 *
 * SSE2 is the x86-64 baseline, so its kernels are always built.  The AVX2
 * kernels are compiled for that target alone (a function attribute) and run
 * only where the CPU has AVX2 (ts_pack_isa): the module stays portable.
 *
 * A comparison `value > 0` of float32 lanes yields all ones or zero; NaN
 * compares false (ordered predicate), -0.0 is not > 0: the scalar rule.
 */
#ifndef TS_PACK_X86_H
#define TS_PACK_X86_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* The set the kernels use now: the highest this CPU has, within the limit.
 * The packing threads of a first call may detect it at once: they store the
 * same value, atomically (a plain load on x86-64). */
static ts_isa ts_pack_isa(void)
{
    static int detected = -1;
    int isa = __atomic_load_n(&detected, __ATOMIC_RELAXED);
    if (isa < 0) {
        __builtin_cpu_init();
        isa = __builtin_cpu_supports("avx2") ? TS_ISA_AVX2 : TS_ISA_SSE2;
        __atomic_store_n(&detected, isa, __ATOMIC_RELAXED);
    }
    return (ts_isa)(isa < ts_isa_limit ? isa : ts_isa_limit);
}

/* ---- Contiguous values: eight per output byte, value j -> bit j ---- */

/* bits[0, ceil(count / 8)) from `count` contiguous values. */
static void ts_fire_bits_f32_sse2(const float *x, int64_t count, uint8_t *bits)
{
    const __m128 zero = _mm_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= count; j += 16) {
        const int word = _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(x + j), zero))
                         | _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(x + j + 4), zero)) << 4
                         | _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(x + j + 8), zero)) << 8
                         | _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(x + j + 12), zero)) << 12;
        const uint16_t half = (uint16_t)word;
        memcpy(bits + j / 8, &half, 2);
    }
    for (; j < count; j += 8) {
        uint8_t byte = 0;
        for (int64_t k = 0; k < 8 && j + k < count; ++k) byte |= (uint8_t)((x[j + k] > 0) << k);
        bits[j / 8] = byte;
    }
}

__attribute__((target("avx2")))
static void ts_fire_bits_f32_avx2(const float *x, int64_t count, uint8_t *bits)
{
    const __m256 zero = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= count; j += 32) {
        const uint32_t word =
            (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j), zero, _CMP_GT_OQ))
            | (uint32_t)_mm256_movemask_ps(
                  _mm256_cmp_ps(_mm256_loadu_ps(x + j + 8), zero, _CMP_GT_OQ)) << 8
            | (uint32_t)_mm256_movemask_ps(
                  _mm256_cmp_ps(_mm256_loadu_ps(x + j + 16), zero, _CMP_GT_OQ)) << 16
            | (uint32_t)_mm256_movemask_ps(
                  _mm256_cmp_ps(_mm256_loadu_ps(x + j + 24), zero, _CMP_GT_OQ)) << 24;
        memcpy(bits + j / 8, &word, 4);
    }
    ts_fire_bits_f32_sse2(x + j, count - j, bits + j / 8);
}

static void ts_fire_bits_f32(ts_isa isa, const float *x, int64_t count, uint8_t *bits)
{
    if (isa == TS_ISA_AVX2) ts_fire_bits_f32_avx2(x, count, bits);
    else ts_fire_bits_f32_sse2(x, count, bits);
}

/* ---- Rows with contiguous neurons: a row's bits are those of its n values ---- */

static void ts_pack_rows_f32_x86(ts_isa isa, const ts_view *v, uint8_t *out,
                                 int64_t row_begin, int64_t row_end)
{
    const int64_t n = v->n_neurons, nb = (n + 7) / 8;
    int64_t a = row_begin / v->n_states, s = row_begin % v->n_states;
    for (int64_t row = row_begin; row < row_end; ++row, ++s) {
        if (s == v->n_states) { s = 0; ++a; }
        const float *x = (const float *)(v->base + a * v->stride_outer + s * v->stride_state);
        ts_fire_bits_f32(isa, x, n, out + row * nb);
    }
}

/* ---- Runs: neurons and states both contiguous (row-major rows) ----
 *
 * The firing bits of a C-contiguous (states, neurons) run, in order, are the
 * rows' bits one after another: the run is compared as one, then row r's n
 * bits are cut out at bit r * n (or, when n is a multiple of 8, the bits
 * already are the packed rows). */

#define TS_RUN_ROWS 512       /* rows compared at a time when bits are cut out */
#define TS_RUN_MAX_NEURONS 56 /* a row's bits and their offset fit one 64-bit word */

/* Whether ts_pack_run_f32 packs this view (float32 checked by the caller). */
static int ts_run_packable(const ts_view *v)
{
    return v->stride_neuron == (int64_t)sizeof(float)
           && v->stride_state == v->n_neurons * (int64_t)sizeof(float)
           && (v->n_neurons % 8 == 0 || v->n_neurons <= TS_RUN_MAX_NEURONS);
}

/* Rows [row_begin, row_end) of a view ts_run_packable accepts. */
static void ts_pack_run_f32(ts_isa isa, const ts_view *v, uint8_t *out, int64_t row_begin,
                            int64_t row_end)
{
    const int64_t n = v->n_neurons, nb = (n + 7) / 8;
    const uint64_t keep = n >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << n) - 1;
    uint8_t bits[(TS_RUN_ROWS * TS_RUN_MAX_NEURONS + 7) / 8 + 8];
    int64_t row = row_begin;
    while (row < row_end) {
        const int64_t a = row / v->n_states, s = row % v->n_states;
        int64_t m = v->n_states - s;
        if (m > row_end - row) m = row_end - row;
        const float *x = (const float *)(v->base + a * v->stride_outer + s * v->stride_state);
        if (n % 8 == 0) {
            ts_fire_bits_f32(isa, x, m * n, out + row * nb);
            row += m;
            continue;
        }
        if (m > TS_RUN_ROWS) m = TS_RUN_ROWS;
        ts_fire_bits_f32(isa, x, m * n, bits);
        memset(bits + (m * n + 7) / 8, 0, 8);
        uint8_t *o = out + row * nb;
        const int64_t room = (row_end - row) * nb;
        for (int64_t r = 0; r < m; ++r) {
            uint64_t word;
            memcpy(&word, bits + r * n / 8, 8);
            word = (word >> (r * n % 8)) & keep;
            if (r * nb + 8 <= room) /* the word's surplus: the next row's */
                memcpy(o + r * nb, &word, 8);
            else
                for (int64_t byte = 0; byte < nb; ++byte) o[r * nb + byte] = (uint8_t)(word >> (8 * byte));
        }
        row += m;
    }
}

/* ---- Strided neurons: one byte (up to eight neurons) for m contiguous rows ----
 *
 * acc[i] gets bit k from row i of neuron k's column (`stride_neuron` bytes
 * apart), k < count.  One neuron at a time over all m rows: in NCHW the
 * columns follow each other, so the input is read as one stream in address
 * order (reading eight columns side by side was slower once the batch
 * spills out of the caches), while acc (at most a block's row count of
 * bytes) stays in L1.  A comparison narrowed to bytes is all ones where the
 * neuron fires; masked to its bit, it is OR-ed into acc. */

static void ts_group_f32_sse2(const char *x, int64_t stride_neuron, int count, int64_t m,
                              uint8_t *acc)
{
    const __m128 zero = _mm_setzero_ps();
    const int64_t end = m & ~(int64_t)15;
    for (int k = 0; k < count; ++k) {
        const float *column = (const float *)(x + k * stride_neuron);
        const __m128i bit = _mm_set1_epi8((char)(1 << k));
        for (int64_t i = 0; i < end; i += 16) {
            const float *v = column + i;
            const __m128i fires = _mm_packs_epi16(
                _mm_packs_epi32(_mm_castps_si128(_mm_cmpgt_ps(_mm_loadu_ps(v), zero)),
                                _mm_castps_si128(_mm_cmpgt_ps(_mm_loadu_ps(v + 4), zero))),
                _mm_packs_epi32(_mm_castps_si128(_mm_cmpgt_ps(_mm_loadu_ps(v + 8), zero)),
                                _mm_castps_si128(_mm_cmpgt_ps(_mm_loadu_ps(v + 12), zero))));
            __m128i bits = _mm_and_si128(fires, bit);
            if (k) bits = _mm_or_si128(bits, _mm_loadu_si128((const __m128i *)(acc + i)));
            _mm_storeu_si128((__m128i *)(acc + i), bits);
        }
        for (int64_t i = end; i < m; ++i)
            acc[i] = (uint8_t)((k ? acc[i] : 0) | (column[i] > 0) << k);
    }
}

/* The same, 32 rows a step.  AVX2 packs work within 128-bit lanes: after
 * them the 4-row groups of a step are in the order 0,2,4,6,1,3,5,7, which
 * one permutation per step puts back once every neuron is in. */
__attribute__((target("avx2")))
static void ts_group_f32_avx2(const char *x, int64_t stride_neuron, int count, int64_t m,
                              uint8_t *acc)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const int64_t end = m & ~(int64_t)31;
    for (int k = 0; k < count; ++k) {
        const float *column = (const float *)(x + k * stride_neuron);
        const __m256i bit = _mm256_set1_epi8((char)(1 << k));
        for (int64_t i = 0; i < end; i += 32) {
            const float *v = column + i;
            const __m256i fires = _mm256_packs_epi16(
                _mm256_packs_epi32(
                    _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(v), zero, _CMP_GT_OQ)),
                    _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(v + 8), zero,
                                                      _CMP_GT_OQ))),
                _mm256_packs_epi32(
                    _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(v + 16), zero,
                                                      _CMP_GT_OQ)),
                    _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(v + 24), zero,
                                                      _CMP_GT_OQ))));
            __m256i bits = _mm256_and_si256(fires, bit);
            if (k) bits = _mm256_or_si256(bits, _mm256_loadu_si256((const __m256i *)(acc + i)));
            _mm256_storeu_si256((__m256i *)(acc + i), bits);
        }
    }
    for (int64_t i = 0; i < end; i += 32)
        _mm256_storeu_si256((__m256i *)(acc + i),
                            _mm256_permutevar8x32_epi32(
                                _mm256_loadu_si256((const __m256i *)(acc + i)), order));
    ts_group_f32_sse2(x + end * (int64_t)sizeof(float), stride_neuron, count, m - end, acc + end);
}

/* ---- Byte-major block to row-major rows ----
 *
 * Sixteen rows of `streams` bytes (2, 4 or 8) from `streams` byte streams
 * (stream j = byte j of each row, 16 rows each), interleaved by unpacking
 * bytes, then pairs, then quads.  Writes 16 * streams bytes to `rows_out`,
 * row r at rows_out + r * streams. */
static void ts_interleave16(const __m128i *stream, int streams, uint8_t *rows_out)
{
    __m128i pairs[8], quads[8];
    for (int j = 0; j < streams / 2; ++j) {
        pairs[2 * j] = _mm_unpacklo_epi8(stream[2 * j], stream[2 * j + 1]);     /* rows 0-7 */
        pairs[2 * j + 1] = _mm_unpackhi_epi8(stream[2 * j], stream[2 * j + 1]); /* rows 8-15 */
    }
    if (streams == 2) {
        _mm_storeu_si128((__m128i *)rows_out, pairs[0]);
        _mm_storeu_si128((__m128i *)(rows_out + 16), pairs[1]);
        return;
    }
    for (int j = 0; j < streams / 4; ++j) { /* bytes 4j..4j+3 of rows 0-3, 4-7, 8-11, 12-15 */
        quads[4 * j] = _mm_unpacklo_epi16(pairs[4 * j], pairs[4 * j + 2]);
        quads[4 * j + 1] = _mm_unpackhi_epi16(pairs[4 * j], pairs[4 * j + 2]);
        quads[4 * j + 2] = _mm_unpacklo_epi16(pairs[4 * j + 1], pairs[4 * j + 3]);
        quads[4 * j + 3] = _mm_unpackhi_epi16(pairs[4 * j + 1], pairs[4 * j + 3]);
    }
    if (streams == 4) {
        for (int q = 0; q < 4; ++q) _mm_storeu_si128((__m128i *)(rows_out + 16 * q), quads[q]);
        return;
    }
    for (int q = 0; q < 4; ++q) { /* rows 4q..4q+3, eight bytes each */
        _mm_storeu_si128((__m128i *)(rows_out + 32 * q),
                         _mm_unpacklo_epi32(quads[q], quads[4 + q]));
        _mm_storeu_si128((__m128i *)(rows_out + 32 * q + 16),
                         _mm_unpackhi_epi32(quads[q], quads[4 + q]));
    }
}

/* Sixteen rows of `word` bytes (2, 4 or 8) from `words` (row r at
 * words + r * word) to out + r * stride: constant-size copies, one move each. */
static void ts_store16(const uint8_t *words, int word, uint8_t *out, int64_t stride)
{
    switch (word) {
    case 2: for (int r = 0; r < 16; ++r) memcpy(out + r * stride, words + 2 * r, 2); break;
    case 4: for (int r = 0; r < 16; ++r) memcpy(out + r * stride, words + 4 * r, 4); break;
    default: for (int r = 0; r < 16; ++r) memcpy(out + r * stride, words + 8 * r, 8); break;
    }
}

/* Rows [0, m) of a byte-major block (byte j of row i at block[j * rows + i])
 * to row-major packed bytes at o, sixteen rows at a time; returns how many
 * rows it wrote (a multiple of 16: the caller finishes the rest).  `room`
 * is how many bytes past o the call may write.
 *  - Rows of 2 to 8 bytes: the row's bytes, padded with zero streams to a
 *    word of 2, 4 or 8, are stored as the whole word, rows in order (the
 *    padding is overwritten by the next row), while there is room.
 *  - Wider rows: each group of 8 bytes (then 4, then 2, then a last odd
 *    byte) of the row is stored exactly. */
static int64_t ts_block_to_rows_sse2(const uint8_t *block, int64_t rows, int64_t m,
                                     int64_t nb, uint8_t *o, int64_t room)
{
    uint8_t words[16 * 8];
    __m128i stream[8];
    int64_t i = 0;
    if (nb <= 8) {
        const int word = nb <= 2 ? 2 : nb <= 4 ? 4 : 8;
        for (; i + 16 <= m && (i + 15) * nb + word <= room; i += 16) {
            for (int j = 0; j < word; ++j)
                stream[j] = j < nb ? _mm_loadu_si128((const __m128i *)(block + j * rows + i))
                                   : _mm_setzero_si128();
            if (word == nb) {
                ts_interleave16(stream, word, o + i * nb);
            } else {
                ts_interleave16(stream, word, words);
                ts_store16(words, word, o + i * nb, nb);
            }
        }
        return i;
    }
    for (; i + 16 <= m; i += 16) {
        int64_t g = 0;
        for (int word = 8; word >= 2; word /= 2)
            for (; g + word <= nb; g += word) {
                for (int j = 0; j < word; ++j)
                    stream[j] = _mm_loadu_si128((const __m128i *)(block + (g + j) * rows + i));
                ts_interleave16(stream, word, words);
                ts_store16(words, word, o + i * nb + g, nb);
            }
        if (g < nb) /* an odd last byte */
            for (int64_t r = i; r < i + 16; ++r) o[r * nb + g] = block[g * rows + r];
    }
    return i;
}

#endif /* TS_PACK_X86_H */
