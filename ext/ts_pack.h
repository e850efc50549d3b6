/*
 * Fused binarize + bit-pack of neuron activations.
 *
 * A state is one row of neuron values; neuron i of a row becomes bit (i % 8),
 * least significant first, of byte (i / 8).  A neuron fires when its value is
 * > 0: NaN, 0, -0.0 and negative values do not fire, +inf does.
 *
 * The input is a 3-D strided view (outer, states, neurons) given as a base
 * pointer and byte strides, so any memory layout (C, Fortran, channels-first,
 * channels-last, sliced) is read in place without a copy.  Rows are numbered
 * row = outer_index * n_states + state_index and written to out[row * n_bytes].
 * ts_pack packs rows [row_begin, row_end); ts_pack_view packs them all,
 * split into shares among threads.
 *
 * Two loops, picked by layout:
 *  - neurons contiguous (channels-last, dense layers): one row at a time,
 *    eight neurons per output byte;
 *  - neurons strided (channels-first): a block of rows at a time, eight
 *    neurons (one output byte) across the whole block (contiguous reads when
 *    states are contiguous), then a small transpose of the block into
 *    row-major packed bytes.
 * float32, the usual case, has SSE2 and AVX2 kernels on x86-64
 * (ts_pack_x86.h); every other case runs portable C.
 */
#ifndef TS_PACK_H
#define TS_PACK_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ts_status.h"
#include "ts_threads.h"

#define TS_BLOCK_MIN_ROWS 256 /* rows of a block, at least (see ts_pack_blocks) */

typedef struct {
    const char *base;
    int64_t n_outer, n_states, n_neurons;
    int64_t stride_outer, stride_state, stride_neuron; /* bytes */
} ts_view;

/* Firing predicates.  float16 and bfloat16 arrive as their int16 bit
 * patterns: a value fires iff its bits, read as a signed integer, are in
 * (0, +inf bits], which excludes -0, negatives and NaN. */
#define TS_FIRES_GT0(v) ((v) > 0)
#define TS_FIRES_F16(v) ((v) > 0 && (v) <= 0x7c00)
#define TS_FIRES_BF16(v) ((v) > 0 && (v) <= 0x7f80)

/* (Not every kind uses each function the macro defines.) */
#define TS_DEFINE_PACK(SUFFIX, T, FIRES)                                        \
__attribute__((unused))                                                         \
static void ts_pack_rows_##SUFFIX(const ts_view *v, uint8_t *out,               \
                                  int64_t row_begin, int64_t row_end)           \
{                                                                               \
    const int64_t n = v->n_neurons, nb = (n + 7) / 8, full = n / 8;             \
    int64_t a = row_begin / v->n_states, s = row_begin % v->n_states;           \
    for (int64_t row = row_begin; row < row_end; ++row, ++s) {                  \
        if (s == v->n_states) { s = 0; ++a; }                                   \
        const T *x = (const T *)(v->base + a * v->stride_outer                  \
                                 + s * v->stride_state);                        \
        uint8_t *o = out + row * nb;                                            \
        for (int64_t byte = 0; byte < full; ++byte) {                           \
            const T *xb = x + byte * 8;                                         \
            uint8_t bits = 0;                                                   \
            for (int k = 0; k < 8; ++k)                                         \
                bits |= (uint8_t)(FIRES(xb[k]) << k);                           \
            o[byte] = bits;                                                     \
        }                                                                       \
        if (full < nb) {                                                        \
            uint8_t bits = 0;                                                   \
            for (int64_t k = 0; k < n - full * 8; ++k)                          \
                bits |= (uint8_t)(FIRES(x[full * 8 + k]) << k);                 \
            o[full] = bits;                                                     \
        }                                                                       \
    }                                                                           \
}                                                                               \
                                                                                \
/* Bit `shift` of acc[i], i < m, from the i-th of m values `stride` bytes  \
 * apart (shift 0 starts the byte, later neurons OR into it). */              \
