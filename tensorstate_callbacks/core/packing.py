"""Turn activations into packed states: compress, decompress and sort them.

A state is the firing pattern (value ``> 0``) of the neurons along one axis;
neuron ``i`` is bit ``i % 8`` (least significant first) of byte ``i // 8``,
which is ``np.packbits(x > 0, axis=-1, bitorder="little")``.  The packing runs
in the compiled kernel straight from the input's memory, whatever its layout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from numbers import Integral

import numpy as np

from . import _pack

# Below this many input elements a batch is packed on one thread.
_PARALLEL_MIN_ELEMENTS = 1 << 20


def num_threads() -> int:
    """Threads the compiled kernels use by default: the environment variable
    ``TENSORSTATE_NUM_THREADS`` if set, else every core this process may use.

    Returns:
        The number of threads, at least 1.

    >>> num_threads() >= 1
    True
    """
    configured = os.environ.get("TENSORSTATE_NUM_THREADS")
    if configured:
        return max(1, int(configured))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


@dataclass(frozen=True)
class Layout:
    """Where the states of an array lie in its memory, for the kernel.

    3-D views ``(outer, states, neurons)`` of one ``shape`` and byte
    ``strides``: usually one, else one per index along the ``leading`` axes
    (``(size, byte stride)`` each) that cannot merge into the views.  Their
    states, in order, are those of the array in C order of its state axes.
    """

    kind: int
    num_neurons: int
    num_states: int
    shape: tuple[int, int, int]
    strides: tuple[int, int, int]
    leading: tuple[tuple[int, int], ...] = ()

    @property
    def num_bytes(self) -> int:
        """Bytes of one packed state."""
        return (self.num_neurons + 7) // 8

    def view_offsets(self) -> Iterable[int]:
        """Byte offset of each view from the array's first element, in order."""
        if not self.leading:  # the usual single view, without np.ndindex's cost
            return (0,)
        return (sum(i * stride for i, (_, stride) in zip(index, self.leading))
                for index in np.ndindex(*(size for size, _ in self.leading)))


@cache
def _kind(dtype: np.dtype) -> int:
    if dtype.kind == "b":
        return _pack.KINDS["uint8"]
    if dtype.name == "bfloat16" or (dtype.kind in "fiu" and dtype.name in _pack.KINDS):
        return _pack.KINDS[dtype.name]
    raise TypeError(
        f"cannot read neuron states from an array of dtype {dtype}: use a float, "
        "integer or bool array (firing means value > 0)"
    )


def _reinterpreted_kind(dtype: np.dtype, name: str) -> int:
    if name != "bfloat16":
        raise ValueError(
            f"dtype={name!r} is not supported; the only reinterpretation is 'bfloat16'"
        )
    if dtype.kind not in "iu" or dtype.itemsize != 2:
        raise TypeError(f"dtype='bfloat16' needs the bits as an int16/uint16 array, got {dtype}")
    return _pack.KINDS["bfloat16"]


@cache
def _conversion(dtype: np.dtype) -> str | None:
    """How an array of ``dtype`` becomes one the kernel reads, if it must."""
    if dtype.byteorder not in "=|" and dtype.itemsize > 1:
        return "byteswap"
    if dtype.kind == "f" and dtype.name not in _pack.KINDS:
        return "binarize"  # e.g. float128: binarize exactly in NumPy, then pack the bools
    return None


def kernel_readable(array) -> np.ndarray:
    """``array`` as a NumPy array the kernel can read: as it is, unless its
    bytes are swapped or its float type is one the kernel lacks (converted then).

    >>> kernel_readable(np.array([1.5, -2.0], dtype=">f8")).dtype.byteorder
    '='
    """
    array = np.asarray(array)
    conversion = _conversion(array.dtype)
    if conversion == "byteswap":
        array = array.astype(array.dtype.newbyteorder("="))
        conversion = _conversion(array.dtype)
    return array > 0 if conversion == "binarize" else array


