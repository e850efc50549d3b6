"""Pack CUDA arrays on the GPU with CuPy (optional), so only packed bytes reach the host.

Used automatically by :meth:`StateCounter.add` when a CUDA array arrives
(anything with ``__cuda_array_interface__`` or a CUDA DLPack capsule) and CuPy
is installed.  The kernel follows the package's conventions exactly: neuron
``i`` is bit ``i % 8`` of byte ``i // 8``, a neuron fires when its value is
``> 0`` (NaN never fires), and any strides are read in place.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .._imports import cupy_available, require

__all__ = ["KERNEL_SOURCE", "cupy_available", "pack_cuda"]

# One CUDA thread per output byte: it reads up to 8 neurons of one state.
KERNEL_SOURCE = r"""
#include <cuda_fp16.h>

template <typename T>
__device__ __forceinline__ bool fires(T value) { return value > T(0); }

template <>
__device__ __forceinline__ bool fires<__half>(__half value) { return __half2float(value) > 0.0f; }

template <typename T>
__global__ void pack_states(const char *base, long long n_states_inner,
                            long long n_neurons, long long n_bytes,
                            long long stride_outer, long long stride_inner,
                            long long stride_neuron, long long n_rows,
                            unsigned char *out)
{
    long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= n_rows * n_bytes) return;
    long long row = index / n_bytes, byte = index % n_bytes;
    long long outer = row / n_states_inner, inner = row % n_states_inner;
    const char *state = base + outer * stride_outer + inner * stride_inner;
    unsigned char bits = 0;
    for (int k = 0; k < 8; ++k) {
        long long neuron = byte * 8 + k;
        if (neuron >= n_neurons) break;
        T value = *(const T *)(state + neuron * stride_neuron);
        bits |= (unsigned char)(fires<T>(value) << k);
    }
    out[index] = bits;
}
"""

_CUDA_TYPES = {
    "float16": "__half", "float32": "float", "float64": "double",
    "int8": "signed char", "int16": "short", "int32": "int", "int64": "long long",
    "uint8": "unsigned char", "uint16": "unsigned short", "uint32": "unsigned int",
    "uint64": "unsigned long long", "bool": "unsigned char",
}


@cache
def _kernel(type_name: str):
    import cupy

    name = f"pack_states<{type_name}>"
    module = cupy.RawModule(
        code=KERNEL_SOURCE,
        options=("-std=c++14",),
        name_expressions=[name],
    )
    return module.get_function(name)


def _as_cupy(array):
    cupy = require("cupy", "packing a CUDA array on its GPU (or move it to the CPU first)")
    if hasattr(array, "__cuda_array_interface__"):
        return cupy.asarray(array)
    return cupy.from_dlpack(array)


def pack_cuda(array, neuron_axis: int = -1):
    """Pack a CUDA array on its device; returns (host ``uint8`` states, num_neurons).

    Example (needs a GPU; ``tests/test_core_cuda.py`` runs it there)::

        import cupy
        pack_cuda(cupy.array([[1.0, -1.0, 2.0]]))   # -> (array([[5]], dtype=uint8), 3)
    """
    from .packing import merge_state_axes, neuron_axis_index

    x = _as_cupy(array)
    dtype_name = "bool" if x.dtype == np.bool_ else x.dtype.name
    if dtype_name not in _CUDA_TYPES:
        raise TypeError(
            f"cannot read neuron states from a CUDA array of dtype {x.dtype}: use a float, "
            "integer or bool array"
        )
    axis = neuron_axis_index(x.ndim, neuron_axis)
    num_neurons = x.shape[axis]
    if num_neurons == 0:
        raise ValueError(f"the neuron axis (axis {axis} of shape {x.shape}) has 0 neurons")
    import cupy

    moved = cupy.moveaxis(x, axis, -1)
    state_axes = merge_state_axes(moved.shape[:-1], moved.strides[:-1])
    if len(state_axes) > 2:  # unmergeable state axes: one compact copy, still on the GPU
        moved = cupy.ascontiguousarray(moved)
        state_axes = merge_state_axes(moved.shape[:-1], moved.strides[:-1])
    state_axes = [[1, 0]] * (2 - len(state_axes)) + state_axes
    (n_outer, stride_outer), (n_inner, stride_inner) = state_axes
    n_rows, n_bytes = n_outer * n_inner, (num_neurons + 7) // 8
    out = cupy.empty((n_rows, n_bytes), dtype=cupy.uint8)
    if n_rows:
        threads = 256
        blocks = (n_rows * n_bytes + threads - 1) // threads
        _kernel(_CUDA_TYPES[dtype_name])(
            (blocks,), (threads,),
            (moved, np.int64(n_inner), np.int64(num_neurons), np.int64(n_bytes),
             np.int64(stride_outer), np.int64(stride_inner), np.int64(moved.strides[-1]),
             np.int64(n_rows), out),
        )
    return cupy.asnumpy(out), num_neurons
