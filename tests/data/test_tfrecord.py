"""The one TFRecord module: CRC32C, framing, and the reader's verify / torn-tail options."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sweep.data import tfrecord
from sweep.data.tfrecord import (
    TFRecordError,
    count_records,
    crc32c,
    frame_record,
    masked_crc32c,
    read_records,
)


def test_crc32c_matches_tensorboards_independent_implementation() -> None:
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tb

    rng = random.Random(1)
    for n in (0, 1, 7, 100, 5000):
        data = rng.randbytes(n)
        assert crc32c(data) == tb.crc32c(data)
        assert masked_crc32c(data) == tb.masked_crc32c(data)
    assert crc32c(b"123456789") == 0xE3069283  # the published CRC-32C check value


def test_compiled_crc32c_agrees_with_the_pure_python_one() -> None:

    assert tfrecord.COMPILED_CRC  # google-crc32c is in the lock: full verification is fast
    rng = random.Random(2)
    for n in (0, 1, 3, 64, 4097, 100_000):
        data = rng.randbytes(n)
        assert tfrecord.crc32c(data) == tfrecord.crc32c_python(data)


def test_sample_verification_spreads_over_the_whole_file(tmp_path: Path) -> None:
    """`sample` (the pre-flight default) checks every length checksum and the data of the
    first 8 records and every 997th; `all` (--verify-data full) every record's data."""
    payloads = [bytes([i % 251]) * 20 for i in range(2000)]
    good = b"".join(frame_record(p) for p in payloads)
    size = 12 + 20 + 4
    path = tmp_path / "big.record"
    path.write_bytes(_flip(good, 500 * size + 12 + 3))  # record 500's data: not sampled
    assert count_records(path) == 2000
    with pytest.raises(TFRecordError, match="record 500 has a bad data checksum"):
        count_records(path, verify="all")
    path.write_bytes(_flip(good, 997 * size + 12 + 3))  # record 997's data: sampled
    with pytest.raises(TFRecordError, match="record 997 has a bad data checksum"):
        count_records(path)
    path.write_bytes(_flip(good, 1500 * size + 2))  # any record's length: always checked
    with pytest.raises(TFRecordError, match="record 1500 has a bad length checksum"):
        count_records(path)


def test_framing_round_trips_and_detects_corruption(tmp_path: Path) -> None:
    payloads = [b"", b"a", bytes(range(256)) * 3]
    path = tmp_path / "x.record"
    path.write_bytes(b"".join(frame_record(p) for p in payloads))
    assert list(read_records(path)) == payloads

    good = path.read_bytes()
    # Record 0 (empty) takes 16 bytes; record 1's length is at 16, its data at 28.
    for offset, match in ((16, "record 1 has a bad length checksum at byte 16"),
                          (28, "record 1 has a bad data checksum at byte 16")):
        flipped = bytearray(good)
        flipped[offset] ^= 0xFF
        path.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match=match) as e:
            list(read_records(path))
        assert str(e.value).startswith(f"{path}: ") and e.value.offset == 16
    path.write_bytes(good[:-3])
    with pytest.raises(ValueError, match="truncated"):
        list(read_records(path))


PAYLOADS = [b"a" * 10, b"b" * 20, b"c" * 8]  # records at bytes 0, 26, 62


def _flip(good: bytes, offset: int) -> bytes:
    flipped = bytearray(good)
    flipped[offset] ^= 0xFF
    return bytes(flipped)


def test_verify_levels(tmp_path: Path) -> None:
    path = tmp_path / "x.record"
    good = b"".join(frame_record(p) for p in PAYLOADS)
    second_data = 26 + 12  # record 0 is 12 + 10 + 4 bytes
    path.write_bytes(_flip(good, second_data))
    with pytest.raises(TFRecordError, match="record 1 has a bad data checksum at byte 26"):
        list(read_records(path))
    assert len(list(read_records(path, verify="first"))) == 3  # only record 0's data is checked
    assert count_records(path, verify="first") == 3
    with pytest.raises(TFRecordError, match="record 1 has a bad data checksum"):
        count_records(path)  # the default sample starts with the first 8 records

    path.write_bytes(_flip(good, 12))  # record 0's data
    with pytest.raises(TFRecordError, match="record 0 has a bad data checksum at byte 0"):
        count_records(path)
    assert list(read_records(path, verify="none"))[1:] == PAYLOADS[1:]

    path.write_bytes(_flip(good, 26))  # record 1's length checksum: checked unless "none"
    for verify in ("all", "sample", "first"):
        with pytest.raises(TFRecordError, match="record 1 has a bad length checksum at byte 26$"):
            list(read_records(path, verify=verify))
    with pytest.raises(ValueError, match="verify must be"):
        list(read_records(path, verify="some"))  # type: ignore[arg-type]


def test_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "x.record"
    good = b"".join(frame_record(p) for p in PAYLOADS)
    for cut in (3, 8, 20):  # the last record (24 bytes) torn in its footer, data, header
        path.write_bytes(good[:-cut])
        assert list(read_records(path, verify="none", torn_tail_ok=True)) == PAYLOADS[:2]
        assert list(read_records(path, torn_tail_ok=True)) == PAYLOADS[:2]
        with pytest.raises(TFRecordError, match="truncated") as e:
            list(read_records(path))
        assert e.value.offset == 62 and e.value.index == 2
        with pytest.raises(TFRecordError, match="truncated"):
            count_records(path)


def test_count_records(tmp_path: Path) -> None:
    path = tmp_path / "x.record"
    path.write_bytes(b"".join(frame_record(p) for p in PAYLOADS))
    assert count_records(path) == 3
    path.write_bytes(b"")
    with pytest.raises(TFRecordError) as e:
        count_records(path)
    assert e.value.reason == "the file is empty" and str(e.value) == f"{path}: the file is empty"
    assert list(read_records(path)) == []
    path.write_bytes(b"\xff\xd8\xff JPEG, not a record" * 4)
    with pytest.raises(TFRecordError) as e:
        count_records(path)
    assert e.value.reason == "record 0 has a bad length checksum at byte 0: not a TFRecord file"