def neuron_axis_index(ndim: int, neuron_axis: int) -> int:
    """Normalise ``neuron_axis`` for an array of ``ndim`` dims, or raise ValueError.

    >>> neuron_axis_index(4, -1), neuron_axis_index(4, 1)
    (3, 1)
    """
    if ndim == 0:
        raise ValueError("cannot read states from a 0-d array: it has no neuron axis")
    if isinstance(neuron_axis, bool) or not isinstance(neuron_axis, Integral):
        raise TypeError(f"neuron_axis must be an int (an axis of the array), got "
                        f"{neuron_axis!r}")
    if not -ndim <= neuron_axis < ndim:
        raise ValueError(
            f"neuron_axis={neuron_axis} is out of range for an array with {ndim} "
            f"dimension(s); use an axis in [{-ndim}, {ndim - 1}]"
        )
    return neuron_axis % ndim


def merge_state_axes(shape, strides):
    """Drop length-1 axes and merge axes that step through memory as one."""
    merged: list[list[int]] = []
    for size, stride in zip(shape, strides):
        if size == 1:
            continue
        if merged and merged[-1][1] == stride * size:
            merged[-1] = [merged[-1][0] * size, stride]
        else:
            merged.append([size, stride])
    return merged


@lru_cache(maxsize=1024, typed=True)  # typed: an axis True is no axis 1
def layout(shape: tuple, strides: tuple, dtype: np.dtype, neuron_axis: int = -1,
           reinterpret: str | None = None) -> Layout:
    """The :class:`Layout` of an array of this shape, strides and dtype (cached:
    a probe sees the same few shapes batch after batch).

    Usually one view; more only when the state axes cannot be merged into two.
    ``reinterpret="bfloat16"`` reads a 16-bit integer array as the bits of
    bfloat16 values (how frameworks hand over bfloat16 tensors, which NumPy lacks).

    >>> x = np.zeros((2, 20, 6, 6), dtype=np.float32)
    >>> plan = layout(x.shape, x.strides, x.dtype, neuron_axis=1)
    >>> plan.shape, plan.strides, plan.leading, plan.num_states, plan.num_bytes
    ((2, 36, 20), (2880, 4, 144), (), 72, 3)
    """
    kind = _kind(dtype) if reinterpret is None else _reinterpreted_kind(dtype, reinterpret)
    axis = neuron_axis_index(len(shape), neuron_axis)
    num_neurons = shape[axis]
    if num_neurons == 0:
        raise ValueError(
            f"the neuron axis (axis {axis} of shape {shape}) has 0 neurons; "
            "a state needs at least one neuron"
        )
    state_shape = shape[:axis] + shape[axis + 1:]
    num_states = math.prod(state_shape)
    state_axes = merge_state_axes(state_shape, strides[:axis] + strides[axis + 1:])
    if num_states == 0:
        state_axes = [[0, 0]]
    state_axes = [[1, 0]] * (2 - len(state_axes)) + state_axes
    *leading, (outer, outer_stride), (inner, inner_stride) = state_axes
    return Layout(kind, num_neurons, num_states, (outer, inner, num_neurons),
                  (outer_stride, inner_stride, strides[axis]), tuple(map(tuple, leading)))


def pack_layout(array: np.ndarray, plan: Layout, out: np.ndarray | None = None,
                threads: int | None = None) -> np.ndarray:
    """Pack ``array`` (kernel-readable, laid out as ``plan`` says) into ``out``.

    Large views are split into row ranges packed on up to ``threads`` threads
    (None: :func:`num_threads`), which the kernel creates for the call.

    Args:
        array: the input, as :func:`kernel_readable` returns it.
        plan: its :func:`layout`.
        out: ``uint8[plan.num_states, plan.num_bytes]``, C-contiguous; new if None.
        threads: cap on the threads used.

    Returns:
        ``out``, holding the packed states.

    >>> x = np.array([[1.0, 0.0, 2.0]])
    >>> pack_layout(x, layout(x.shape, x.strides, x.dtype))
    array([[5]], dtype=uint8)
    """
    if out is None:
        out = np.empty((plan.num_states, plan.num_bytes), dtype=np.uint8)
    address = array.__array_interface__["data"][0]
    shape, strides = plan.shape, plan.strides
    rows = shape[0] * shape[1]
    threads = 1 if rows * shape[2] < _PARALLEL_MIN_ELEMENTS else threads or num_threads()
    for view, offset in enumerate(plan.view_offsets()):
        target = out[view * rows:(view + 1) * rows] if plan.leading else out
        _pack.pack_rows(address + offset, shape, strides, plan.kind, target, threads)
    return out


