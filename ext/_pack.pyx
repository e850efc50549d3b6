# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled binarize+pack kernel (see ts_pack.h). Wrapped by tensorstate_callbacks.states."""
from libc.stdint cimport int64_t, uint8_t


cdef extern from "ts_pack.h" nogil:
    ctypedef struct ts_view:
        const char *base
        int64_t n_outer, n_states, n_neurons
        int64_t stride_outer, stride_state, stride_neuron
    int ts_pack(int kind, const ts_view *v, uint8_t *out,
                int64_t row_begin, int64_t row_end)


KINDS = {
    "float32": 0, "float64": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5,
    "uint8": 6, "uint16": 7, "uint32": 8, "uint64": 9, "float16": 10, "bfloat16": 11,
}


def pack_rows(size_t address, tuple shape, tuple strides, int kind,
              uint8_t[:, ::1] out, int64_t row_begin, int64_t row_end):
    """Pack rows [row_begin, row_end) of the 3-D view at `address` into `out`.

    `shape` is (outer, states, neurons) and `strides` are in bytes; `kind` is a
    value of KINDS.  The caller keeps the viewed buffer alive and checks bounds.
    Releases the GIL, so threads can pack disjoint row ranges at once.
    """
    cdef ts_view view
    cdef int status
    view.base = <const char *>address
    view.n_outer, view.n_states, view.n_neurons = shape
    view.stride_outer, view.stride_state, view.stride_neuron = strides
    if row_end <= row_begin:
        return
    with nogil:
        status = ts_pack(kind, &view, &out[0, 0], row_begin, row_end)
    if status == -1:
        raise MemoryError("out of memory while packing states")
    if status != 0:
        raise ValueError(f"unknown element kind {kind}")
