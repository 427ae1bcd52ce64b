"""The one TFRecord module: CRC32C, record framing, and the reader every other module uses.

A TFRecord file is a run of records, each framed as::

    uint64 length (little-endian) | uint32 masked crc32c(length) | data | uint32 masked crc32c(data)

This does not use TensorFlow on purpose: importing it costs about 8 s (and TensorBoard's record
reader imports TensorFlow when it is installed), while the framing is a dozen lines. The
checksum comes from the google-crc32c C extension when it is installed, else pure Python. Writing the
demo dataset (``sweep.dataset``), checking input files (``sweep validate``) and reading event
files that are still being written (``sweep.metrics``) all go through this module, so they agree
on what a valid record is.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

Verify = Literal["all", "first", "none"]

_HEADER = 12  # uint64 length + uint32 masked crc of the length
_FOOTER = 4  # uint32 masked crc of the data


# --------------------------------------------------------------------------- CRC32C


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c_python(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data`` in pure Python (~8 MB/s; the fallback)."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _c_crc32c() -> Callable[[bytes], int] | None:
    # google-crc32c's C extension is ~500x faster than the loop above: converting a data set
    # of photos was bound by the checksum (benchmarks/data_convert.py). Its own fallback is
    # pure Python too, so only the C build is taken.
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.value if google_crc32c.implementation == "c" else None


crc32c: Callable[[bytes], int] = _c_crc32c() or crc32c_python
"""CRC-32C (Castagnoli) of ``data``: the C extension when installed, else pure Python."""


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: crc32c rotated right by 15 plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- framing


def frame_record(data: bytes) -> bytes:
    """One TFRecord: length (uint64 LE), its masked crc, the data, the data's masked crc."""
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))


class TFRecordError(ValueError):
    """A corrupt or truncated TFRecord file.

    ``str(e)`` names the file; ``reason`` is the same message without it (for callers that
    already name the file, like ``sweep validate``); ``offset`` is the byte the bad record
    starts at, ``index`` its number (0-based), both None for a file-level problem.
    """

    def __init__(self, path: Path, reason: str, *, offset: int | None = None,
                 index: int | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.offset = offset
        self.index = index


def _scan(f: BinaryIO, path: Path, verify: Verify, torn_tail_ok: bool,
          want_data: bool) -> Iterator[bytes | None]:
    """Walk the records of open file ``f``: their data, or None when not ``want_data``.

    ``verify``: "all" checks both checksums of every record; "first" checks every length
    checksum but only the first record's data checksum (a large file is checked at the speed
    of seeking, not of pure-Python CRC); "none" checks nothing but the framing's lengths.
    ``torn_tail_ok``: a record cut short at the end of the file (a writer still writing, or
    killed) ends the stream quietly instead of raising.
    """
    if verify not in ("all", "first", "none"):
        raise ValueError(f"verify must be 'all', 'first' or 'none', not {verify!r}")
    size = None if want_data else os.fstat(f.fileno()).st_size
    index = 0
    while True:
        pos = f.tell()
        header = f.read(_HEADER)
        if not header:
            return
        if len(header) < _HEADER:
            if torn_tail_ok:
                return
            raise TFRecordError(path, f"record {index} is truncated: torn header at byte {pos}",
                                offset=pos, index=index)
        length, length_crc = struct.unpack("<QI", header)
        if verify != "none" and masked_crc32c(header[:8]) != length_crc:
            raise TFRecordError(
                path, f"record {index} has a bad length checksum at byte {pos}"
                + (": not a TFRecord file" if index == 0 else ""), offset=pos, index=index)
        check_data = verify == "all" or (verify == "first" and index == 0)
        if want_data or check_data:
            body = f.read(length + _FOOTER)
            complete = len(body) == length + _FOOTER
        else:
            assert size is not None
            complete = pos + _HEADER + length + _FOOTER <= size
            if complete:
                f.seek(length + _FOOTER, os.SEEK_CUR)
        if not complete:
            if torn_tail_ok:
                return
            raise TFRecordError(path, f"record at byte {pos} is truncated ({length} bytes announced)",
                                offset=pos, index=index)
        data = body[:length] if (want_data or check_data) else None
        if check_data and masked_crc32c(data) != struct.unpack("<I", body[length:])[0]:
            raise TFRecordError(path, f"record {index} has a bad data checksum at byte {pos}",
                                offset=pos, index=index)
        yield data if want_data else None
        index += 1


def read_records(path: str | Path, *, verify: Verify = "all",
                 torn_tail_ok: bool = False) -> Iterator[bytes]:
    """Yield the data of every record in the TFRecord file ``path``.

    Raises ``TFRecordError`` (a ``ValueError`` naming the file and byte offset) on a bad
    checksum (as selected by ``verify``: "all", "first" or "none") or a truncated record (unless
    ``torn_tail_ok``, which ends the stream quietly at a record still being written).
    """
    path = Path(path)
    with open(path, "rb") as f:
        for data in _scan(f, path, verify, torn_tail_ok, want_data=True):
            assert data is not None
            yield data


def count_records(path: str | Path, *, verify: Verify = "first") -> int:
    """Number of records in a TFRecord file, checked by its framing.

    Raises ``TFRecordError`` if the file is empty, torn, or fails a checksum. By default every
    length checksum is verified but only the first record's data checksum, and the data of the
    other records is skipped by seeking, so a large dataset is counted quickly.
    """
    path = Path(path)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise TFRecordError(path, "the file is empty")
        return sum(1 for _ in _scan(f, path, verify, torn_tail_ok=False, want_data=False))
