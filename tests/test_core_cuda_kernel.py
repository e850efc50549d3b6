"""The CUDA kernel of ``core._cuda`` compiles, on every machine: no GPU needed.

What the package would hand to CuPy (``cupy.RawModule(code=..., options=...,
name_expressions=[...])`` in ``_cuda._kernel``) is recorded with a stand-in for
CuPy and compiled to PTX by NVRTC through ``cuda.bindings.nvrtc``, once per
instantiation ``pack_states<T>`` of ``_CUDA_TYPES``, for the oldest and the
newest GPU generations CUDA 12 builds for.  So a kernel that would not compile
on a GPU fails here.

Needs the ``dev`` extra: ``cuda-python`` (the NVRTC binding),
``nvidia-cuda-nvrtc-cu12`` (the compiler library) and
``nvidia-cuda-runtime-cu12`` (``cuda_fp16.h``).  CuPy's own compiler is no
help without a GPU: it asks the CUDA driver for the device first.  Those wheels
exist for Linux and Windows only; elsewhere the module is skipped.
"""

from __future__ import annotations

import platform
import sys
import types

import pytest

from tensorstate_callbacks.core import _cuda

if sys.platform not in ("linux", "win32") or platform.machine().lower() not in (
        "x86_64", "amd64", "aarch64"):
    pytest.skip("NVRTC wheels exist for Linux and Windows on x86-64/aarch64 only",
                allow_module_level=True)

try:
    from cuda.bindings import nvrtc
    from cuda.pathfinder import find_nvidia_header_directory
except ImportError as error:  # on a supported platform: a broken install, not a skip
    raise ImportError(f"{error}: the NVRTC test needs the dev extra "
                      "(pip install -e '.[dev]')") from error

ARCHITECTURES = ["compute_75", "compute_90"]


def headers() -> str:
    """The CUDA runtime headers (``cuda_fp16.h``), as CuPy adds them with ``-I``."""
    directory = find_nvidia_header_directory("cudart")
    assert directory is not None, "nvidia-cuda-runtime-cu12 (cuda_fp16.h) is not installed"
    return directory


def compile_ptx(code: str, options, name_expressions, architecture: str):
    """NVRTC: (success, log, PTX, {name expression: lowered (mangled) name})."""

    def check(result):
        error, *values = result
        assert error == nvrtc.nvrtcResult.NVRTC_SUCCESS, error
        return values[0] if values else None

    program = check(nvrtc.nvrtcCreateProgram(code.encode(), b"pack_states.cu", 0, [], []))
    try:
        for name in name_expressions:
            check(nvrtc.nvrtcAddNameExpression(program, name.encode()))
        arguments = [option.encode() for option in
                     (*options, f"--gpu-architecture={architecture}", f"-I{headers()}")]
        error, = nvrtc.nvrtcCompileProgram(program, len(arguments), arguments)
        log = b" " * check(nvrtc.nvrtcGetProgramLogSize(program))
        check(nvrtc.nvrtcGetProgramLog(program, log))
        log = log.decode(errors="replace").rstrip("\0 \n")
        if error != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            return False, log, "", {}
        ptx = b" " * check(nvrtc.nvrtcGetPTXSize(program))
        check(nvrtc.nvrtcGetPTX(program, ptx))
        lowered = {name: check(nvrtc.nvrtcGetLoweredName(program, name.encode())).decode()
                   for name in name_expressions}
        return True, log, ptx.decode().rstrip("\0"), lowered
    finally:
        check(nvrtc.nvrtcDestroyProgram(program))


@pytest.fixture
def cupy_calls(monkeypatch):
    """What ``_cuda._kernel`` passes to ``cupy.RawModule``, recorded by a stand-in."""
    calls = []

    class RawModule:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def get_function(self, name):
            return name

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(RawModule=RawModule))
    _cuda._kernel.cache_clear()
    yield calls
    _cuda._kernel.cache_clear()


def test_nvrtc_is_cuda_12():
    error, major, _ = nvrtc.nvrtcVersion()
    assert error == nvrtc.nvrtcResult.NVRTC_SUCCESS and major == 12


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("dtype", sorted(_cuda._CUDA_TYPES))
def test_every_instantiation_compiles(cupy_calls, dtype, architecture):
    function = _cuda._kernel(_cuda._CUDA_TYPES[dtype])
    call, = cupy_calls
    assert call["code"] == _cuda.KERNEL_SOURCE
    assert call["name_expressions"] == [function] == [f"pack_states<{_cuda._CUDA_TYPES[dtype]}>"]
    ok, log, ptx, lowered = compile_ptx(call["code"], call["options"],
                                        call["name_expressions"], architecture)
    assert ok, log
    assert "error" not in log.lower(), log
    assert f".entry {lowered[function]}(" in ptx  # the kernel CuPy would look up


def test_a_broken_kernel_fails_to_compile():
    broken = _cuda.KERNEL_SOURCE.replace("bits |=", "bitz |=")
    assert broken != _cuda.KERNEL_SOURCE
    ok, log, ptx, _ = compile_ptx(broken, ["-std=c++14"], ["pack_states<float>"], "compute_75")
    assert not ok and "bitz" in log and ptx == ""


def test_a_type_the_kernel_cannot_read_fails_to_compile():
    ok, log, _, _ = compile_ptx(_cuda.KERNEL_SOURCE, ["-std=c++14"],
                                ["pack_states<struct NoSuchType>"], "compute_75")
    assert not ok and "error" in log.lower()
