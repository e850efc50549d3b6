"""Exact counts beyond the memory cap: distinct states spilled to disk.

When a counter's tables outgrow their cap, every (state, count) pair is
appended to one of ``2**partition_bits`` files chosen by the state's hash, and
the tables start empty again.  A state always lands in the same partition, so
reading back one partition at a time (and re-counting it) gives exact totals
while holding only about ``1 / 2**partition_bits`` of the distinct states.

Every write is checked (short writes, a full disk, an I/O error, a file size
limit) and every read is verified against the rows and CRC-32 checksums
recorded at write time, so a lost, truncated or altered spill file raises
:class:`SpillError` instead of giving wrong counts.  A forked child reads
the files as they were at the fork, and copies them before its first write
(the parent keeps appending to its own); only the process that made a
spill directory deletes it, when the counter goes or the process exits.
"""

from __future__ import annotations

import errno
import multiprocessing.util
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from . import _table

_FIX = ("free space there or pass spill_dir= a directory with room (or raise memory_limit "
        "to spill less)")


class SpillError(RuntimeError):
    """A spill file could not be written or read back intact; the message
    names the spill directory and the fix."""


def _remove_if_owner(path: Path, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def _append(path: Path, data) -> None:
    """Append all of ``data`` (bytes or a contiguous array) to the file, going
    on after short writes.

    Raises:
        SpillError: the file cannot be opened or written (full disk, I/O
            error, file size limit, directory removed).
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data).cast("B")
            while len(view):
                written = os.write(descriptor, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, "a write made no progress")
                view = view[written:]
        finally:
            os.close(descriptor)
    except OSError as error:
        raise SpillError(f"writing spill file {path} failed ({error.strerror or error}); "
                         f"{_FIX}") from error


def _read_prefix(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of the file, or raise OSError / ValueError."""
    with open(path, "rb") as handle:
        data = handle.read(size)
    if len(data) != size:
        raise ValueError(f"{path.name} holds {len(data):,} bytes where {size:,} were written")
    return data


class SpillFiles:
    """Hash-partitioned files of (packed state, count) pairs, checked on both ends.

    >>> spill = SpillFiles(key_bytes=1, partition_bits=2)
    >>> spill.write(np.array([[5], [7]], dtype=np.uint8), np.array([2, 1], dtype=np.uint64))
    >>> spill.write(np.array([[5]], dtype=np.uint8), np.array([4], dtype=np.uint64))
    >>> empty = (np.empty((0, 1), np.uint8), np.empty(0, np.uint64))
    >>> sorted((k[0], int(c)) for keys, counts in spill.partitions(*empty)
    ...        for k, c in zip(keys.tolist(), counts))
    [(5, 6), (7, 1)]
    >>> spill.close()
    """

    def __init__(self, key_bytes: int, partition_bits: int = 6, directory=None):
        self.key_bytes = key_bytes
        self.partition_bits = partition_bits
        self.path = self._new_directory(directory)
        self.bytes_written = 0
        # Per partition: rows written, and the CRC-32 of its keys and of its counts.
        self._rows = np.zeros(1 << partition_bits, dtype=np.int64)
        self._checksums = np.zeros((1 << partition_bits, 2), dtype=np.uint32)

    def _new_directory(self, parent) -> Path:
        try:
            path = Path(tempfile.mkdtemp(prefix="tensorstate-spill-", dir=parent))
        except OSError as error:
            where = parent if parent is not None else tempfile.gettempdir()
            raise SpillError(f"cannot create a spill directory in {where} "
                             f"({error.strerror or error}); {_FIX}") from error
        self._owner = os.getpid()
        # Removed when this object goes, or when the process exits (also a
        # multiprocessing child, which skips atexit): only by its owner.
        self._finalizer = multiprocessing.util.Finalize(
            self, _remove_if_owner, args=(path, self._owner), exitpriority=0)
        return path

    def _files(self, partition: int, directory: Path | None = None) -> tuple[Path, Path]:
        directory = self.path if directory is None else directory
        return directory / f"{partition}.keys", directory / f"{partition}.counts"

    def write(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Append distinct states and their counts, split by partition.

        Raises:
            SpillError: a write failed (the files may hold part of the rows).
        """
        self._own()
        parts = _table.partitions(keys, self.partition_bits)
        order = np.argsort(parts, kind="stable")
        bounds = np.searchsorted(parts[order], np.arange((1 << self.partition_bits) + 1))
        for partition in range(1 << self.partition_bits):
            rows = order[bounds[partition] : bounds[partition + 1]]
            if rows.size == 0:
                continue
            chunks = (np.ascontiguousarray(keys[rows]), counts[rows].astype(np.uint64))
            for file, data, column in zip(self._files(partition), chunks, range(2)):
                _append(file, data)
                self._checksums[partition, column] = zlib.crc32(
                    data, int(self._checksums[partition, column]))
            self._rows[partition] += rows.size
            self.bytes_written += rows.size * (self.key_bytes + 8)

    def _own(self) -> None:
        """In a forked child, move to a copy of the files before writing: the
        parent's directory is the parent's."""
        if os.getpid() == self._owner:
            return
        theirs = self.path
        self.path = self._new_directory(theirs.parent)
        for partition in np.flatnonzero(self._rows).tolist():
            for source, target, width in zip(self._files(partition, theirs),
                                             self._files(partition), (self.key_bytes, 8)):
                _append(target, self._verified(source, partition, width))

    def _verified(self, file: Path, partition: int, width: int) -> bytes:
        """The bytes of a spill file written so far, checked against the
        recorded rows and checksum."""
        column = 0 if file.suffix == ".keys" else 1
        try:
            data = _read_prefix(file, int(self._rows[partition]) * width)
            if zlib.crc32(data) != int(self._checksums[partition, column]):
                raise ValueError(f"{file.name} does not match the checksum of what was written")
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise SpillError(
                f"spill file {file} cannot be read back intact ({reason}): was the spill "
                f"directory {file.parent} removed or changed (e.g. by a temp-file cleaner) or "
                f"the disk full? Pass spill_dir= a directory nothing else cleans up, with "
                "room") from error
        return data

    def partitions(self, keys: np.ndarray, counts: np.ndarray):
        """Yield exact (keys, counts) per partition, merged with in-memory ``keys``/``counts``.

        Each distinct state appears in exactly one yielded chunk.

        Raises:
            SpillError: a spill file is missing, truncated or altered.
        """
        parts = _table.partitions(keys, self.partition_bits)
        for partition in range(1 << self.partition_bits):
            table = _table.CountTable(self.key_bytes)
            if self._rows[partition]:
                keys_file, counts_file = self._files(partition)
                spilled = np.frombuffer(self._verified(keys_file, partition, self.key_bytes),
                                        dtype=np.uint8).reshape(-1, self.key_bytes)
                spilled_counts = np.frombuffer(self._verified(counts_file, partition, 8),
                                               dtype=np.uint64)
                _table.count_rows([table], spilled, spilled_counts)
            mine = parts == partition
            if mine.any():
                _table.count_rows([table], np.ascontiguousarray(keys[mine]),
                                  np.ascontiguousarray(counts[mine]))
            if table.distinct:
                yield table.items()

    def close(self) -> None:
        """Delete the spill files (only in the process that made them)."""
        self._finalizer()