static void ts_column_##SUFFIX(const char *x, int64_t stride, int64_t m,      \
                               int shift, uint8_t *acc)                       \
{                                                                             \
    if (stride == (int64_t)sizeof(T)) { /* contiguous: vectorisable */        \
        const T *values = (const T *)x;                                       \
        if (shift == 0)                                                       \
            for (int64_t i = 0; i < m; ++i) acc[i] = (uint8_t)FIRES(values[i]); \
        else                                                                  \
            for (int64_t i = 0; i < m; ++i)                                   \
                acc[i] |= (uint8_t)(FIRES(values[i]) << shift);               \
        return;                                                               \
    }                                                                         \
    for (int64_t i = 0; i < m; ++i) {                                         \
        const T value = *(const T *)(x + i * stride);                         \
        acc[i] = (uint8_t)((shift ? acc[i] : 0) | FIRES(value) << shift);     \
    }                                                                         \
}                                                                             \
                                                                              \
/* acc[i], i < m: bit k from row i of neuron k, k < count (neurons         \
 * stride_neuron bytes apart, rows stride_state bytes apart). */              \
static void ts_group_##SUFFIX(const char *x, int64_t stride_state,           \
                              int64_t stride_neuron, int count, int64_t m,   \
                              uint8_t *acc)                                  \
{                                                                             \
    for (int k = 0; k < count; ++k)                                           \
        ts_column_##SUFFIX(x + k * stride_neuron, stride_state, m, k, acc);   \
}

TS_DEFINE_PACK(f32, float, TS_FIRES_GT0)
TS_DEFINE_PACK(f64, double, TS_FIRES_GT0)
TS_DEFINE_PACK(i8, int8_t, TS_FIRES_GT0)
TS_DEFINE_PACK(i16, int16_t, TS_FIRES_GT0)
TS_DEFINE_PACK(i32, int32_t, TS_FIRES_GT0)
TS_DEFINE_PACK(i64, int64_t, TS_FIRES_GT0)
TS_DEFINE_PACK(u8, uint8_t, TS_FIRES_GT0)
TS_DEFINE_PACK(u16, uint16_t, TS_FIRES_GT0)
TS_DEFINE_PACK(u32, uint32_t, TS_FIRES_GT0)
TS_DEFINE_PACK(u64, uint64_t, TS_FIRES_GT0)
TS_DEFINE_PACK(f16, int16_t, TS_FIRES_F16)
TS_DEFINE_PACK(bf16, int16_t, TS_FIRES_BF16)


/* Instruction sets the float32 kernels may use, lowest first. */
typedef enum ts_isa { TS_ISA_PORTABLE, TS_ISA_SSE2, TS_ISA_AVX2 } ts_isa;

/* The highest set the kernels may use; the tests lower it to run every
 * kernel on one machine. */
static int ts_isa_limit = TS_ISA_AVX2;

static void ts_pack_set_isa_limit(int limit) { ts_isa_limit = limit; }

#if defined(__x86_64__) && defined(__GNUC__)
#define TS_PACK_X86 1
#include "ts_pack_x86.h"

/* float32 byte groups: SIMD where states are contiguous. */
static void ts_group_f32_x86(const char *x, int64_t stride_state, int64_t stride_neuron,
                             int count, int64_t m, uint8_t *acc)
{
    const ts_isa isa = stride_state == (int64_t)sizeof(float) ? ts_pack_isa() : TS_ISA_PORTABLE;
    if (isa == TS_ISA_AVX2) ts_group_f32_avx2(x, stride_neuron, count, m, acc);
    else if (isa == TS_ISA_SSE2) ts_group_f32_sse2(x, stride_neuron, count, m, acc);
    else ts_group_f32(x, stride_state, stride_neuron, count, m, acc);
}
#else
static ts_isa ts_pack_isa(void) { return TS_ISA_PORTABLE; }
#endif

/* Rows [0, m) of a byte-major block (byte j of row i at block[j * rows + i])
 * to row-major packed bytes at o.  `room` is how many bytes past o this
 * call may write (rows beyond ours belong to other threads): with room for
 * it, narrow rows are assembled in a register and stored as 8 bytes, the
 * surplus overwritten by the next row.  On x86-64 SSE2 interleaves sixteen
 * rows at a time first (ts_block_to_rows_sse2). */
