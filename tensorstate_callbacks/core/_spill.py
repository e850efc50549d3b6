"""Exact counts beyond the memory cap: distinct states spilled to disk.

When a counter's tables outgrow their cap, every (state, count) pair is
appended to one of ``2**partition_bits`` files chosen by the state's hash, and
the tables start empty again.  A state always lands in the same partition, so
reading back one partition at a time (and re-counting it) gives exact totals
while holding only about ``1 / 2**partition_bits`` of the distinct states.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from . import _table


class SpillFiles:
    """Hash-partitioned files of (packed state, count) pairs.

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
        self._directory = tempfile.TemporaryDirectory(prefix="tensorstate-spill-", dir=directory)
        self.path = Path(self._directory.name)
        self.bytes_written = 0

    def _files(self, partition: int) -> tuple[Path, Path]:
        return self.path / f"{partition}.keys", self.path / f"{partition}.counts"

    def write(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Append distinct states and their counts, split by partition."""
        parts = _table.partitions(keys, self.partition_bits)
        order = np.argsort(parts, kind="stable")
        bounds = np.searchsorted(parts[order], np.arange((1 << self.partition_bits) + 1))
        for partition in range(1 << self.partition_bits):
            rows = order[bounds[partition] : bounds[partition + 1]]
            if rows.size == 0:
                continue
            keys_file, counts_file = self._files(partition)
            with open(keys_file, "ab") as handle:
                keys[rows].tofile(handle)
            with open(counts_file, "ab") as handle:
                counts[rows].astype(np.uint64).tofile(handle)
            self.bytes_written += rows.size * (self.key_bytes + 8)

    def partitions(self, keys: np.ndarray, counts: np.ndarray):
        """Yield exact (keys, counts) per partition, merged with in-memory ``keys``/``counts``.

        Each distinct state appears in exactly one yielded chunk.
        """
        parts = _table.partitions(keys, self.partition_bits)
        for partition in range(1 << self.partition_bits):
            table = _table.CountTable(self.key_bytes)
            keys_file, counts_file = self._files(partition)
            if keys_file.exists():
                spilled = np.fromfile(keys_file, dtype=np.uint8).reshape(-1, self.key_bytes)
                _table.count_rows([table], spilled, np.fromfile(counts_file, np.uint64))
            mine = parts == partition
            if mine.any():
                _table.count_rows([table], np.ascontiguousarray(keys[mine]),
                                  np.ascontiguousarray(counts[mine]))
            if table.distinct:
                yield table.items()

    def close(self) -> None:
        """Delete the spill files."""
        self._directory.cleanup()
