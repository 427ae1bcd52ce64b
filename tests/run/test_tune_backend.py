"""The Ray Tune + Optuna backend with real Ray and a real Optuna study, but a stand-in for the
OD API jobs (tests/fake_worker.py) so each sweep takes seconds of training, not minutes."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from sweep.core import errors
from sweep.core.experiment import COMPLETED, FAILED, STOPPED, Experiment
from sweep.odapi import metrics
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

SPACE = """\
parameters:
  num_steps: 40
  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}
  focal_loss.gamma: {stepped: [1.0, 3.0, 0.5]}
"""


REUSE_POINTS = ("points:\n  - {l2_weight: 1.0e-5, focal_loss.gamma: 2.0}\n"
                "  - {l2_weight: 1.0e-2, focal_loss.gamma: 2.0}\n"
                "  - {l2_weight: 2.0e-5, focal_loss.gamma: 2.0}\n")
# name: (stand-in mode, its other settings, the sweep's options)
SWEEPS = {
    "mo": ("ok", {}, ["--metric", "total_loss", "--metric", "mAP", "--sampler", "nsga2",
                      "--num-trials", "4", "--scheduler", "fifo"]),
    "allnan": ("nan", {}, ["--num-trials", "6", "--max-concurrent", "1",
                           "--max-consecutive-failures", "2", "--scheduler", "median"]),
    "hung": ("hang", {}, ["--num-trials", "2", "--stall-minutes", "0.03", "--max-failures", "0",
                          "--max-consecutive-failures", "5", "--scheduler", "fifo"]),
    "lost": ("slow", {"FAKE_STEP_SLEEP": "0.3"}, ["--num-trials", "2", "--max-concurrent", "1",
                                                  "--max-failures", "0", "--scheduler", "fifo"]),
    "reuse": ("ok", {}, ["--space", "reuse_space.yaml", "--num-trials", "3",
                         "--max-concurrent", "1", "--scheduler", "asha"]),
}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The module's five stand-in sweeps, side by side on one Ray (a Ray start is ~15 s of
    both cores here; the stand-in's trials mostly wait). Each sweep's stand-in settings reach
    its trials through the sweep's own Ray job (SWEEP_JOB_ENV), not through Ray's start."""
    from tests.conftest import finish_cli, local_ray, make_workspace, start_cli

    root = tmp_path_factory.mktemp("fakeray")
    pipeline = make_workspace(root, n_train=8, n_eval=4)
    (root / "space.yaml").write_text(SPACE)
    (root / "reuse_space.yaml").write_text(SPACE + REUSE_POINTS)
    stop, killed = threading.Event(), {}
    try:
        with local_ray(8, {"SWEEP_WORKER_MODULE": "tests.fake_worker",
                           "SWEEP_JOB_ENV": "FAKE_*"}) as address:
            threading.Thread(target=_kill_first_actor,
                             args=(root / "experiments" / "lost" / "trials", stop, killed),
                             daemon=True).start()
            procs = {name: start_cli(
                ["run", "--pipeline", str(pipeline), "--name", name, "--no-dashboard",
                 "--eval-every", "20", "--no-report", "--address", address,
                 "--space", str(root / "space.yaml"), *options],  # a later --space wins
                root, {"FAKE_MODE": mode, **extra_env})
                for name, (mode, extra_env, options) in SWEEPS.items()}
            out = {name: finish_cli(proc) for name, proc in procs.items()}
            stop.set()
            yield {"root": root, "out": out, "killed": killed}
    finally:
        stop.set()


def _kill_first_actor(trials: Path, stop: threading.Event, killed: dict) -> None:
    """kill -9 the first trial's Ray actor as soon as its folder names it."""
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


def test_multi_objective_study_and_pareto_front(sweeps: dict[str, Any]) -> None:
    root, out = sweeps["root"], sweeps["out"]["mo"]
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


def test_consecutive_failures_stop_the_sweep(sweeps: dict[str, Any]) -> None:
    root, out = sweeps["root"], sweeps["out"]["allnan"]
    assert out.returncode == 3, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 trials failed in a row" in out.stderr
    trials = Experiment(root / "experiments" / "allnan").trials()
    assert 2 <= len(trials) < 6
    assert all(t.status()["state"] == FAILED and t.status()["reason"] == "diverged"
               for t in trials[:2])


