"""`sweep status` on a synthetic experiment: every trial, its state, numbers from event files."""

from __future__ import annotations

from pathlib import Path

from report_fixtures import make_experiment

from sweep.odapi import metrics
from sweep.report.status import format_table, render_status, trial_rows


def test_status_rows_come_from_the_event_files(tmp_path: Path) -> None:
    synth = make_experiment(tmp_path / "exp", finished=False)
    exp = synth.exp
    rows = {r["trial"]: r for r in trial_rows(exp)}
    assert set(rows) == {t.name for t in exp.trials()}
    for t in exp.trials():
        m = metrics.read_trial(t.path)
        r = rows[t.name]
        assert r["state"] == t.status().get("state", "PENDING")
        assert r["step"] == (m.last_train_step or 0)
        for key, got in (("total_loss", m.last_train().get(metrics.TOTAL_LOSS)),
                         ("mAP", m.last_eval().get(metrics.MAP))):
            assert r[key] == got or (r[key] != r[key] and got != got)  # NaN (diverged) too
    text = render_status(exp)
    assert "running, or its driver was killed" in text
    for t in exp.trials():
        assert t.name in text
    assert "diverged" in text


def test_empty_table() -> None:
    assert format_table([]) == "no trials yet"


def test_tries_count_restarts_and_an_interrupted_sweep_says_so(tmp_path: Path) -> None:
    from sweep.core.experiment import write_json

    synth = make_experiment(tmp_path / "exp", finished=False)
    exp = synth.exp
    t = exp.trials()[0]
    t.update_status(attempts=1, restarts=2)  # two process restarts within one start
    assert {r["trial"]: r for r in trial_rows(exp)}[t.name]["attempts"] == 3
    write_json(exp.settings_path, {**exp.settings(), "interrupted": "SIGINT"})
    assert "(interrupted by SIGINT; `sweep resume` continues it)" in render_status(exp)


def test_the_report_line_names_only_files_that_exist(tmp_path: Path) -> None:
    from sweep.cli import report_line

    (tmp_path / "leaderboard.csv").write_text("")
    assert report_line(tmp_path) == f"report: {tmp_path}/report.html  (leaderboard.csv)"
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "pipeline.config").write_text("")
    assert report_line(tmp_path).endswith("(leaderboard.csv, best/pipeline.config)")
