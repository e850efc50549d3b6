# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled binarize+pack kernel (see ts_pack.h), used by tensorstate_callbacks.core.packing."""
from libc.stdint cimport int64_t, uint8_t


cdef extern from "ts_status.h" nogil:
    ctypedef enum ts_status:
        TS_OK
        TS_NO_MEMORY
        TS_BAD_ARGUMENT

cdef extern from "ts_pack.h" nogil:
    cpdef enum ts_kind:
        TS_FLOAT32
        TS_FLOAT64
        TS_INT8
        TS_INT16
        TS_INT32
        TS_INT64
        TS_UINT8
        TS_UINT16
        TS_UINT32
        TS_UINT64
        TS_FLOAT16
        TS_BFLOAT16
    ctypedef struct ts_view:
        const char *base
        int64_t n_outer, n_states, n_neurons
        int64_t stride_outer, stride_state, stride_neuron
    ts_status ts_pack_view(int kind, const ts_view *v, uint8_t *out, int threads)
    int ts_pack_isa()
    void ts_pack_set_isa_limit(int limit)


# dtype name -> kind: "float32" -> TS_FLOAT32, ... (the C names are NumPy's).
KINDS = {kind.name[len("TS_"):].lower(): int(kind) for kind in ts_kind}


# Instruction sets of the float32 kernels, lowest first (ts_isa).
INSTRUCTION_SETS = ("portable", "sse2", "avx2")


def instruction_set():
    """The instruction set the float32 kernels use now: "avx2" or "sse2" on
    x86-64 (the highest the CPU has), "portable" C elsewhere."""
    return INSTRUCTION_SETS[ts_pack_isa()]


def limit_instruction_set(str name):
    """Let the float32 kernels use at most `name` (one of INSTRUCTION_SETS),
    so that tests run every kernel on one machine; "avx2" restores the
    default.  Affects every thread; not for use while packing.

    Raises:
        ValueError: ``name`` is not one of INSTRUCTION_SETS.
    """
    if name not in INSTRUCTION_SETS:
        raise ValueError(f"unknown instruction set {name!r}: use one of {INSTRUCTION_SETS}")
    ts_pack_set_isa_limit(INSTRUCTION_SETS.index(name))


def pack_rows(size_t address, tuple shape, tuple strides, int kind, uint8_t[:, ::1] out,
              int threads=1):
    """Pack every row of the 3-D view at `address` into `out`.

    Args:
        address: address of the view's first element.
        shape: (outer, states, neurons); row ``a * states + s`` is state
            (a, s), its neurons along the last axis.
        strides: byte strides of the three axes.
        kind: a value of KINDS, the element type.
        out: uint8[outer * states, ceil(neurons / 8)], written.
        threads: threads to split the rows among (at most one per row).

    The caller keeps the viewed buffer alive and within bounds of the view.
    Releases the GIL.

    Raises:
        ValueError: for an unknown kind, a bad shape, or an ``out`` of
            the wrong shape.
        MemoryError: when the kernel's scratch cannot be allocated.
    """
    cdef ts_view view
    cdef ts_status status
    if len(shape) != 3 or len(strides) != 3:
        raise ValueError(f"shape {shape} and strides {strides} must have 3 entries each")
    view.base = <const char *>address
    view.n_outer, view.n_states, view.n_neurons = shape
    view.stride_outer, view.stride_state, view.stride_neuron = strides
    if view.n_outer < 0 or view.n_states < 0 or view.n_neurons < 1:
        raise ValueError(f"bad shape {shape}: sizes must be >= 0, neurons >= 1")
    cdef int64_t rows = view.n_outer * view.n_states
    if out.shape[0] != rows or out.shape[1] != (view.n_neurons + 7) // 8:
        raise ValueError(f"out has shape ({out.shape[0]}, {out.shape[1]}), the view needs "
                         f"({rows}, {(view.n_neurons + 7) // 8})")
    if threads < 1:
        raise ValueError(f"threads={threads} must be >= 1")
    if rows == 0:
        if not 0 <= kind < len(KINDS):
            raise ValueError(f"unknown element kind {kind}")
        return
    with nogil:
        status = ts_pack_view(kind, &view, &out[0, 0], threads)
    if status == TS_NO_MEMORY:
        raise MemoryError("out of memory while packing states")
    if status == TS_BAD_ARGUMENT:
        raise ValueError(f"unknown element kind {kind}")
