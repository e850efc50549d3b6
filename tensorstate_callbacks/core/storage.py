"""Optional raw storage of packed states in a zarr (v3) array, Blosc-compressed.

Off by default: counting never needs the raw states.  Store them in memory, or
on disk at a path, when you want to look at individual states later
(``StateCounter(store_states=True)`` or ``StateCounter(storage_path=...)``;
a probe's ``storage_path``).  Needs the ``zarr`` extra.

The array holds the packed states (``uint8[states, ceil(neurons / 8)]``,
neuron ``i`` is bit ``i % 8`` of byte ``i // 8``) in the order they arrived.

A store writes only inside its own directory and deletes only what it wrote:
a directory is taken when it is new, empty, or holds nothing but an array an
earlier store wrote (marked as this package's); anything else there is
refused, never replaced.  Only the process that made a store appends to it.

Example:
    >>> import tempfile, zarr
    >>> path = tempfile.mkdtemp()
    >>> store = RawStateStore(path)
    >>> store.append(np.array([[5], [2]], dtype=np.uint8))
    >>> zarr.open_array(path)[:].ravel().tolist()       # any zarr reader sees them
    [5, 2]
    >>> del store
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path, PurePath

import numpy as np

from .._imports import require

__all__ = ["RawStateStore", "check_writable", "store_path"]

# About 1 MiB of packed states per chunk, whatever the batch size.
_CHUNK_BYTES = 1 << 20
# Marks the arrays this package writes, the only ones it may overwrite.
_MARKER = {"tensorstate_callbacks": "raw_states"}
# Storage paths held by live stores: two stores must never share one.
_claimed_paths: set[Path] = set()


def check_writable(path) -> Path:
    """Create ``path`` (a directory) if needed and prove it can be written.

    Args:
        path: a directory (str or path-like); created with its parents.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: the directory cannot be created or written to.

    Example:
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


def store_path(root, name: str) -> Path:
    """The directory of the store called ``name`` (e.g. a probe's) under ``root``.

    Raises:
        ValueError: ``name`` is not one plain directory name (empty, ``.``,
            ``..``, absolute, or with a path separator): it would leave ``root``.

    Example:
        >>> store_path("runs/states", "conv_1_post_states").as_posix()
        'runs/states/conv_1_post_states'
    """
    if not isinstance(name, str) or PurePath(name).parts != (name,) or name in (".", ".."):
        raise ValueError(f"{name!r} cannot name a store inside {str(root)!r}: a store name "
                         "is one plain directory name (no '/', '..' or absolute path); "
                         "rename the probe")
    return Path(root) / name


def _is_our_array(path: Path) -> bool:
    """Whether ``path`` holds an array a store wrote, and nothing else (its
    metadata with our marker, and chunks ``c/<i>/<j>``)."""
    try:
        metadata = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    if metadata.get("attributes", {}).get("tensorstate_callbacks") != "raw_states":
        return False
    for entry in path.iterdir():
        if entry.name == "zarr.json" and entry.is_file():
            continue
        if entry.name != "c" or entry.is_symlink() or not entry.is_dir():
            return False
        for row in entry.iterdir():
            if not (row.name.isdigit() and row.is_dir() and not row.is_symlink()
                    and all(chunk.name.isdigit() and chunk.is_file() and not chunk.is_symlink()
                            for chunk in row.iterdir())):
                return False
    return True


def _remove_our_array(path: Path) -> None:
    """Delete the array a store wrote at ``path`` (checked: nothing else is there)."""
    if not any(path.iterdir()):
        return
    if not _is_our_array(path):
        raise ValueError(f"storage path {str(path)!r} now holds files this package did not "
                         "write; they are left alone: pick a new or empty directory")
    shutil.rmtree(path / "c", ignore_errors=True)
    (path / "zarr.json").unlink(missing_ok=True)


