"""Packing, unpacking and sorting states against a plain-NumPy reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import DTYPES, packed_states, random_array, unique_counts

import tensorstate_callbacks as ts
from tensorstate_callbacks.core import _pack
from tensorstate_callbacks.states import pack


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 7, 8, 9, 63, 64, 65, 100, 4096])
def test_compress_matches_packbits_every_dtype_and_width(dtype, width):
    rng = np.random.default_rng(width)
    x = random_array(rng, (37, width), dtype)
    np.testing.assert_array_equal(ts.compress_states(x), packed_states(x))


def test_fifty_thousand_neurons():
    x = np.random.default_rng(0).standard_normal((5, 50_000)).astype(np.float32)
    np.testing.assert_array_equal(ts.compress_states(x), packed_states(x))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "bool", "float16"])
def test_layouts_give_identical_states(dtype):
    rng = np.random.default_rng(1)
    x = random_array(rng, (6, 20, 9, 11), dtype)
    expected = packed_states(x, neuron_axis=1)
    channels_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    for variant in (x, np.asfortranarray(x), channels_last):
        np.testing.assert_array_equal(pack(variant, neuron_axis=1), expected)
    strided = np.repeat(x, 2, axis=2)[:, :, ::2]
    np.testing.assert_array_equal(pack(strided, neuron_axis=1), expected)
    np.testing.assert_array_equal(pack(x[::-1, :, ::-1], 1), packed_states(x[::-1, :, ::-1], 1))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [
    (3, 20, 24, 24),     # NCHW, 576 states per image (a 16-state tail per block)
    (2, 13, 7, 5),       # 35 states: mostly the scalar tail
    (1, 70, 20_000, 1),  # more states per image than one block holds
    (41, 3, 9_001, 1),   # > 2**20 values: split across threads mid-image
])
def test_channels_first_float32(shape, threads):
    x = random_array(np.random.default_rng(sum(shape)), shape, "float32")
    np.testing.assert_array_equal(pack(x, neuron_axis=1, threads=threads),
                                  packed_states(x, neuron_axis=1))


@pytest.fixture(params=_pack.INSTRUCTION_SETS)
def instruction_set(request):
    """Every float32 kernel (portable C, SSE2, AVX2) on this machine: the
    sets the CPU lacks fall back to the highest it has."""
    _pack.limit_instruction_set(request.param)
    yield request.param
    _pack.limit_instruction_set("avx2")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape, axis", [
    ((200, 20, 24, 24), 1),   # LeNet's conv_1, channels first: three bytes a state
    ((7, 67, 5, 7), 1),       # 9 bytes a state, 35 states an image: tails everywhere
    ((3, 64, 33, 1), 1),      # 8 bytes, 33 states: one 16-row step too few
    ((5, 17, 45), 1),         # 3 bytes from 17 neurons, 45 states
    ((4, 40, 3), 1),          # 5 bytes: a word of 8
    ((2, 512, 4, 4), 1),      # ResNet's last stage: 64 bytes, 16 states
    ((9, 31, 20), 2),         # contiguous rows of 20 neurons: bits cut out of a run
    ((3, 700, 56), 2),        # 56 neurons: the widest row cut out of one word
    ((3, 50, 57), 2),         # 57 neurons: one byte at a time
    ((5, 16, 512), 2),        # 512 neurons: the run's bits are the rows
    ((150_001, 20), 1),       # a run split between threads mid-row-block
    ((2, 24, 24, 20), 3),     # channels last
])
def test_float32_kernels_of_every_instruction_set(instruction_set, shape, axis, threads):
    x = random_array(np.random.default_rng(sum(shape)), shape, "float32")
    np.testing.assert_array_equal(pack(x, neuron_axis=axis, threads=threads),
                                  packed_states(x, neuron_axis=axis))
    strided = np.repeat(x, 2, axis=0)[::2]  # states two rows apart
    np.testing.assert_array_equal(pack(strided, neuron_axis=axis, threads=threads),
                                  packed_states(x, neuron_axis=axis))


@pytest.mark.parametrize("neurons", [20, 55, 57, 64])
def test_float32_kernels_on_reversed_and_padded_views(instruction_set, neurons):
    """Negative strides on every axis, and states that are contiguous within an
    image but not across images (the run kernel's rows stop at each image)."""
    rng = np.random.default_rng(neurons)
    rows = random_array(rng, (5, 260, neurons), "float32")  # (images, states, neurons)
    channels = random_array(rng, (5, neurons, 260), "float32")  # (images, neurons, states)
    views = {
        "images apart": (rows[:, :253], -1),
        "images reversed": (rows[::-1, 7:], -1),
        "states reversed": (rows[:, 252::-1], -1),
        "neurons reversed": (rows[:, :253, ::-1], -1),
        "rows apart": (rows[:, :253, :neurons - 3], -1),
        "channels first, images apart": (channels[:, :, 7:], 1),
        "channels first, neurons reversed": (channels[:, ::-1, :253], 1),
        "channels first, images reversed": (channels[::-1, :, 7:], 1),
    }
    for name, (x, axis) in views.items():
        np.testing.assert_array_equal(pack(x, neuron_axis=axis), packed_states(x, neuron_axis=axis),
                                      err_msg=name)


def test_instruction_set_names_the_kernels_in_use(instruction_set):
    used = _pack.instruction_set()
    assert _pack.INSTRUCTION_SETS.index(used) <= _pack.INSTRUCTION_SETS.index(instruction_set)
    with pytest.raises(ValueError, match="unknown instruction set 'avx512'.*portable"):
        _pack.limit_instruction_set("avx512")


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=40),
                  elements=st.floats(-2, 2, width=32) | st.sampled_from(
                      [0.0, -0.0, np.inf, -np.inf, np.nan])),
       st.data())
