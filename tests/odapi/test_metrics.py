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
