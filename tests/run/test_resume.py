"""`sweep resume` after the driver was killed with SIGKILL (stand-in worker: it is about our
processes, Ray and Optuna, not TensorFlow). Ctrl-C and SIGTERM are test_interrupt.py's. That a real
OD API train job continues from its checkpoint is the real sweep's kill -9 retry
(tests/test_e2e.py): the same restart, without a second real sweep's 10 minutes here.

kill -9: `sweep run` (3 trials, one at a time) is killed once the first trial is COMPLETED and
the second is mid-training with a checkpoint; then `sweep resume` finishes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest

from sweep.core import errors
from sweep.core.experiment import COMPLETED, RUNNING, Experiment, TrialDir
from sweep.odapi import metrics
from tests.conftest import REPO, make_workspace, run_cli
from tests.run.records import assert_records_agree

NUM_STEPS = 60  # checkpoints every 20 steps
SPACE = f"""\
description: resume test (tiny SSD MobileNet, {NUM_STEPS} steps)
parameters:
  num_steps: {NUM_STEPS}
  l2_weight: {{loguniform: [1.0e-5, 1.0e-2]}}
  learning_rate:
    choice:
      cosine_decay_learning_rate:
        cosine_decay_learning_rate.learning_rate_base: {{loguniform: [1.0e-8, 1.0e+6]}}
        cosine_decay_learning_rate.total_steps: {{derived: num_steps}}
        cosine_decay_learning_rate.warmup_learning_rate:
          loguniform: [1.0e-9, cosine_decay_learning_rate.learning_rate_base]
        cosine_decay_learning_rate.warmup_steps: {{int: [0, 5]}}
points:
  - base
  - learning_rate: cosine_decay_learning_rate
    cosine_decay_learning_rate.learning_rate_base: 0.01
    cosine_decay_learning_rate.warmup_learning_rate: 0.001
    cosine_decay_learning_rate.warmup_steps: 0
    l2_weight: 0.0004
"""
# The stand-in worker (tests/fake_worker.py): 10 steps per FAKE_STEP_SLEEP s, so a trial trains
# 60 steps in 18 s: longer than Ray's experiment-state save interval (10 s), as a real trial is.
FAKE = {"SWEEP_WORKER_MODULE": "tests.fake_worker", "FAKE_MODE": "slow", "FAKE_STEP_SLEEP": "3"}


def _ckpt_numbers(t: TrialDir) -> list[int]:
    return [n for n, _ in t.checkpoints()]


def _snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and mtime (ns): "untouched" means equal."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


def _file_steps(path: Path) -> list[int]:
    """The steps of one event file's summaries (a retried job writes a new file)."""
    from tensorboard.compat.proto import event_pb2

    from sweep.data.tfrecord import read_records

    steps = []
    for payload in read_records(path, verify="none", torn_tail_ok=True):
        e = event_pb2.Event()
        e.ParseFromString(payload)
        if e.HasField("summary") and e.summary.value:
            steps.append(int(e.step))
    return steps


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.time() + timeout
    alive = list(pids)
    while alive and time.time() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(1)
    return alive


