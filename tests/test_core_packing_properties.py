"""Packing, unpacking and sorting as properties, against plain NumPy.

Every dtype (with every bit pattern where there are few enough), arbitrary views
(sliced, negative steps, transposed, broadcast, unaligned, byte-swapped), the
threaded paths, and unpacking and sorting under hypothesis-chosen inputs.
(Moved from the former tests/test_core_extra.py.)
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import DTYPES, packed_states, unique_counts

import tensorstate_callbacks as ts
from tensorstate_callbacks.states import pack

ALL_DTYPES = [np.dtype(name).type for name in DTYPES]


# -- every bit pattern -------------------------------------------------------------

@pytest.mark.parametrize("width", [1, 7, 8, 9, 63, 64, 65, 4096])
def test_every_float16_bit_pattern(width):
    rows = -(-(1 << 16) // width)  # enough rows to hold every pattern once
    bits = np.resize(np.arange(1 << 16, dtype=np.uint16), rows * width)
    x = bits.view(np.float16).reshape(rows, width)
    np.testing.assert_array_equal(ts.compress_states(x), packed_states(x))
    np.testing.assert_array_equal(ts.compress_states(np.asfortranarray(x)), packed_states(x))


def test_every_bfloat16_bit_pattern():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bits = np.random.default_rng(0).permutation(np.arange(1 << 16, dtype=np.uint16))
    x = np.resize(bits, 111 * 591).view(ml_dtypes.bfloat16).reshape(111, 591)
    expected = packed_states(x.astype(np.float32))
    np.testing.assert_array_equal(pack(x), expected)
    np.testing.assert_array_equal(pack(x.view(np.int16), dtype="bfloat16"), expected)
    np.testing.assert_array_equal(pack(x.T, neuron_axis=0), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_special_bit_patterns(dtype):
    info = np.finfo(dtype)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, info.tiny, -info.tiny,
                         info.smallest_subnormal, -info.smallest_subnormal, info.max, -info.max,
                         info.eps, 1.0, -1.0], dtype=dtype)
    # NaNs with payloads and either sign
    uint = np.uint32 if dtype == np.float32 else np.uint64
    nan_bits = np.array([np.inf], dtype=dtype).view(uint) | uint(1)
    payload = np.concatenate([nan_bits, nan_bits | (uint(1) << uint(8 * specials.itemsize - 1))])
    values = np.concatenate([specials, payload.view(dtype)])
    x = np.random.default_rng(1).choice(values, size=(101, 67))
    np.testing.assert_array_equal(ts.compress_states(x), packed_states(x))
    np.testing.assert_array_equal(pack(x.T, neuron_axis=0), packed_states(x))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_extreme_integers_and_zero_rows_every_dtype(dtype):
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        values = np.array([info.min, info.min + 1, -1 if info.min else 0, 0, 1, info.max],
                          dtype=dtype)
    elif dtype is np.bool_:
        values = np.array([False, True])
    else:
        values = np.array([np.nan, -np.inf, -0.0, 0.0, np.finfo(dtype).smallest_subnormal,
                           np.inf], dtype=dtype)
    x = np.random.default_rng(2).choice(values, size=(30, 9, 13))
    for axis in range(3):
        np.testing.assert_array_equal(pack(x, axis), packed_states(x, axis))
    for empty_shape in [(0, 13), (4, 0, 13), (0, 0, 13)]:
        out = pack(np.zeros(empty_shape, dtype=dtype))
        assert out.shape == (0, 2) and out.dtype == np.uint8


# -- arbitrary views ----------------------------------------------------------------

@st.composite
def viewed_arrays(draw):
    """An array of any dtype, then sliced (steps of either sign), transposed, and an axis."""
    dtype = draw(st.sampled_from(ALL_DTYPES))
    base = draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1,
                                                   max_side=11)))
    index = []
    for size in base.shape:
        step = draw(st.sampled_from([1, 2, 3, -1, -2]))
        start = draw(st.integers(0, size - 1))
        index.append(slice(start, None, step))
    view = base[tuple(index)]
    view = view.transpose(draw(st.permutations(range(view.ndim))))
    axis = draw(st.integers(-view.ndim, view.ndim - 1))
    return view, axis


@settings(max_examples=100, deadline=None)
@given(viewed_arrays())
def test_pack_any_view_property(case):
    x, axis = case
    np.testing.assert_array_equal(pack(x, axis), packed_states(x, axis))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 600), st.integers(0, 40), st.sampled_from(["C", "F"]),
       st.sampled_from([np.float32, np.float64, np.float16, np.int8, np.uint64]))
def test_compress_widths_property(width, rows, order, dtype):
    rng = np.random.default_rng(width * 1000 + rows)
    x = np.asarray((rng.standard_normal((rows, width)) * 3).astype(dtype), order=order)
    np.testing.assert_array_equal(ts.compress_states(x), packed_states(x))
    np.testing.assert_array_equal(ts.decompress_states(ts.compress_states(x), width), x > 0)


@pytest.mark.parametrize("layout", ["C", "F", "transposed", "strided", "reversed"])
def test_fifty_thousand_neurons_every_layout(layout):
    x = np.random.default_rng(3).standard_normal((9, 50_000)).astype(np.float32)
    view = {"C": x, "F": np.asfortranarray(x), "transposed": np.ascontiguousarray(x.T).T,
            "strided": np.repeat(x, 3, axis=1)[:, 1::3], "reversed": x[::-1, ::-1]}[layout]
    packed = ts.compress_states(view)
    np.testing.assert_array_equal(packed, packed_states(view))
    np.testing.assert_array_equal(ts.decompress_states(packed, 50_000), view > 0)


def test_threaded_pack_splits_inside_an_outer_index():
    # 7 x 11,931 states of 24 neurons, channels-first: > 2**20 elements, so the
    # rows are split among threads at a boundary that is not a multiple of 11,931.
    x = np.random.default_rng(4).standard_normal((7, 24, 123, 97)).astype(np.float32)
    np.testing.assert_array_equal(pack(x, neuron_axis=1), packed_states(x, 1))
    np.testing.assert_array_equal(pack(x[:, :, ::-2, 1:], neuron_axis=1),
                                  packed_states(x[:, :, ::-2, 1:], 1))
    big = np.random.default_rng(5).standard_normal((70_001, 21)).astype(np.float64)
    np.testing.assert_array_equal(pack(np.asfortranarray(big)), packed_states(big))


def test_unusual_memory():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((33, 19)).astype(np.float32)
    expected = packed_states(x)
    np.testing.assert_array_equal(pack(x.astype(">f4")), expected)  # byte-swapped
    np.testing.assert_array_equal(pack(x.astype(">f2")), packed_states(x.astype(np.float16)))
    raw = np.zeros(x.nbytes + 1, dtype=np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned
    np.testing.assert_array_equal(pack(unaligned), expected)
    row = x[:1]
    np.testing.assert_array_equal(pack(np.broadcast_to(row, (50, 19))),
                                  np.repeat(expected[:1], 50, axis=0))
    column = np.broadcast_to(x[:, :1], (33, 19))  # neuron stride 0
    np.testing.assert_array_equal(pack(column), packed_states(np.array(column)))
    readonly = x.copy()
    readonly.flags.writeable = False
    np.testing.assert_array_equal(pack(readonly), expected)
    np.testing.assert_array_equal(pack(x.tolist()), expected)
    np.testing.assert_array_equal(pack(x[0]), expected[:1])  # 1-D: one state


@pytest.mark.parametrize("neuron_axis", [0, 1, 2, 3, -1, -4])
@pytest.mark.parametrize("channels", ["first", "last"])
def test_4d_channels_first_and_last_every_axis(neuron_axis, channels):
    x = np.random.default_rng(7).standard_normal((5, 12, 7, 9)).astype(np.float32)
    if channels == "last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(pack(x, neuron_axis), packed_states(x, neuron_axis))


# -- unpacking and sorting as properties --------------------------------------------

@st.composite
def packed_arrays(draw, max_bytes=40):
    width = draw(st.integers(1, 8 * max_bytes))
    rows = draw(st.integers(0, 60))
    fired = draw(hnp.arrays(np.bool_, (rows, width)))
    return np.packbits(fired, axis=-1, bitorder="little"), width, fired


@settings(max_examples=80, deadline=None)
@given(packed_arrays())
def test_decompress_property(case):
    packed, width, fired = case
    np.testing.assert_array_equal(ts.decompress_states(packed, width), fired)
    np.testing.assert_array_equal(ts.compress_states(ts.decompress_states(packed, width)), packed)


@settings(max_examples=80, deadline=None)
@given(packed_arrays(max_bytes=20), st.data())
def test_sort_states_property(case, data):
    packed, _, _ = case
    if len(packed):  # few distinct rows, so groups have several members
        packed = packed[data.draw(st.lists(st.integers(0, len(packed) - 1), max_size=80))]
    count = data.draw(st.integers(0, len(packed)))
    edges, index = ts.sort_states(packed, count)
    used = packed[:count]
    assert sorted(index.tolist()) == list(range(count))
    keys, counts = unique_counts(used)
    np.testing.assert_array_equal(np.diff(edges), counts)
    assert edges[0] == 0 and edges[-1] == count
    grouped = used[index]
    for group, key in enumerate(keys):
        assert (grouped[edges[group]:edges[group + 1]] == key).all()


@pytest.mark.parametrize("num_bytes", [4096, 8192])
def test_sort_wide_states_many_rows(num_bytes):
    rng = np.random.default_rng(num_bytes)
    patterns = rng.integers(0, 256, size=(40, num_bytes), dtype=np.uint8)
    patterns[:, :-1] = patterns[0, :-1]  # differ only in the last byte: deep comparisons
    states = patterns[rng.integers(0, 40, size=600)]
    edges, index = ts.sort_states(states)
    _, counts = unique_counts(states)
    np.testing.assert_array_equal(np.diff(edges), counts)
    grouped = states[index]
    assert all((grouped[a:b] == grouped[a]).all() for a, b in zip(edges[:-1], edges[1:]))


@pytest.mark.parametrize("num_neurons, match", [(0, "num_neurons"), (-3, "num_neurons"),
                                                (17, "num_neurons"), (8, "num_neurons")])
def test_decompress_bad_num_neurons(num_neurons, match):
    with pytest.raises(ValueError, match=match):
        ts.decompress_states(np.zeros((2, 2), dtype=np.uint8), num_neurons)


def test_bad_inputs_name_the_problem():
    for bad in (np.zeros((2, 2), "M8[s]"), np.zeros((2, 2), "f4,f4"), np.zeros((2, 2), "S2"),
                np.ones((2, 2), np.complex64)):
        with pytest.raises(TypeError, match="float, integer or bool"):
            pack(bad)
    with pytest.raises(ValueError, match="uint8"):
        ts.decompress_states(np.zeros((2, 2)), 9)
    with pytest.raises(ValueError, match="2-D"):
        ts.decompress_states(np.zeros(4, dtype=np.uint8), 8)
    with pytest.raises(ValueError, match="uint8"):
        ts.sort_states(np.zeros((3, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="out of range"):
        pack(np.zeros((2, 3, 4)), neuron_axis=-4)
    with pytest.raises(ValueError, match="0 neurons"):
        pack(np.zeros((5, 0, 3)), neuron_axis=1)
