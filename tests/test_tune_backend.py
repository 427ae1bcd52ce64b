"""The Ray Tune + Optuna backend with real Ray and a real Optuna study, but a stand-in for the
OD API jobs (tests/fake_worker.py) so each sweep takes seconds of training, not minutes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import optuna
import pytest

from sweep import metrics
from sweep.experiment import COMPLETED, FAILED, Experiment
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

SPACE = """\
parameters:
  num_steps: 40
  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}
  focal_loss.gamma: {stepped: [1.0, 3.0, 0.5]}
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.conftest import make_workspace

    root = tmp_path_factory.mktemp("fakeray")
    pipeline = make_workspace(root, n_train=8, n_eval=4)
    space = root / "space.yaml"
    space.write_text(SPACE)
    return root, pipeline


def _run(root: Path, pipeline: Path, name: str, mode: str, *extra: str):  # noqa: ANN202
    os.environ["SWEEP_WORKER_MODULE"] = "tests.fake_worker"
    os.environ["FAKE_MODE"] = mode
    try:
        return run_cli(["run", "--space", str(root / "space.yaml"), "--pipeline", str(pipeline),
                        "--name", name, "--no-dashboard", "--eval-every", "20", "--no-report",
                        *extra], root, timeout=600)
    finally:
        del os.environ["SWEEP_WORKER_MODULE"], os.environ["FAKE_MODE"]


def test_multi_objective_study_and_pareto_front(base: tuple[Path, Path]) -> None:
    root, pipeline = base
    out = _run(root, pipeline, "mo", "ok", "--metric", "total_loss", "--metric", "mAP",
               "--sampler", "nsga2", "--num-trials", "4", "--scheduler", "fifo")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = Experiment(root / "experiments" / "mo")
    s = exp.settings()
    study = optuna.load_study(study_name=s["study_name"], storage=s["storage_url"])
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE,
                                optuna.study.StudyDirection.MAXIMIZE]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    by_id = {t.user_attrs["ray_trial_id"]: t for t in done}
    for trial in exp.trials():
        assert trial.status()["state"] == COMPLETED
        m = metrics.read_trial(trial.path)
        loss, mAP = by_id[trial.name].values
        assert math.isclose(loss, m.train[40][metrics.TOTAL_LOSS], rel_tol=1e-6)
        assert math.isclose(mAP, m.eval[40][metrics.MAP], rel_tol=1e-6)
    assert study.best_trials  # the Pareto front the report draws


def test_consecutive_failures_stop_the_sweep(base: tuple[Path, Path]) -> None:
    root, pipeline = base
    out = _run(root, pipeline, "allnan", "nan", "--num-trials", "6", "--max-concurrent", "1",
               "--max-consecutive-failures", "2", "--scheduler", "median")
    assert out.returncode == 3, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 trials failed in a row" in out.stderr
    trials = Experiment(root / "experiments" / "allnan").trials()
    assert 2 <= len(trials) < 6
    assert all(t.status()["state"] == FAILED and t.status()["reason"] == "diverged"
               for t in trials[:2])
