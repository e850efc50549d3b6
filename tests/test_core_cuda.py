"""The CuPy packer against the CPU kernel and plain NumPy (needs CuPy and a CUDA device)."""

import math

import numpy as np
import pytest
from reference import DTYPES, Expected, assert_counts_match, packed_states
from reference import random_array as reference_array

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install '.[gpu]')")
from tensorstate_callbacks.gpu import cupy_available, pack_cuda  # noqa: E402

if not cupy_available():
    pytest.skip("CuPy is installed but no CUDA device is visible", allow_module_level=True)

from tensorstate_callbacks import StateCounter  # noqa: E402
from tensorstate_callbacks.states import pack  # noqa: E402

GPU_SPECIALS = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, 5e-324, -1e-300]


def random_array(rng, shape, dtype):
    return reference_array(rng, shape, dtype, specials=GPU_SPECIALS, every=5)


def assert_gpu_matches_cpu(x_host, neuron_axis=-1, x_device=None):
    x_device = cupy.asarray(x_host) if x_device is None else x_device
    packed, num_neurons = pack_cuda(x_device, neuron_axis)
    assert isinstance(packed, np.ndarray) and packed.dtype == np.uint8
    assert num_neurons == x_host.shape[neuron_axis]
    np.testing.assert_array_equal(packed, packed_states(x_host, neuron_axis))
    np.testing.assert_array_equal(packed, pack(x_host, neuron_axis))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 7, 8, 9, 63, 64, 65, 4096])
def test_every_dtype_and_width(dtype, width):
    x = random_array(np.random.default_rng(width), (53, width), dtype)
    assert_gpu_matches_cpu(x)


def test_every_float16_bit_pattern():
    bits = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(-1, 64)
    assert_gpu_matches_cpu(bits)
    assert_gpu_matches_cpu(bits.T, neuron_axis=0, x_device=cupy.asarray(bits).T)


@pytest.mark.parametrize("dtype", ["float16", "float32", "int8", "bool"])
def test_layouts(dtype):
    rng = np.random.default_rng(1)
    x = random_array(rng, (6, 20, 9, 11), dtype)
    device = cupy.asarray(x)
    for axis in (0, 1, 2, 3, -1):
        assert_gpu_matches_cpu(x, axis, device)
    # channels-last memory viewed as channels-first (the usual conv layout on GPUs)
    channels_last = cupy.ascontiguousarray(device.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert_gpu_matches_cpu(x, 1, channels_last)
    assert_gpu_matches_cpu(x, 1, cupy.asfortranarray(device))
    # sliced, reversed and unmergeable state axes
    view = x[::-1, :, 1::2, ::-3]
    assert_gpu_matches_cpu(view, 1, device[::-1, :, 1::2, ::-3])
    assert_gpu_matches_cpu(view, -1, device[::-1, :, 1::2, ::-3])


def test_wide_states_and_zero_rows():
    x = np.random.default_rng(2).standard_normal((5, 50_000)).astype(np.float32)
    assert_gpu_matches_cpu(x)
    assert_gpu_matches_cpu(x.T, neuron_axis=0, x_device=cupy.asarray(x).T)
    packed, num_neurons = pack_cuda(cupy.zeros((0, 13), dtype=cupy.float32))
    assert packed.shape == (0, 2) and num_neurons == 13


def test_bad_input():
    with pytest.raises(TypeError, match="dtype"):
        pack_cuda(cupy.ones((3, 4), dtype=cupy.complex64))
    with pytest.raises(ValueError, match="0 neurons"):
        pack_cuda(cupy.ones((3, 0), dtype=cupy.float32))
    with pytest.raises(ValueError, match="out of range"):
        pack_cuda(cupy.ones((3, 4), dtype=cupy.float32), neuron_axis=2)


class DLPackOnly:
    """A CUDA array that offers only DLPack (as JAX or TensorFlow tensors do)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_counter_add_on_the_gpu_equals_cpu(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 24, 12, 12)).astype(np.float16)
    cpu, gpu = StateCounter("cpu"), StateCounter("gpu", storage_path=tmp_path / "gpu")
    for part in np.array_split(x, 3):
        cpu.add(part, neuron_axis=1)
    device = cupy.asarray(x)
    gpu.add(device[:13], neuron_axis=1)
    gpu.add(DLPackOnly(device[13:27]), neuron_axis=1)
    gpu.add(device[27:], neuron_axis=1)
    expected = Expected.of_values(x, neuron_axis=1)
    assert_counts_match(cpu, expected)
    assert_counts_match(gpu, expected)
    for alpha in (0, 1, 2, math.inf):
        assert gpu.entropy(alpha) == pytest.approx(cpu.entropy(alpha), rel=1e-12)
    np.testing.assert_array_equal(gpu.raw_states, packed_states(x, 1))