def test_float32_kernels_property(x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    x = np.asarray(x, order=data.draw(st.sampled_from(["C", "F"])))
    expected = packed_states(x, axis)
    try:
        for name in _pack.INSTRUCTION_SETS:
            _pack.limit_instruction_set(name)
            np.testing.assert_array_equal(pack(x, axis), expected, err_msg=name)
    finally:
        _pack.limit_instruction_set("avx2")


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_every_neuron_axis(axis):
    x = np.random.default_rng(2).standard_normal((3, 4, 5, 6))
    np.testing.assert_array_equal(pack(x, axis), packed_states(x, axis))


def test_unmergeable_state_axes():
    base = np.random.default_rng(3).standard_normal((4, 6, 8, 10, 12))
    x = base[:, ::2, 1:, ::3]  # three state axes that cannot be merged
    np.testing.assert_array_equal(pack(x, neuron_axis=-1), packed_states(x, -1))
    np.testing.assert_array_equal(pack(x, neuron_axis=1), packed_states(x, 1))


def test_bfloat16_bits():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = random_array(np.random.default_rng(4), (50, 33), "float32").astype(ml_dtypes.bfloat16)
    expected = packed_states(x.astype(np.float32))
    np.testing.assert_array_equal(pack(x), expected)
    np.testing.assert_array_equal(pack(x.view(np.int16), dtype="bfloat16"), expected)


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.uint8, np.bool_]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=12),
), st.data())
def test_pack_property(x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    if x.shape[axis] == 0:
        with pytest.raises(ValueError, match="0 neurons"):
            pack(x, axis)
        return
    order = data.draw(st.sampled_from(["C", "F"]))
    x = np.asarray(x, order=order)
    np.testing.assert_array_equal(pack(x, axis), packed_states(x, axis))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=70)))
def test_roundtrip(x):
    restored = ts.decompress_states(ts.compress_states(x), x.shape[1])
    np.testing.assert_array_equal(restored, x > 0)


def test_zero_rows():
    out = ts.compress_states(np.zeros((0, 13), dtype=np.float32))
    assert out.shape == (0, 2) and out.dtype == np.uint8


def test_decompress_docs_example():
    np.testing.assert_array_equal(
        ts.decompress_states(np.array([[0b00011110]], dtype=np.uint8), 5),
        [[False, True, True, True, True]],
    )


@pytest.mark.parametrize("width", [3, 200, 4096 * 8, 8192 * 8])
def test_sort_states_groups_identical_rows(width):
    rng = np.random.default_rng(width)
    patterns = rng.standard_normal((5, width))
    x = patterns[rng.integers(0, 5, size=300)]
    states = ts.compress_states(x)
    edges, index = ts.sort_states(states, len(states))
    grouped = states[index]
    keys, counts = unique_counts(states)
    np.testing.assert_array_equal(np.diff(edges), counts)
    for group, key in enumerate(keys):
        assert (grouped[edges[group]:edges[group + 1]] == key).all()


def test_sort_states_uses_first_state_count_rows():
    states = np.array([[2], [1], [2], [9]], dtype=np.uint8)
    edges, index = ts.sort_states(states, 3)
    assert edges.tolist() == [0, 1, 3] and sorted(index.tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="state_count"):
        ts.sort_states(states, 5)


@pytest.mark.parametrize("bad", [np.ones((3, 4), dtype=complex), np.array([[object()]]),
                                 np.array([["a", "b"]])])
def test_unsupported_dtypes_raise_type_error(bad):
    with pytest.raises(TypeError, match="dtype"):
        ts.compress_states(bad)


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="0 neurons"):
        pack(np.zeros((4, 0)))
    with pytest.raises(ValueError, match="out of range"):
        pack(np.zeros((4, 3)), neuron_axis=2)
    with pytest.raises(ValueError, match="0-d"):
        pack(np.float32(1.0))
    with pytest.raises(ValueError, match="2-D"):
        ts.compress_states(np.zeros(5))
    with pytest.raises(ValueError, match="num_neurons"):
        ts.decompress_states(np.zeros((2, 1), dtype=np.uint8), 9)
    with pytest.raises(ValueError, match="bfloat16"):
        pack(np.zeros((2, 2), dtype=np.int16), dtype="float8")
    with pytest.raises(TypeError, match="int16"):
        pack(np.zeros((2, 2), dtype=np.float32), dtype="bfloat16")