def _kill_tree(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _ray_saved(exp: Experiment) -> dict[str, str]:
    """Ray Tune's saved state of each trial (its newest experiment_state file): what a resumed
    run restores."""
    import json

    files = sorted(exp.ray_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    try:
        data = json.loads(files[-1].read_text()) if files else {}
    except (OSError, ValueError):
        return {}  # being rewritten
    return {t["trial_id"]: t["status"] for t in (json.loads(row[0])
                                               for row in data.get("trial_data", []))}


def _ckpt_step(t: TrialDir, number: int) -> int:
    """The step of the stand-in's checkpoint ``number`` (its index file holds the step)."""
    return int((t.path / f"ckpt-{number}.index").read_text())


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t_start = time.time()
    for k, v in FAKE.items():  # the driver, its Ray and `sweep resume` take this environment
        monkeypatch.setenv(k, v)
    pipeline = make_workspace(tmp_path, n_train=8, n_eval=4)
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 - the child writes it
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "run", "--space", str(space), "--pipeline",
         str(pipeline), "--name", "rs", "--num-trials", "3", "--max-concurrent", "1",
         "--eval-every", "20", "--scheduler", "fifo", "--no-dashboard", "--no-report"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    exp = Experiment(tmp_path / "experiments" / "rs")
    descendants: list[int] = []
    try:
        # 1. Wait for: one trial COMPLETED, another RUNNING with a checkpoint (the stand-in's
        #    ckpt-k is step 20k) short of its last one, both as such in Ray's saved state (Ray
        #    saves it every 10 s: a trial started since is lost with the driver, see
        #    tune_backend.reconcile; one ended since is reported again, TrialRunner.start).
        done = interrupted = None
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None:
            trials = exp.trials()
            done = next((t for t in trials if t.status().get("state") == COMPLETED), None)
            interrupted = next(
                (t for t in trials if t.status().get("state") == RUNNING
                 and _ckpt_numbers(t) and max(_ckpt_numbers(t)) < NUM_STEPS // 20), None)
            saved = _ray_saved(exp)
            if done and interrupted and saved.get(done.name) == "TERMINATED" \
                    and saved.get(interrupted.name) == "RUNNING":
                break
            time.sleep(0.1)
        assert done and interrupted, (driver.poll(), (tmp_path / "run.log").read_text()[-3000:])
        descendants = [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
        os.kill(driver.pid, signal.SIGKILL)  # kill -9: no cleanup, no final state save
        driver.wait(timeout=30)
        killed_at = _ckpt_step(interrupted, max(_ckpt_numbers(interrupted)))
        st = interrupted.status()
        done_before = _snapshot(done.path)

        # 2. The orphaned train/eval jobs watch their parent (the Ray actor) and end by
        #    themselves; the actor ends with the embedded Ray, which ends with its driver.
        jobs = [int(st[k]) for k in ("train_pid", "eval_pid") if st.get(k)]
        assert len(jobs) == 2, st
        assert _wait_gone(jobs + [int(st["pid"])], 60) == [], "train/eval/actor outlived the driver"
        lingering = _wait_gone(descendants, 10)
        _kill_tree(lingering)  # Ray's own processes, if any outlived their driver

        # 3. Resume.
        res = run_cli(["resume", "rs", "--no-dashboard", "--no-report"], tmp_path, timeout=600)
        (tmp_path / "resume.log").write_text(res.stdout + res.stderr)
        assert res.returncode == errors.EXIT_OK, (res.stdout + res.stderr)[-4000:]
        print(f"lingering Ray processes after kill: {lingering}")
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
        _kill_tree([p for p in descendants if psutil.pid_exists(p)])

    out = res.stdout + res.stderr
    assert "3/3 trials done" in out and "sweep rs finished: every trial completed" in out, \
        out[-3000:]

    # Finished trials are untouched: not re-run, same files, same eval events.
    assert _snapshot(done.path) == done_before
    assert done.status()["attempts"] == 1

    # The interrupted trial continued from its checkpoint, in the same folder.
    st = interrupted.status()
    assert st["state"] == COMPLETED, st
    assert st["attempts"] == 2, st
    files = metrics.event_files(interrupted.path / "train")
    assert len(files) == 2, files  # one per attempt
    first, second = (_file_steps(f) for f in files)
    assert min(first) < 20 and min(second) > killed_at > 0, (killed_at, first, second)
    assert max(second) == NUM_STEPS
    m = metrics.read_trial(interrupted.path)
    assert max(m.eval) == NUM_STEPS
    steps = [r["step"] for r in interrupted.evaluated()]
    assert steps == sorted(set(steps)), steps  # nothing evaluated twice
    assert interrupted.train_log.read_text().count("start train") == 2

    # Exactly num_trials trials, each once: folders, Ray trials and Optuna trials agree.
    trials = exp.trials()
    assert len(trials) == 3, [t.name for t in trials]
    assert sorted(p.name for p in exp.ray_dir.iterdir() if p.is_dir()) == sorted(
        t.name for t in trials)
    params = [tuple(sorted(t.params().items())) for t in trials]
    assert len(set(params)) == 3
    assert {t.status()["state"] for t in trials} == {COMPLETED}

    s = exp.settings()
    study = optuna.load_study(study_name=s["study_name"], storage=exp.storage_url())
    assert len(study.trials) == 3, [(t.number, t.state, t.user_attrs) for t in study.trials]
    by_ray = {t.user_attrs.get("ray_trial_id"): t for t in study.trials}
    assert set(by_ray) == {t.name for t in trials}
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    assert by_ray[interrupted.name].value == pytest.approx(m.eval[NUM_STEPS][metrics.MAP])

    # The killed driver's exit path (issue 26, item 1): after the resume, folders, study,
    # status, report and the resume's closing line agree.
    agreed = assert_records_agree(tmp_path, "rs", out, res.returncode)
    assert "finished" in agreed["status"]
    print(f"test_resume_after_kill_9 wall time {time.time() - t_start:.0f}s")


def test_resume_without_ray_state_refuses_before_starting_ray(tmp_path: Path) -> None:
    """Killed before Ray saved anything: resuming would sample the known points again into the
    same study, so it stops with the fix instead (and starts no Ray)."""
    import ray

    from sweep.core.errors import ConfigError
    from sweep.run.settings import SweepSettings
    from sweep.run.tune_backend import preflight

    settings = SweepSettings(name="early", space=tmp_path / "s.yaml", pipeline=tmp_path / "p",
                             storage=tmp_path)
    (tmp_path / "early" / "ray").mkdir(parents=True)
    with pytest.raises(ConfigError, match="--overwrite"):
        preflight(settings, None, 40, resume=True)
    assert not ray.is_initialized()
