"""Optional raw storage of packed states in a zarr (v3) array, Blosc-compressed.

Off by default: counting never needs the raw states.  Store them in memory, or
on disk at a path, when you want to look at individual states later.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

# About 1 MiB of packed states per chunk, whatever the batch size.
_CHUNK_BYTES = 1 << 20


def _import_zarr():
    try:
        import zarr
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "storing raw states needs zarr: pip install 'tensorstate-callbacks[zarr]'"
        ) from error
    return zarr


def check_writable(path) -> Path:
    """Create ``path`` (a directory) if needed and prove it can be written.

    >>> import tempfile
    >>> check_writable(tempfile.mkdtemp()).is_dir()
    True
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(
            f"cannot write states to storage path {str(path)!r} ({error.strerror or error}); "
            "pass a directory you can write to, or storage_path=None to keep them in memory"
        ) from error
    return path


class RawStateStore:
    """Append-only zarr array of packed states: ``uint8[num_states, num_bytes]``.

    >>> store = RawStateStore()                 # in memory
    >>> store.append(np.array([[1], [2]], dtype=np.uint8))
    >>> store.read().ravel().tolist()
    [1, 2]
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self._zarr = _import_zarr()
        self.path = None if path is None else check_writable(path)
        self._array = None

    def _create(self, num_bytes: int):
        zarr = self._zarr
        store = zarr.storage.MemoryStore() if self.path is None else str(self.path)
        rows = max(1, _CHUNK_BYTES // num_bytes)
        return zarr.create_array(
            store,
            shape=(0, num_bytes),
            chunks=(rows, num_bytes),
            dtype="uint8",
            compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),
            overwrite=True,
        )

    def append(self, packed: np.ndarray) -> None:
        """Append packed states (rows) to the store."""
        if self._array is None:
            self._array = self._create(packed.shape[1])
        if packed.shape[0]:
            self._array.append(packed, axis=0)

    def read(self) -> np.ndarray:
        """All stored states, in the order they arrived."""
        if self._array is None:
            return np.empty((0, 0), dtype=np.uint8)
        return self._array[:]

    def clear(self) -> None:
        """Forget every stored state (the next append starts a new array)."""
        self._array = None
