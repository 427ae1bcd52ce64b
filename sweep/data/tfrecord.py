"""The one TFRecord module: CRC32C, record framing, and the reader every other module uses.

A TFRecord file is a run of records, each framed as::

    uint64 length (little-endian) | uint32 masked crc32c(length) | data | uint32 masked crc32c(data)

The framing is a dozen lines of Python on purpose: importing TensorFlow costs about 8 s (and
TensorBoard's record reader imports TensorFlow when it is installed). The checksum is the
compiled ``google_crc32c`` (about 1 GB/s; a pure-Python loop reads 1-2 MB/s), with the
pure-Python one as a fallback. Writing datasets (``sweep.data.dataset``), checking input files
(``sweep validate``) and reading event files that are still being written (``sweep.odapi.metrics``)
all go through this module, so they agree on what a valid record is.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

Verify = Literal["all", "sample", "first", "none"]
VERIFY_LEVELS = ("all", "sample", "first", "none")

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
    """CRC-32C (Castagnoli) of ``data``, in pure Python (the fallback, and the tests' oracle)."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:
    import google_crc32c as _compiled

    COMPILED_CRC = _compiled.implementation == "c"
except ImportError:  # pragma: no cover - it is in the lock; a bare install still works
    _compiled, COMPILED_CRC = None, False


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    if COMPILED_CRC:
        return _compiled.value(data)
    return crc32c_python(data)


def sampled(index: int) -> bool:
    """Records whose data checksum ``verify="sample"`` checks: the first 8, then every 997th
    (about 60 of a 50,000-record file, spread over all of it)."""
    return index < 8 or index % 997 == 0


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


def scan_records(f: BinaryIO, path: Path, verify: Verify = "all", torn_tail_ok: bool = False,
                 want_data: bool = True) -> Iterator[bytes | None]:
    """Walk the records of open file ``f`` from where it stands: their data, or None when not
    ``want_data``. While suspended at a record, ``f.tell()`` is the byte after it.

    ``verify``: "all" checks both checksums of every record; "sample" checks every length
    checksum and the data checksum of a sample of records (``sampled``), "first" of the first
    record only, both reading the rest by seeking; "none" checks nothing but the framing's
    lengths.
    ``torn_tail_ok``: a record cut short at the end of the file (a writer still writing, or
    killed) ends the stream quietly instead of raising.
    """
    if verify not in VERIFY_LEVELS:
        raise ValueError(f"verify must be one of {', '.join(VERIFY_LEVELS)}, not {verify!r}")
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
        check_data = (verify == "all" or (verify == "first" and index == 0)
                      or (verify == "sample" and sampled(index)))
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
        for data in scan_records(f, path, verify, torn_tail_ok):
            assert data is not None
            yield data


def count_records(path: str | Path, *, verify: Verify = "sample") -> int:
    """Number of records in a TFRecord file, checked by its framing.

    Raises ``TFRecordError`` if the file is empty, torn, or fails a checksum. By default every
    length checksum is verified but only a sample of data checksums, and the data of the other
    records is skipped by seeking, so a large dataset is counted in about a second.
    """
    path = Path(path)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise TFRecordError(path, "the file is empty")
        return sum(1 for _ in scan_records(f, path, verify, torn_tail_ok=False, want_data=False))
