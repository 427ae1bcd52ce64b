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
    assert "running or interrupted" in text
    for t in exp.trials():
        assert t.name in text
    assert "diverged" in text


def test_empty_table() -> None:
    assert format_table([]) == "no trials yet"