static void ts_block_to_rows(const uint8_t *block, int64_t rows, int64_t m, int64_t nb,
                             uint8_t *o, int64_t room)
{
    int64_t i = 0;
    if (nb == 1) {
        memcpy(o, block, (size_t)m);
        return;
    }
#ifdef TS_PACK_X86
    if (ts_pack_isa() >= TS_ISA_SSE2) i = ts_block_to_rows_sse2(block, rows, m, nb, o, room);
#endif
    if (nb <= 8)
        for (; i < m && i * nb + 8 <= room; ++i) {
            uint64_t word = 0;
            for (int64_t byte = 0; byte < nb; ++byte)
                word |= (uint64_t)block[byte * rows + i] << (8 * byte);
            memcpy(o + i * nb, &word, 8);
        }
    for (; i < m; ++i)
        for (int64_t byte = 0; byte < nb; ++byte) o[i * nb + byte] = block[byte * rows + i];
}

/* Strided neurons (channels-first).  A block of rows is built one byte
 * (eight neurons) at a time, so the input is read in address order when
 * states are contiguous (each neuron's states follow each other, and in
 * NCHW the neurons of an image do too); the block is byte-major and turned
 * row-major at the end. */
typedef void (*ts_group_fn)(const char *x, int64_t stride_state, int64_t stride_neuron,
                            int count, int64_t m, uint8_t *acc);
#define TS_BLOCK_BYTES 16384

static ts_status ts_pack_blocks(const ts_view *v, ts_group_fn group, uint8_t *out,
                                int64_t row_begin, int64_t row_end)
{
    const int64_t n = v->n_neurons, nb = (n + 7) / 8;
    int64_t rows = (TS_BLOCK_BYTES / nb) & ~(int64_t)15;
    if (rows < TS_BLOCK_MIN_ROWS) rows = TS_BLOCK_MIN_ROWS;
    uint8_t *block = (uint8_t *)malloc((size_t)(nb * rows));
    if (block == NULL) return TS_NO_MEMORY;
    int64_t row = row_begin;
    while (row < row_end) {
        const int64_t a = row / v->n_states, s0 = row % v->n_states;
        int64_t m = v->n_states - s0;
        if (m > row_end - row) m = row_end - row;
        if (m > rows) m = rows;
        const char *first = v->base + a * v->stride_outer + s0 * v->stride_state;
        for (int64_t byte = 0; byte < nb; ++byte) {
            const int count = (int)(n - 8 * byte < 8 ? n - 8 * byte : 8);
            group(first + 8 * byte * v->stride_neuron, v->stride_state, v->stride_neuron,
                  count, m, block + byte * rows);
        }
        ts_block_to_rows(block, rows, m, nb, out + row * nb, (row_end - row) * nb);
        row += m;
    }
    free(block);
    return TS_OK;
}

/* Element types of the input.  The Python side builds its dtype-name ->
 * kind mapping from these names ("TS_FLOAT32" -> "float32"): keep them
 * NumPy's dtype names. */
typedef enum ts_kind {
    TS_FLOAT32, TS_FLOAT64, TS_INT8, TS_INT16, TS_INT32, TS_INT64,
    TS_UINT8, TS_UINT16, TS_UINT32, TS_UINT64, TS_FLOAT16, TS_BFLOAT16,
    TS_KINDS /* how many */
} ts_kind;

static const int64_t ts_item_size[TS_KINDS] = {
    [TS_FLOAT32] = 4, [TS_FLOAT64] = 8, [TS_INT8] = 1, [TS_INT16] = 2, [TS_INT32] = 4,
    [TS_INT64] = 8, [TS_UINT8] = 1, [TS_UINT16] = 2, [TS_UINT32] = 4, [TS_UINT64] = 8,
    [TS_FLOAT16] = 2, [TS_BFLOAT16] = 2};

