"""The one event-file reader: values, steps, torn files, tensor encodings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from report_fixtures import write_events

from sweep.odapi import metrics
from sweep.run import best


def test_reads_every_encoding_the_od_api_uses(tmp_path: Path) -> None:
    rows = {10: {metrics.TOTAL_LOSS: 1.5, metrics.LEARNING_RATE: 0.25}, 20: {metrics.TOTAL_LOSS: 0.75}}
    for i, kind in enumerate(("tensor", "content", "simple")):
        d = tmp_path / kind
        write_events(d, rows, start_wall=1000.0 + i, seconds_per_step=1.0, kind=kind)
        assert metrics.by_step(metrics.read_scalars(d)) == rows


def test_picture_events_are_skipped_undecoded_and_scalars_beside_them_kept(tmp_path: Path) -> None:
    """The eval's pictures (TF2 string tensors, or image summaries) are most of an eval event
    file's bytes: events that hold only pictures are recognised on the wire format and not
    decoded; an event with a scalar beside a picture is decoded as before."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    big = b"\x89PNG" + bytes(range(256)) * 40  # > 4 KB, as a real picture is
    string = summary_pb2.Summary.Value(tag="eval_side_by_side_0_0", tensor=tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[b"64", b"32", big]))
    image = summary_pb2.Summary.Value(tag="img", image=summary_pb2.Summary.Image(
        height=32, width=64, encoded_image_string=big))
    scalar = summary_pb2.Summary.Value(tag=metrics.MAP, simple_value=0.5)
    events = [(1, [string, string]), (2, [image]), (3, [string, scalar]), (4, [scalar])]
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / "events.out.tfevents.1.h.v2", "wb") as f:
        writer = RecordWriter(f)
        for step, values in events:
            writer.write(event_pb2.Event(step=step, wall_time=step, summary=summary_pb2.Summary(
                value=values)).SerializeToString())
    payloads = [event_pb2.Event(step=s, summary=summary_pb2.Summary(value=v)).SerializeToString()
                for s, v in events]
    assert [metrics._pictures_only(p) for p in payloads] == [True, True, False, False]
    assert not metrics._pictures_only(event_pb2.Event(step=1).SerializeToString())  # no summary
    assert metrics.read_scalars(tmp_path) == [metrics.Scalar(3, metrics.MAP, 0.5, 3.0),
                                              metrics.Scalar(4, metrics.MAP, 0.5, 4.0)]


def test_tag_filter_and_wall_times(tmp_path: Path) -> None:
    write_events(tmp_path, {5: {"a": 1.0, "b": 2.0}}, start_wall=100.0, seconds_per_step=2.0)
    got = metrics.read_scalars(tmp_path, ["b"])
    assert got == [metrics.Scalar(5, "b", 2.0, 110.0)]


def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    write_events(tmp_path, {1: {"x": 1.0}, 2: {"x": 2.0}}, start_wall=1.0, seconds_per_step=1.0)
    f = metrics.event_files(tmp_path)[0]
    f.write_bytes(f.read_bytes()[:-7])  # a writer killed mid-record
    assert [s.step for s in metrics.read_scalars(tmp_path)] == [1]


def test_missing_dir_is_empty() -> None:
    assert metrics.read_scalars(Path("/nonexistent/eval")) == []


def test_read_trial_and_best_eval_rule(tmp_path: Path) -> None:
    write_events(tmp_path / "train", {10: {metrics.TOTAL_LOSS: 2.0}, 20: {metrics.TOTAL_LOSS: 1.0}},
                 start_wall=50.0, seconds_per_step=1.0)
    write_events(tmp_path / "eval", {10: {metrics.MAP: 0.5}, 20: {metrics.MAP: 0.25},
                                     30: {metrics.MAP: float("nan")}},
                 start_wall=60.0, seconds_per_step=1.0)
    m = metrics.read_trial(tmp_path)
    assert m.last_train_step == 20 and m.last_train() == {metrics.TOTAL_LOSS: 1.0}
    assert m.train_wall == (60.0, 70.0)
    assert best.best_eval(m, metrics.MAP, "max") == (10, 0.5)
    assert best.best_eval(m, metrics.MAP, "min") == (20, 0.25)  # NaN never wins
    # Losses are the training job's at or before the eval step (what the runner reported).
    assert best.best_eval(m, metrics.TOTAL_LOSS, "min") == (20, 1.0)
    assert math.isnan(m.last_eval()[metrics.MAP])


def test_later_write_of_a_step_wins(tmp_path: Path) -> None:
    """A retried training chunk rewrites a step in a new file; the newest value counts."""
    write_events(tmp_path / "a", {10: {"x": 1.0}}, start_wall=1.0, seconds_per_step=1.0)
    write_events(tmp_path / "a2", {10: {"x": 3.0}}, start_wall=2.0, seconds_per_step=1.0)
    for f in (tmp_path / "a2").iterdir():
        f.rename(tmp_path / "a" / (f.name + ".2"))
    assert metrics.by_step(metrics.read_scalars(tmp_path / "a"))[10]["x"] == pytest.approx(3.0)
