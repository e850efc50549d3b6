"""Split the bytes of a TFRecord file (a TensorBoard event file) into its
records, checking every checksum, and say what could not be read.

A record is a little-endian u64 length, the masked CRC32C of those 8 bytes,
the data, and the masked CRC32C of the data.  TensorBoard's reader stops at
the first record that fails a check, without a word, so a single flipped bit
hides every later event.  :func:`split_records` skips a damaged record and
goes on at the next valid one: past a bad data checksum by the (checked)
length, past a bad length by searching for the next record whose checksums
hold.

Example:
    >>> good = frame(b"first") + frame(b"second")
    >>> split_records(good)
    ([(0, b'first'), (21, b'second')], [])
    >>> damaged = bytearray(good); damaged[14] ^= 1        # a bit of b"first"
    >>> records, losses = split_records(bytes(damaged))
    >>> records, losses[0].what
    ([(21, b'second')], 'a record whose data failed its checksum was skipped')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["BAD_DATA", "BAD_LENGTH", "FRAMING", "TRUNCATED", "Loss", "frame", "split_records"]

_HEADER = struct.Struct("<QI")  # length, masked CRC32C of the length
_CRC = struct.Struct("<I")
FRAMING = _HEADER.size + _CRC.size
"""Bytes a record takes beyond its data."""

TRUNCATED = "an incomplete record at the end (the file is truncated)"
BAD_LENGTH = "a record whose length failed its checksum was skipped"
BAD_DATA = "a record whose data failed its checksum was skipped"


@dataclass(frozen=True)
class Loss:
    """A span of bytes that held no valid record.

    Attributes:
        start: offset of its first byte.
        end: offset after its last byte.
        what: what was wrong, as a sentence fragment.
        after_record: how many valid records came before it.
    """

    start: int
    end: int
    what: str
    after_record: int


def _crc32c():
    try:
        from google_crc32c import value
    except ImportError:  # the pure-Python implementation tensorboard ships (slower)
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as value
    return value


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """``data`` framed as one TFRecord (what TensorBoard writers write).

    Example:
        >>> len(frame(b"abc"))
        19
    """
    crc = _crc32c()
    length = struct.pack("<Q", len(data))
    return (length + _CRC.pack(_masked(crc(length))) + data
            + _CRC.pack(_masked(crc(data))))


def _check(data: bytes, offset: int, crc) -> tuple[int, str | None]:
    """``(end, problem)`` of the record at ``offset``; problem is None when the
    record is whole and both checksums hold."""
    if len(data) - offset < FRAMING:
        return len(data), TRUNCATED
    length, length_crc = _HEADER.unpack_from(data, offset)
    if _masked(crc(data[offset:offset + 8])) != length_crc:
        return offset, BAD_LENGTH
    end = offset + FRAMING + length
    if end > len(data):
        return len(data), TRUNCATED
    body = data[offset + _HEADER.size:end - _CRC.size]
    valid = _masked(crc(body)) == _CRC.unpack_from(data, end - _CRC.size)[0]
    return end, None if valid else BAD_DATA


def _next_record(data: bytes, offset: int, crc) -> int:
    """Where the next valid record after ``offset`` starts (or the end)."""
    # Records are far shorter than 4 GiB, so a length's high four bytes are zero.
    candidate = data.find(b"\0\0\0\0", offset + 5)
    while candidate != -1:
        if _check(data, candidate - 4, crc)[1] is None:
            return candidate - 4
        candidate = data.find(b"\0\0\0\0", candidate + 1)
    return len(data)


def split_records(data: bytes) -> tuple[list[tuple[int, bytes]], list[Loss]]:
    """The valid records of a TFRecord file's bytes, and the spans that held none.

    Args:
        data: the whole file.

    Returns:
        ``(records, losses)``: each record as ``(offset, data)`` in file
        order; each :class:`Loss` in file order.  Both empty for no bytes.

    Example:
        >>> records, losses = split_records(frame(b"whole") + frame(b"cut")[:-2])
        >>> records, losses
        ([(0, b'whole')], [Loss(start=21, end=38, what='an incomplete record at the end (the file is truncated)', after_record=1)])
    """  # noqa: E501
    crc = _crc32c()
    records, losses, offset = [], [], 0
    while offset < len(data):
        end, problem = _check(data, offset, crc)
        if problem == BAD_LENGTH:  # the length is unknown: look for the next valid record
            end = _next_record(data, offset, crc)
        if problem is None:
            records.append((offset, data[offset + _HEADER.size:end - _CRC.size]))
        else:
            losses.append(Loss(offset, end, problem, len(records)))
        offset = end
    return records, losses