/* Pack rows [row_begin, row_end) of the view (kind checked by the caller). */
static ts_status ts_pack(ts_kind kind, const ts_view *v, uint8_t *out,
                         int64_t row_begin, int64_t row_end)
{
    if (v->stride_neuron != ts_item_size[kind]) {
        static const ts_group_fn groups[TS_KINDS] = {
#ifdef TS_PACK_X86
            [TS_FLOAT32] = ts_group_f32_x86,
#else
            [TS_FLOAT32] = ts_group_f32,
#endif
            [TS_FLOAT64] = ts_group_f64, [TS_INT8] = ts_group_i8,
            [TS_INT16] = ts_group_i16, [TS_INT32] = ts_group_i32,
            [TS_INT64] = ts_group_i64, [TS_UINT8] = ts_group_u8,
            [TS_UINT16] = ts_group_u16, [TS_UINT32] = ts_group_u32,
            [TS_UINT64] = ts_group_u64, [TS_FLOAT16] = ts_group_f16,
            [TS_BFLOAT16] = ts_group_bf16};
        return ts_pack_blocks(v, groups[kind], out, row_begin, row_end);
    }
    switch (kind) {
#ifdef TS_PACK_X86
    case TS_FLOAT32: {
        const ts_isa isa = ts_pack_isa();
        if (isa == TS_ISA_PORTABLE) ts_pack_rows_f32(v, out, row_begin, row_end);
        else if (ts_run_packable(v)) ts_pack_run_f32(isa, v, out, row_begin, row_end);
        else ts_pack_rows_f32_x86(isa, v, out, row_begin, row_end);
        break;
    }
#else
    case TS_FLOAT32: ts_pack_rows_f32(v, out, row_begin, row_end); break;
#endif
    case TS_FLOAT64: ts_pack_rows_f64(v, out, row_begin, row_end); break;
    case TS_INT8: ts_pack_rows_i8(v, out, row_begin, row_end); break;
    case TS_INT16: ts_pack_rows_i16(v, out, row_begin, row_end); break;
    case TS_INT32: ts_pack_rows_i32(v, out, row_begin, row_end); break;
    case TS_INT64: ts_pack_rows_i64(v, out, row_begin, row_end); break;
    case TS_UINT8: ts_pack_rows_u8(v, out, row_begin, row_end); break;
    case TS_UINT16: ts_pack_rows_u16(v, out, row_begin, row_end); break;
    case TS_UINT32: ts_pack_rows_u32(v, out, row_begin, row_end); break;
    case TS_UINT64: ts_pack_rows_u64(v, out, row_begin, row_end); break;
    case TS_FLOAT16: ts_pack_rows_f16(v, out, row_begin, row_end); break;
    default: ts_pack_rows_bf16(v, out, row_begin, row_end); break;
    }
    return TS_OK;
}

/* One thread's share of a threaded pack. */
typedef struct {
    ts_kind kind;
    const ts_view *view;
    uint8_t *out;
    int64_t row_begin, row_end;
    ts_status status;
} ts_pack_share;

static void ts_pack_share_task(void *task)
{
    ts_pack_share *share = (ts_pack_share *)task;
    share->status = ts_pack(share->kind, share->view, share->out, share->row_begin,
                            share->row_end);
}

/* Packs every row of the view into out (rows x (n_neurons + 7) / 8 bytes) on
 * up to `threads` threads, a contiguous share of the rows each.  Returns
 * TS_OK, TS_NO_MEMORY, or TS_BAD_ARGUMENT for an unknown kind. */
static ts_status ts_pack_view(int kind, const ts_view *v, uint8_t *out, int threads)
{
    if (kind < 0 || kind >= TS_KINDS) return TS_BAD_ARGUMENT;
    const int64_t rows = v->n_outer * v->n_states;
    if (rows == 0) return TS_OK; /* (the row loops divide by n_states) */
    if (threads > rows) threads = (int)rows;
    if (threads > TS_MAX_THREADS) threads = TS_MAX_THREADS;
    if (threads < 1) threads = 1;
    ts_pack_share shares[TS_MAX_THREADS];
    for (int i = 0; i < threads; ++i) {
        shares[i].kind = (ts_kind)kind;
        shares[i].view = v;
        shares[i].out = out;
        shares[i].row_begin = ts_share_start(0, rows, i, threads);
        shares[i].row_end = ts_share_start(0, rows, i + 1, threads);
        shares[i].status = TS_OK;
    }
    ts_run_tasks(ts_pack_share_task, shares, sizeof(ts_pack_share), threads);
    for (int i = 0; i < threads; ++i)
        if (shares[i].status != TS_OK) return shares[i].status;
    return TS_OK;
}

#endif /* TS_PACK_H */
