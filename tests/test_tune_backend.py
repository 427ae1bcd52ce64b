"""The Ray Tune + Optuna backend with real Ray and a real Optuna study, but a stand-in for the
OD API jobs (tests/fake_worker.py) so each sweep takes seconds of training, not minutes."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest

from sweep import errors, metrics
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


def _study(exp: Experiment) -> optuna.Study:
    s = exp.settings()
    return optuna.load_study(study_name=s["study_name"], storage=s["storage_url"])


def test_stalled_trials_fail_with_their_reason_everywhere(base: tuple[Path, Path]) -> None:
    """A hung training job (no summary, no checkpoint) is `stalled` within seconds with a low
    --stall-minutes: FAILED in status.json, FAIL with the reason in the study, in `sweep
    status`, exit code 1 and a last line that says where to look."""
    root, pipeline = base
    out = _run(root, pipeline, "hung", "hang", "--num-trials", "2", "--stall-minutes", "0.03",
               "--max-failures", "0", "--max-consecutive-failures", "5", "--scheduler", "fifo")
    assert out.returncode == errors.EXIT_TRIALS_FAILED, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 of 2 trials failed (stalled 2)" in out.stderr.strip().splitlines()[-1]
    exp = Experiment(root / "experiments" / "hung")
    assert [t.status()["reason"] for t in exp.trials()] == [errors.STALLED] * 2
    study = _study(exp)
    assert [(t.state, t.user_attrs.get("failure")) for t in study.trials] == [
        (optuna.trial.TrialState.FAIL, errors.STALLED)] * 2
    status = run_cli(["status", "hung"], root, timeout=120)
    assert status.stdout.count("stalled") == 2


def test_a_lost_ray_actor_fails_the_trial_with_its_reason(base: tuple[Path, Path]) -> None:
    """kill -9 of a trial's Ray actor with --max-failures 0: Ray gives up on it; the trial is
    FAILED "actor died" in its folder and the study (never left RUNNING or PENDING), and it
    counts as a failed trial in the exit code."""
    root, pipeline = base
    trials = root / "experiments" / "lost" / "trials"
    stop, killed = threading.Event(), {}

    def kill_first_actor() -> None:
        while not stop.is_set():
            for st in trials.glob("*/status.json"):
                try:
                    pid = json.loads(st.read_text()).get("pid")
                except ValueError:
                    continue
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed[st.parent.name] = pid
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_actor, daemon=True)
    killer.start()
    os.environ["FAKE_STEP_SLEEP"] = "0.3"
    try:
        out = _run(root, pipeline, "lost", "slow", "--num-trials", "2", "--max-concurrent", "1",
                   "--max-failures", "0", "--scheduler", "fifo")
    finally:
        stop.set()
        del os.environ["FAKE_STEP_SLEEP"]
    assert killed, out.stdout[-2000:]
    assert out.returncode == errors.EXIT_TRIALS_FAILED, out.stdout[-3000:] + out.stderr[-3000:]
    exp = Experiment(root / "experiments" / "lost")
    states = {t.name: (t.status()["state"], t.status().get("reason")) for t in exp.trials()}
    (victim,) = killed
    assert states.pop(victim) == (FAILED, errors.ACTOR_DIED)
    assert [s for s, _ in states.values()] == [COMPLETED]
    by_ray = {t.user_attrs["ray_trial_id"]: t for t in _study(exp).trials}
    assert by_ray[victim].state == optuna.trial.TrialState.FAIL
    assert by_ray[victim].user_attrs["failure"] == errors.ACTOR_DIED