def pack(array, neuron_axis: int = -1, dtype: str | None = None,
         threads: int | None = None) -> np.ndarray:
    """Binarize (``> 0``) and bit-pack ``array`` along ``neuron_axis``.

    Returns ``uint8[num_states, ceil(num_neurons / 8)]`` with states in C order
    of the remaining axes.  ``dtype="bfloat16"``: see :func:`layout`.
    ``threads`` caps the threads used (default: every usable core).

    >>> x = np.array([[[1.0, -1.0], [0.5, 2.0]]])   # (batch, H=2, C=2)
    >>> pack(x, neuron_axis=-1)
    array([[1],
           [3]], dtype=uint8)
    """
    array = kernel_readable(array)
    plan = layout(array.shape, array.strides, array.dtype, neuron_axis, dtype)
    return pack_layout(array, plan, threads=threads)


def compress_states(states) -> np.ndarray:
    """Compress a 2-D array of neuron outputs (rows are states) into packed bytes.

    Each neuron becomes one bit (firing = value > 0); any float, int or bool
    dtype and any memory layout are accepted.

    >>> compress_states(np.array([[0.0, 1.0, 2.0, -1.0, 3.0]]))
    array([[22]], dtype=uint8)
    """
    states = np.asarray(states)
    if states.ndim != 2:
        raise ValueError(
            f"compress_states expects a 2-D array (states x neurons), got shape "
            f"{states.shape}; for other shapes use StateCounter.add(array, neuron_axis)"
        )
    return pack(states, neuron_axis=1)


def decompress_states(states, num_neurons: int) -> np.ndarray:
    """Unpack compressed states back to ``bool[num_states, num_neurons]``.

    >>> decompress_states(np.array([[30]], dtype=np.uint8), 5)
    array([[False,  True,  True,  True,  True]])
    """
    states = np.asarray(states)
    if states.ndim != 2 or states.dtype != np.uint8:
        raise ValueError(
            f"decompress_states expects a 2-D uint8 array of packed states, got "
            f"{states.dtype} with shape {states.shape}"
        )
    num_neurons = int(num_neurons)
    if not (states.shape[1] - 1) * 8 < num_neurons <= states.shape[1] * 8:
        raise ValueError(
            f"num_neurons={num_neurons} does not fit states of {states.shape[1]} byte(s) "
            f"each: it must be in [{(states.shape[1] - 1) * 8 + 1}, {states.shape[1] * 8}]"
        )
    bits = np.unpackbits(states, axis=1, count=num_neurons, bitorder="little")
    return bits.astype(bool)


def sort_states(states, state_count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Group identical packed states without moving them.

    Returns ``(edges, index)``: ``states[index]`` has identical states next to
    each other (sorted by their bytes), and group ``k`` is
    ``index[edges[k]:edges[k + 1]]``; ``edges`` starts at 0 and ends at
    ``state_count``, so ``np.diff(edges)`` are the counts of the distinct states.
    Only the first ``state_count`` rows are used (all when ``None``).

    >>> edges, index = sort_states(np.array([[3], [1], [3]], dtype=np.uint8), 3)
    >>> edges.tolist(), index.tolist()
    ([0, 1, 3], [1, 0, 2])
    """
    states = np.asarray(states)
    if states.ndim != 2 or states.dtype != np.uint8:
        raise ValueError(
            f"sort_states expects a 2-D uint8 array of packed states, got {states.dtype} "
            f"with shape {states.shape}"
        )
    count = states.shape[0] if state_count is None else int(state_count)
    if not 0 <= count <= states.shape[0]:
        raise ValueError(f"state_count={count} must be in [0, {states.shape[0]}]")
    rows = np.ascontiguousarray(states[:count])
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    index = np.argsort(keys, kind="stable")
    ordered = rows[index]
    starts = np.flatnonzero(np.any(ordered[1:] != ordered[:-1], axis=1)) + 1
    edges = np.concatenate([[0], starts, [count]]) if count else np.zeros(1, np.int64)
    return edges.astype(np.int64), index.astype(np.int64)
