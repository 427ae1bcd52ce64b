"""`sweep data inspect`: counts, sizes and every kind of flagged problem."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from sweep.cli import main
from sweep.data import annotations, convert
from sweep.data.dataset import detection_example
from sweep.data.inspect_records import inspect_records, render_table
from sweep.data.tfrecord import frame_record
from tests.annotation_fixtures import make_voc


def _jpeg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, format="JPEG")
    return buf.getvalue()


def _write(path: Path, examples: list[bytes]) -> Path:
    path.write_bytes(b"".join(frame_record(e) for e in examples))
    return path


def _ex(boxes: list[tuple[float, float, float, float]], labels: list[int], *, w: int = 200,
        h: int = 100, header: tuple[int, int] | None = None, texts: list[str] | None = None,
        name: str = "a.jpg") -> bytes:
    hw = header or (w, h)
    return detection_example(_jpeg(w, h), "jpeg", hw[0], hw[1], name, name, boxes,
                             texts or [f"c{i}" for i in labels], labels)


def test_counts_classes_and_coco_sizes(tmp_path: Path) -> None:
    # 200x100 image: boxes of 20x10 (area 200: small), 100x50 (5000: medium), 200x100 (large).
    rec = _write(tmp_path / "a.record", [
        _ex([(0, 0, 0.1, 0.1), (0, 0, 0.5, 0.5)], [1, 2], name="1.jpg"),
        _ex([(0, 0, 1, 1)], [2], name="2.jpg"),
        _ex([], [], name="3.jpg"),
    ])
    stats = inspect_records([rec])
    assert (stats.examples, stats.boxes, stats.no_boxes) == (3, 3, 1)
    assert dict(stats.box_sizes) == {"small": 1, "medium": 1, "large": 1}
    assert stats.per_class == {(1, "c1"): 1, (2, "c2"): 2}
    assert stats.image_sizes == {(200, 100): 3}
    assert not stats.problems
    table = render_table(stats)
    assert "3 examples, 3 boxes (1 examples without boxes)" in table
    assert "no problems found" in table


def test_flags_each_problem(tmp_path: Path) -> None:
    lm = tmp_path / "lm.pbtxt"
    lm.write_text('item { id: 1 name: "c1" }\nitem { id: 2 name: "two" }\n')
    good = _ex([(0.1, 0.1, 0.2, 0.2)], [1])
    rec = _write(tmp_path / "a.record", [
        good,
        _ex([(0.5, 0.1, 0.2, 0.2)], [1], name="inverted.jpg"),
        _ex([(0.1, 0.1, 1.2, 0.2)], [1], name="outside.jpg"),
        _ex([(0.1, 0.1, 0.2, 0.2)], [7], name="unknown.jpg"),
        _ex([(0.1, 0.1, 0.2, 0.2)], [2], name="renamed.jpg"),
        _ex([(0.1, 0.1, 0.2, 0.2)], [1], header=(640, 480), name="resized.jpg"),
    ])
    empty = tmp_path / "empty.record"
    empty.write_bytes(b"")
    torn = tmp_path / "torn.record"
    torn.write_bytes(frame_record(good) + frame_record(good)[:-9])
    stats = inspect_records([rec, empty, torn], label_map=lm)
    got = [str(p) for p in stats.problems]

    def one(*parts: str) -> None:
        assert sum(all(p in g for p in parts) for g in got) == 1, (parts, got)

    one("example 1 (inverted.jpg)", "outside [0, 1] or inverted")
    one("example 2 (outside.jpg)", "outside [0, 1] or inverted")
    one("example 3 (unknown.jpg)", "class id 7 is not in the label map")
    one("example 4 (renamed.jpg)", "'two' in the label map but the record says 'c2'")
    one("example 5 (resized.jpg)", "header says 640x480, the image is 200x100")
    one(f"{empty}", "holds no examples")
    one(f"{torn}", "corrupt after 1 examples", "truncated")
    assert len(got) == 7
    assert stats.examples == 7


def test_cli_inspect_converted_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_voc(tmp_path / "voc", 8)
    result = convert.convert(annotations.read_voc(tmp_path / "voc"), tmp_path / "out",
                             shards=2, progress=False)
    files = [str(f) for f in result.train.files + result.test.files]
    png = tmp_path / "plot.png"
    assert main(["data", "inspect", *files, "--label-map", str(result.label_map),
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "3 file(s): 8 examples, 15 boxes" in out and "no problems found" in out
    assert Image.open(png).size[0] > 500
    bad = tmp_path / "bad.record"
    bad.write_bytes(b"not a record at all, just text")
    assert main(["data", "inspect", str(bad)]) == 1
    assert "bad length checksum" in capsys.readouterr().out
