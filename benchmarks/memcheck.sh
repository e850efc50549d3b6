#!/usr/bin/env bash
# Run the compiled kernels (packing and counting) under valgrind memcheck.
#
# Exercises widths that are not multiples of 8, every dtype, strided, reversed,
# transposed and channels-first views (arrays allocated so that their last
# element ends the malloc'd block: a read past it lands in valgrind's red zone),
# the threaded pack and count paths (threads created in C, more of them than
# cores), dense / narrow / wide / sharded tables (buffered batches, batches of
# several chunks, weighted rows, dense copies folded together, the kernels
# called directly), spilling under a tiny memory_limit, merging, sorting
# 4 KiB and 8 KiB states, the float32 kernels of every instruction set
# (portable C, SSE2, AVX2), unaligned and broadcast (zero-stride) inputs, views
# whose state axes do not merge (several leading views), dense counting on
# three threads into per-thread copies, weighted counting into shards on
# two and three threads, tables cleared for a next epoch, firing counts
# (byte lanes of wide states counted once), and counting with labels (pairs
# as words, per-label tables of byte counts, with counts past 255, and
# hashed pairs; mutual information, merge, pickle, firing rates).  Every
# result is also compared with plain NumPy.
#
# Valgrind reports some errors inside CPython and NumPy themselves; the script
# fails (exit 1) only for errors whose stack goes through our extension
# modules (_pack / _table, i.e. the ts_*.h headers of ext/).
#
# Usage: benchmarks/memcheck.sh [python]     (about 5-10 minutes; default: the
# repository's .venv)
set -euo pipefail
PYTHON=${1:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/exercise.py" <<'EOF'
import math
import warnings

import numpy as np

import tensorstate_callbacks as ts
from tensorstate_callbacks import StateCounter
from tensorstate_callbacks.states import pack


def reference(x, axis=-1):
    moved = np.moveaxis(np.asarray(x), axis, -1)
    return np.packbits(moved.reshape(-1, moved.shape[-1]) > 0, axis=-1, bitorder="little")


def check(x, axis=-1):
    np.testing.assert_array_equal(pack(x, axis), reference(x, axis))


rng = np.random.default_rng(0)
dtypes = ["float16", "float32", "float64", "int8", "int16", "int32", "int64",
          "uint8", "uint16", "uint32", "uint64", "bool"]
for dtype in dtypes:
    for width in (1, 7, 9, 63, 65, 4097):
        x = np.empty((13, width), dtype=dtype)          # exact-size buffer
        x[...] = (rng.standard_normal((13, width)) * 3).astype(dtype)
        check(x)
        check(x[::-1, ::-1])
        check(x.T, 0)
        f = np.empty((width, 13), dtype=dtype).T         # Fortran-order, exact buffer
        f[...] = x
        check(f)
ml = None
try:
    import ml_dtypes as ml
except ImportError:
    pass
if ml is not None:
    b = rng.standard_normal((17, 23)).astype(ml.bfloat16)
    np.testing.assert_array_equal(pack(b), reference(b.astype(np.float32)))
conv = rng.standard_normal((3, 21, 7, 5)).astype(np.float32)
for axis in range(4):
    check(conv, axis)
    check(conv[::-1, :, ::-2], axis)
for shape in ((2, 1, 33, 1), (2, 9, 5, 7), (1, 17, 16, 1)):      # channels-first float32 tails
    check(np.ascontiguousarray(rng.standard_normal(shape).astype(np.float32)), 1)
big = rng.standard_normal((9, 13, 97, 97)).astype(np.float32)   # > 2**20 elements: threads
check(big, 1)
check(big.reshape(-1, 13 * 97)[:, 1:])
from tensorstate_callbacks.core import _pack

for name in _pack.INSTRUCTION_SETS:  # every float32 kernel: portable, SSE2, AVX2
    _pack.limit_instruction_set(name)
    for shape, axis in (((5, 20, 24, 24), 1), ((3, 67, 5, 7), 1), ((2, 40, 3), 1),
                        ((2, 512, 4, 4), 1), ((9, 31, 20), 2), ((3, 70, 56), 2),
                        ((3, 9, 57), 2), ((5, 16, 512), 2), ((61, 13), 1), ((61, 13), 0)):
        x = np.empty(shape, dtype=np.float32)            # exact-size buffer
        x[...] = rng.standard_normal(shape)
        check(x, axis)
        check(x[::-1], axis)
    check(big, 1)
    check(rng.standard_normal((300_001, 20)).astype(np.float32))  # a run split among threads
_pack.limit_instruction_set("avx2")
print("pack ok")

for width, rows in ((5, 3000), (20, 3000), (37, 80_000), (64, 3000), (65, 70_000),
                    (1001, 3000), (4097, 500)):
    x = rng.random((rows, width)) < 0.5
    counter = StateCounter(f"w{width}")
    counter.add(x[: rows // 3])
    counter.add(x[rows // 3:])
    keys, counts = np.unique(reference(x), axis=0, return_counts=True)
    assert counter.distinct_count == len(keys) and counter.state_count == rows
    assert sorted(counter.counts().tolist()) == sorted(counts.tolist())
    other = StateCounter("other")
    other.add_counts(counter.state_ids(), counter.counts(), width)
    other.merge(counter)
    assert other.state_count == 2 * rows
    for alpha in (0, 0.5, 1, 2, math.inf):
        assert not math.isnan(counter.entropy(alpha))
    assert np.all(counter.firing_counts() == x.sum(axis=0))  # byte lanes (wide), histograms
    y = x[: rows // 2].copy()  # the next epoch into the same (cleared) tables, states repeated
    y[len(y) // 2:] = y[: len(y) - len(y) // 2]
    counter.reset_states()
    counter.add(y)
    assert sorted(counter.counts().tolist()) == sorted(
        np.unique(reference(y), axis=0, return_counts=True)[1].tolist())
    assert np.all(counter.firing_counts() == y.sum(axis=0))
for threads in (1, 2):  # into shards: buffered batches, then one of several chunks (sketched first)
    x = rng.random((600_000, 40)) < 0.5
    counter = StateCounter(f"chunks{threads}", threads=threads)
    for part in np.array_split(x[:100_000], 10):
        counter.add(part)
    counter.add(x)
    keys, counts = np.unique(np.concatenate([reference(x[:100_000]), reference(x)]), axis=0,
                             return_counts=True)
    assert counter.distinct_count == len(keys) and counter.state_count == 700_000
    assert sorted(counter.counts().tolist()) == sorted(counts.tolist())

from tensorstate_callbacks.core import _table


def table_counts(tables):
    return sorted(c for table in tables for c in table.counts().tolist())


for width in (3, 12):  # the kernels directly: 3 threads, weights with zeros, 2 chunks
    keys = rng.integers(0, 4, size=(3 * _table.CHUNK_ROWS + 5, width), dtype=np.uint8)
    weights = rng.integers(0, 3, size=len(keys), dtype=np.uint64)
    shards = [_table.CountTable(width) for _ in range(256)]
    _table.count_rows(shards, keys, weights, threads=3)
    _, inverse = np.unique(keys.view(np.dtype((np.void, width))).ravel(), return_inverse=True)
    expected = np.bincount(inverse.ravel(), weights=weights.astype(np.float64))
    assert table_counts(shards) == sorted(int(c) for c in expected if c)
dense_keys = rng.integers(0, 1 << 12, size=300_001).astype("<u2").view(np.uint8).reshape(-1, 2)
copies = [_table.CountTable(2, 12) for _ in range(3)]
_table.count_dense(copies, dense_keys)
for copy in copies[1:]:
    _table.fold_dense(copies[0], copy)
_, counts = np.unique(dense_keys, axis=0, return_counts=True)
assert table_counts(copies[:1]) == sorted(counts.tolist())
assert set(_table.partitions(dense_keys, 6).tolist()) == set(range(64))
print("count ok")

x = rng.random((20_000, 45)) < 0.5
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    spilled = StateCounter("spill", memory_limit=64 * 1024)
    spilled.add(x)
    spilled.add(x[:100])
    assert spilled.is_spilled
    reference_counter = StateCounter("ref")
    reference_counter.add(x)
    reference_counter.add(x[:100])
    assert math.isclose(spilled.entropy(), reference_counter.entropy(), rel_tol=1e-12)
    spilled.merge(reference_counter)
    assert spilled.distinct_count == reference_counter.distinct_count
    spilled.reset_states()
print("spill ok")

import pickle


def plug_in_entropy(keys):
    _, counts = np.unique(keys, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


# labels: words, slabs, hashed; slabs of 4 bytes; slabs whose counts pass a byte (20
# states, 3 labels)
for width, rows, patterns in ((12, 40_000, 0), (20, 300_000, 0), (45, 30_000, 0), (2, 5_000, 0),
                              (8, 60_000, 20)):
    x = rng.random((rows, width)) < 0.3
    if patterns:
        x = x[rng.integers(0, patterns, size=rows)]
    y = rng.integers(0, 3 if patterns else 10, size=rows)
    counter = StateCounter(f"labels{width}")
    for part, labels in zip(np.array_split(x, 7), np.array_split(y, 7)):
        counter.add(part, labels=labels)
    keys = reference(x)
    pairs = np.concatenate([keys, y.astype(np.uint8)[:, None]], axis=1)
    expected = plug_in_entropy(keys) + plug_in_entropy(y[:, None]) - plug_in_entropy(pairs)
    assert math.isclose(counter.mutual_information(), expected, rel_tol=1e-9, abs_tol=1e-9)
    copy = pickle.loads(pickle.dumps(counter))
    copy.merge(counter)
    assert math.isclose(copy.mutual_information(), expected, rel_tol=1e-9, abs_tol=1e-9)
    assert np.all(counter.firing_rates() == x.mean(axis=0))
    counter.reset_states()
    counter.add(x[:1000], labels=y[:1000])  # a second measurement, started as the first ended
    assert counter.state_count == 1000
print("labels ok")

from tensorstate_callbacks.core import packing

for dtype in ("float16", "float32", "float64", "int32", "uint16"):  # unaligned: offset 1 byte
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(13 * 37 * itemsize + 1, dtype=np.uint8)      # exact-size buffer
    unaligned = raw[1:].view(dtype).reshape(13, 37)
    unaligned[...] = (rng.standard_normal((13, 37)) * 3).astype(dtype)
    assert not unaligned.flags.aligned
    check(unaligned)
    check(unaligned[::-1, 1:], -1)
    check(unaligned.T, 0)
row = rng.standard_normal(29).astype(np.float32)                  # broadcast: zero strides
check(np.broadcast_to(row, (11, 29)))                             # states of stride 0
check(np.broadcast_to(row[:, None], (29, 7)), 0)
check(np.broadcast_to(rng.standard_normal((3, 1, 19)), (3, 5, 19)))
column = rng.standard_normal((17, 1)).astype(np.float32)
check(np.broadcast_to(column, (17, 33)))                          # neurons of stride 0
base = rng.standard_normal((4, 6, 10, 21)).astype(np.float32)
for view, axis in ((base[:, :, ::2, ::3], 1), (base[::-1, :, 1::2, ::2], 1),
                   (base[:, 1::4, ::3, ::2], -1)):
    assert packing.layout(view.shape, view.strides, view.dtype, axis).leading, "one view"
    check(view, axis)
    counter = StateCounter("leading")
    counter.add(view, axis)
    keys, counts = np.unique(reference(view, axis), axis=0, return_counts=True)
    assert sorted(counter.counts().tolist()) == sorted(counts.tolist())
print("unaligned/broadcast/leading ok")

dense = rng.random(((1 << 20) + 3, 12)) < 0.3        # dense table, 3 threads: per-thread copies
counter = StateCounter("dense", threads=3)
counter.add(dense)
counter.add(dense[:1000])
keys, counts = np.unique(np.concatenate([reference(dense), reference(dense[:1000])]), axis=0,
                         return_counts=True)
assert counter._engine._shards[0].is_dense
assert sorted(counter.counts().tolist()) == sorted(counts.tolist())
wide = rng.integers(0, 256, size=(200_003, 5), dtype=np.uint8)   # weighted, into shards
wide[:, -1] &= 0x0F
weights = rng.integers(0, 5, size=len(wide))
for threads in (2, 3):
    counter = StateCounter("weighted", threads=threads)
    counter.add_counts(wide[:100], weights[:100], 36)
    counter.add_counts(wide, weights, 36)
    _, inverse = np.unique(wide.view(np.dtype((np.void, 5))).ravel(), return_inverse=True)
    expected = np.bincount(inverse.ravel(), weights=weights.astype(np.float64))
    np.add.at(expected, inverse.ravel()[:100], weights[:100])  # the first 100 again
    assert len(counter._engine._shards) > 1
    assert sorted(counter.counts().tolist()) == sorted(int(c) for c in expected if c)
print("threads ok")

for num_bytes in (4096, 8192):
    states = rng.integers(0, 256, size=(6, num_bytes), dtype=np.uint8)[rng.integers(0, 6, 200)]
    edges, index = ts.sort_states(states)
    assert edges[-1] == 200 and sorted(index.tolist()) == list(range(200))
    np.testing.assert_array_equal(ts.compress_states(ts.decompress_states(states, num_bytes * 8)),
                                  states)
stored = StateCounter("stored", store_states=True)
for part in np.array_split(rng.standard_normal((1001, 11)), 7):
    stored.add(part)
assert stored.states.shape == (1001, 11)
print("sort/storage ok")
EOF

cat > "$WORK/control.py" <<'EOF'
# Positive control: a deliberately wrong call of the raw kernel (16 neurons
# claimed on rows of 9) must be reported, or the filter below proves nothing.
import numpy as np
from tensorstate_callbacks.core import _pack
x = np.ones((13, 9), dtype=np.float32)
out = np.empty((13, 2), dtype=np.uint8)
_pack.pack_rows(x.__array_interface__["data"][0], (1, 13, 16), (0, 36, 4),
                _pack.KINDS["float32"], out, 2)
EOF

# memcheck SCRIPT LOG: run SCRIPT under valgrind; print the errors whose stack
# goes through our kernels, then OUR_ERRORS=<count>.
memcheck() {
    (cd "$WORK" && PYTHONMALLOC=malloc TENSORSTATE_NUM_THREADS=2 timeout 3000 \
        valgrind --tool=memcheck --num-callers=40 --log-file="$2" "$PYTHON" "$1")
    grep -E "ERROR SUMMARY" "$2" | tail -1 >&2
    # One error report = consecutive "==pid== ..." lines up to a bare "==pid== " line.
    awk '/^==[0-9]+== $/ { if (block ~ /_pack\.cpython|_table\.cpython|[( ]ts_[a-z0-9_]+( \(|\.h:)/ \
             && block ~ /(Invalid|uninitialised|Conditional|Mismatched|overlap)/) { n++; print block } \
             block = ""; next } { block = block "\n" $0 } END { print "OUR_ERRORS=" n + 0 }' "$2"
}

if memcheck "$WORK/control.py" "$WORK/control.log" | grep -q "^OUR_ERRORS=0$"; then
    echo "the positive control was not detected: this check is broken"
    exit 2
fi
echo "positive control detected (an out-of-bounds read in _pack)"

ours=$(memcheck "$WORK/exercise.py" "$WORK/valgrind.log")
echo "$ours" | tail -200
if ! echo "$ours" | grep -q "^OUR_ERRORS=0$"; then
    cp "$WORK/valgrind.log" /tmp/tensorstate-valgrind.log
    echo "errors in our kernels; full log: /tmp/tensorstate-valgrind.log"
    exit 1
fi
echo "no memcheck errors in our kernels (the other errors valgrind counts are CPython's own)"