def _study(exp: Experiment) -> optuna.Study:
    s = exp.settings()
    return optuna.load_study(study_name=s["study_name"], storage=s["storage_url"])


def test_stalled_trials_fail_with_their_reason_everywhere(sweeps: dict[str, Any]) -> None:
    """A hung training job (no summary, no checkpoint) is `stalled` within seconds with a low
    --stall-minutes: FAILED in status.json, FAIL with the reason in the study, in `sweep
    status`, exit code 1 and a last line that says where to look."""
    root, out = sweeps["root"], sweeps["out"]["hung"]
    assert out.returncode == errors.EXIT_TRIALS_FAILED, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 of 2 trials failed (stalled 2)" in out.stderr.strip().splitlines()[-1]
    exp = Experiment(root / "experiments" / "hung")
    assert [t.status()["reason"] for t in exp.trials()] == [errors.STALLED] * 2
    study = _study(exp)
    assert [(t.state, t.user_attrs.get("failure")) for t in study.trials] == [
        (optuna.trial.TrialState.FAIL, errors.STALLED)] * 2
    status = run_cli(["status", "hung"], root, timeout=120)
    assert status.stdout.count("stalled") == 2


def test_a_lost_ray_actor_fails_the_trial_with_its_reason(sweeps: dict[str, Any]) -> None:
    """kill -9 of a trial's Ray actor with --max-failures 0: Ray gives up on it; the trial is
    FAILED "actor died" in its folder and the study (never left RUNNING or PENDING), and it
    counts as a failed trial in the exit code."""
    root, out, killed = sweeps["root"], sweeps["out"]["lost"], sweeps["killed"]
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


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, the reused actor, reaps it on its own time).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def test_trials_reuse_one_actor_and_an_early_stopped_one_is_ended_first(
        sweeps: dict[str, Any]) -> None:
    """With one trial at a time, all three trials run in one Ray actor (reset_config, not a
    new actor process per trial). The second, worse at the step-20 rung, is stopped by ASHA:
    Ray keeps its actor for the third without stopping it, so reset_config must end it first:
    STOPPED with its processes gone before the third starts, PRUNED in the study."""
    root, out = sweeps["root"], sweeps["out"]["reuse"]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = Experiment(root / "experiments" / "reuse")
    by_l2 = {t.params()["l2_weight"]: t.status() for t in exp.trials()}
    first, stopped, third = by_l2[1e-5], by_l2[1e-2], by_l2[2e-5]
    assert (first["state"], stopped["state"], third["state"]) == (COMPLETED, STOPPED, COMPLETED)
    assert first["pid"] == stopped["pid"] == third["pid"]  # one actor for all three
    assert stopped["trained_steps"] == 20 and stopped["ended_at"] <= third["started_at"]
    assert not _alive(stopped["train_pid"]) and not _alive(stopped["eval_pid"])
    states = {t.user_attrs["ray_trial_id"]: t.state for t in _study(exp).trials}
    stopped_name = next(t.name for t in exp.trials() if t.params()["l2_weight"] == 1e-2)
    assert states[stopped_name] == optuna.trial.TrialState.PRUNED
    # The trial folder is the state: no Ray checkpoint per result outside PBT (each would make
    # Ray rewrite the whole experiment state, O(trials) after every result).
    assert exp.ray_dir.is_dir() and not list(exp.ray_dir.rglob("checkpoint_0*"))


def test_job_env_forwards_the_named_variables_and_prefixes_only() -> None:
    from sweep.run.tune_backend import job_env

    environ = {"SWEEP_JOB_ENV": "TF_CPP_MIN_LOG_LEVEL, WANDB_*", "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CPP_VMODULE": "x", "WANDB_MODE": "offline", "WANDB_DIR": "/w", "HOME": "/r"}
    assert job_env(environ) == {"TF_CPP_MIN_LOG_LEVEL": "2", "WANDB_MODE": "offline",
                                "WANDB_DIR": "/w"}
    assert job_env({"HOME": "/r"}) == {} and job_env({"SWEEP_JOB_ENV": "", "A": "1"}) == {}
