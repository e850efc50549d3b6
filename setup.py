"""Build the compiled core (ext/) as tensorstate_callbacks.core._pack and ._table."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# Portable by default (baseline x86-64 / SSE2); opt in to host-specific code.
extra = ["-O3"] + (["-march=native"] if os.environ.get("TENSORSTATE_NATIVE") else [])

extensions = [
    Extension(
        f"tensorstate_callbacks.core.{name}",
        [f"ext/{name}.pyx"],
        include_dirs=["ext"],
        depends=["ext/ts_pack.h", "ext/ts_table.h"],
        extra_compile_args=extra,
        libraries=["m"],
    )
    for name in ("_pack", "_table")
]

setup(ext_modules=cythonize(extensions, language_level=3))
