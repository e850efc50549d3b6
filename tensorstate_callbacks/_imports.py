"""Optional dependencies: cached availability flags and one install hint per extra.

Nothing here imports an optional package until asked: :func:`available` only
looks the package up, :func:`require` imports it or raises an ImportError that
names the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache

__all__ = ["EXTRAS", "available", "cupy_available", "install_hint", "require"]

# Which extra of tensorstate-callbacks brings each optional package.
EXTRAS = {
    "torch": "torch", "lightning": "lightning", "pytorch_lightning": "lightning",
    "keras": "keras", "tensorflow": "keras", "tensorboardX": "tensorboard",
    "tensorboard": "tensorboard", "matplotlib": "tensorboard", "zarr": "zarr",
    "numcodecs": "zarr", "cupy": "gpu",
}


def install_hint(module: str) -> str:
    """The pip command that installs ``module`` with this package.

    Example:
        >>> install_hint("zarr")
        "pip install 'tensorstate-callbacks[zarr]'"
    """
    return f"pip install 'tensorstate-callbacks[{EXTRAS.get(module, 'all')}]'"


@cache
def available(module: str) -> bool:
    """Whether ``module`` can be imported (looked up once, not imported).

    Example:
        >>> available("numpy"), available("no_such_module_here")
        (True, False)
    """
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str):
    """Import ``module``, or raise an ImportError saying what needs it and how to install it.

    Example:
        >>> require("numpy", "counting").__name__
        'numpy'
        >>> require("no_such_module_here", "the demo")
        Traceback (most recent call last):
        ...
        ImportError: the demo needs no_such_module_here: pip install 'tensorstate-callbacks[all]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{purpose} needs {module}: {install_hint(module)}") from error


@cache
def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device (checked once).

    Example:
        >>> isinstance(cupy_available(), bool)
        True
    """
    if not available("cupy"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CUDA driver missing or broken
        return False