def _claim(path: Path) -> Path:
    """Check that ``path`` can hold our raw states, and reserve it.

    It must be writable, empty (or hold nothing but raw states an earlier
    run of this package wrote there, which are replaced), and not in use by
    another store.
    """
    path = check_writable(path).resolve()
    if path in _claimed_paths:
        raise ValueError(f"storage path {str(path)!r} is already used by another probe or "
                         "counter; give each one its own directory")
    if any(path.iterdir()) and not _is_our_array(path):
        raise ValueError(f"storage path {str(path)!r} holds files this package did not write; "
                         "they are left alone: pick a new or empty directory")
    _claimed_paths.add(path)
    return path


class RawStateStore:
    """Append-only zarr array of packed states: ``uint8[num_states, num_bytes]``.

    Blosc-compressed (zstd, bit shuffle), about 1 MiB of states per chunk.
    The array is marked as this package's, and a store only ever replaces
    such an array, and only where nothing else is in its directory.

    Args:
        path: a directory for the array on disk; ``None`` keeps it in memory.
            It must be new, empty or hold raw states this package wrote
            (replaced), and no other live store may use it.

    Raises:
        ImportError: zarr is not installed (``pip install 'tensorstate-callbacks[zarr]'``).
        ValueError: ``path`` cannot be written, holds anything but an array
            this package wrote, or is used by another store.

    Example:
        >>> store = RawStateStore()                 # in memory
        >>> store.append(np.array([[1], [2]], dtype=np.uint8))
        >>> store.read().ravel().tolist()
        [1, 2]
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self._zarr = require("zarr", "storing raw states")
        self.path = None if path is None else _claim(Path(path))
        if self.path is not None:
            weakref.finalize(self, _claimed_paths.discard, self.path)
        self._owner = os.getpid()
        self._array = None

    def _create(self, num_bytes: int):
        zarr = self._zarr
        if self.path is None:
            store = zarr.storage.MemoryStore()
        else:
            _remove_our_array(self.path)
            store = str(self.path)
        rows = max(1, _CHUNK_BYTES // num_bytes)
        return zarr.create_array(
            store,
            shape=(0, num_bytes),
            chunks=(rows, num_bytes),
            dtype="uint8",
            compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),
            attributes=_MARKER,
        )

    def check_appendable(self) -> None:
        """Raise ValueError if this process may not append: a store on disk
        belongs to the process that made it, not to a forked child of it.

        Example:
            >>> RawStateStore().check_appendable()      # in memory: always
        """
        if self.path is not None and os.getpid() != self._owner:
            raise ValueError(f"storage path {str(self.path)!r} belongs to process "
                             f"{self._owner}; a forked process cannot append to it: create the "
                             "counter (or probe) in this process, with its own storage_path")

    def append(self, packed: np.ndarray) -> None:
        """Append packed states (rows) to the store.

        Args:
            packed: ``uint8[n, num_bytes]``; the first call fixes ``num_bytes``.

        Example:
            >>> store = RawStateStore()
            >>> store.append(np.array([[1, 0]], dtype=np.uint8))
            >>> store.append(np.array([[2, 1], [3, 0]], dtype=np.uint8))
            >>> store.read().shape
            (3, 2)
        """
        self.check_appendable()
        if self._array is None:
            self._array = self._create(packed.shape[1])
        if packed.shape[0]:
            self._array.append(packed, axis=0)

    def read(self) -> np.ndarray:
        """All stored states, in the order they arrived.

        Returns:
            ``uint8[num_states, num_bytes]``; ``uint8[0, 0]`` before the first append.

        Example:
            >>> RawStateStore().read().shape
            (0, 0)
        """
        if self._array is None:
            return np.empty((0, 0), dtype=np.uint8)
        return self._array[:]

    def clear(self) -> None:
        """Forget every stored state (the next append starts a new array).

        Example:
            >>> store = RawStateStore()
            >>> store.append(np.array([[1]], dtype=np.uint8))
            >>> store.clear(); store.read().size
            0
        """
        self._array = None
