"""Build the compiled core (ext/) as tensorstate_callbacks.core._pack and ._table."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# Portable by default (baseline x86-64 / SSE2); opt in to host-specific code.
extra = ["-O3"] + (["-march=native"] if os.environ.get("TENSORSTATE_NATIVE") else [])
# The kernels create POSIX threads.
threads = ["-pthread"]

# Every header either extension includes: a change to one rebuilds both.
HEADERS = [f"ext/{name}.h" for name in (
    "ts_status", "ts_threads", "ts_pack", "ts_pack_x86",  # packing
    "ts_hash", "ts_sketch", "ts_alloc", "ts_table", "ts_dense", "ts_batch",  # counting
)]

extensions = [
    Extension(
        f"tensorstate_callbacks.core.{name}",
        [f"ext/{name}.pyx"],
        include_dirs=["ext"],
        depends=HEADERS,
        extra_compile_args=extra + threads,
        extra_link_args=threads,
        libraries=["m"],
    )
    for name in ("_pack", "_table")
]

setup(ext_modules=cythonize(extensions, language_level=3))
