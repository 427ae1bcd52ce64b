"""One rule for a trial's "best": `best:EXPERIMENT`, `sweep export` and the report's best/
name the same trial, step and checkpoint (sweep.run.best), on synthetic experiments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_fixtures import make_experiment, write_events

from sweep.core.experiment import Experiment
from sweep.odapi.metrics import MAP
from sweep.report.export import plan_export
from sweep.report.report import write_report
from sweep.run import best
from sweep.run.best import best_checkpoint


@pytest.mark.parametrize(("seed", "multi"), [(3, False), (4, False), (5, True)])
def test_best_experiment_export_and_report_name_the_same_checkpoint(
        tmp_path: Path, seed: int, multi: bool) -> None:
    se = make_experiment(tmp_path, seed=seed, multi_objective=multi)
    found = best.experiment_best(se.exp)
    assert found is not None and found.exact
    truth = se.truth[found.trial.name]
    assert (found.checkpoint.name, found.step) == truth.kept_best

    from_space = best_checkpoint(se.exp.name, tmp_path)
    plan = plan_export(se.exp)
    out = write_report(se.exp, tmp_path / "report")
    info = json.loads((out / "best" / "trial.json").read_text())
    assert from_space == plan.checkpoint == Path(info["checkpoint"]) == found.checkpoint
    assert plan.best_step == info["step"] == found.step == info["checkpoint_step"]
    assert info["value"] == pytest.approx(found.value) == pytest.approx(plan.value)


def test_best_checkpoint_is_the_evaluated_one_not_the_latest(tmp_path: Path) -> None:
    """Without a best/ copy, the old `best:EXPERIMENT` paired the best eval's score with the
    trial's latest checkpoint; the rule takes the checkpoint evaluated at the best step."""
    exp = tmp_path / "earlier"
    trial = exp / "trials" / "t1"
    (trial / "eval").mkdir(parents=True)
    (exp / "experiment.json").write_text(json.dumps({"metrics": [MAP], "modes": ["max"]}))
    write_events(trial / "eval", {20: {MAP: 0.5}, 30: {MAP: 0.3}}, start_wall=1.0,
                 seconds_per_step=1.0)
    rows = [{"checkpoint": "ckpt-2", "step": 20}, {"checkpoint": "ckpt-3", "step": 30}]
    (trial / "eval" / "evaluated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for n in (2, 3):
        (trial / f"ckpt-{n}.index").write_text("")
    assert best_checkpoint("earlier", tmp_path) == trial / "ckpt-2"
    (trial / "ckpt-2.index").unlink()  # rotated away: the nearest kept one stands in, flagged
    found = best.experiment_best(Experiment(exp))
    assert found.checkpoint == trial / "ckpt-3" and not found.exact


def test_nan_and_ties(tmp_path: Path) -> None:
    assert best.better(0.5, None, "max") and not best.better(float("nan"), None, "max")
    assert not best.better(0.5, 0.5, "max")  # a tie keeps the earlier one
    assert best.better(0.1, 0.5, "min") and not best.better(float("inf"), 0.5, "min")


def test_failed_trials_are_never_best(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=6)
    failed = [n for n, t in se.truth.items() if t.state == "FAILED"]
    assert failed
    for name in failed:  # give the failed trial the best value there could be
        path = se.exp.trial(name).path / "best" / "best.json"
        if path.exists():
            data = json.loads(path.read_text())
            data["value"] = 1e9
            path.write_text(json.dumps(data))
    found = best.experiment_best(se.exp)
    assert found is not None and found.trial.name not in failed
