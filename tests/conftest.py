"""Shared fixtures. The expensive one, ``real_sweep``, runs one real sweep per test session
(real OD API training and eval, real local Ray, real Optuna SQLite study) that many tests
inspect: the report, status, GPU placement, divergence, early stopping.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# sweep lets the OD API's protobuf modules load on protobuf 4 (sweep/core/protos.py); test
# modules import them at their top (alone, `pytest tests/data/test_dataset.py` failed:
# "Descriptors cannot be created directly").
import sweep  # noqa: F401

REPO = Path(__file__).resolve().parent.parent

# Ray runs its workers (a trial's actor and the jobs it starts) at niceness 15. Beside a real TF
# test on the other xdist worker (niceness 0, 2 cores), a stand-in sweep's trial actors then
# took 3 min to import and start (seen: ray's core-worker log, "Adjusted worker niceness to 15"),
# and windows the tests wait for closed. In tests every Ray worker runs at the tests' priority.
os.environ.setdefault("RAY_worker_niceness", "0")

# The e2e space: three known points, so what each trial does is certain.
#  1. the base config's own values (the report's baseline);
#  2. an absurd learning rate that makes the loss NaN within the first 10 steps ("diverged");
#  3. an L2 weight 25x the base's: its regularization loss alone is larger than the base's
#     total loss, so ASHA (on total_loss) stops it at the step-20 rung, where the baseline has
#     recorded a lower loss by then (a tiny learning rate is not enough: one batch's loss is
#     noisy at step 20).
# The trials are told apart by their l2_weight.
E2E_SPACE = """\
description: e2e test space (tiny SSD MobileNet, 40 steps)
parameters:
  num_steps: 40
  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}
  learning_rate:
    choice:
      cosine_decay_learning_rate:
        cosine_decay_learning_rate.learning_rate_base: {loguniform: [1.0e-8, 1.0e+6]}
        cosine_decay_learning_rate.total_steps: {derived: num_steps}
        cosine_decay_learning_rate.warmup_learning_rate:
          loguniform: [1.0e-9, cosine_decay_learning_rate.learning_rate_base]
        cosine_decay_learning_rate.warmup_steps: {int: [0, 5]}
points:
  - base
  - learning_rate: cosine_decay_learning_rate
    cosine_decay_learning_rate.learning_rate_base: 1.0e+6
    cosine_decay_learning_rate.warmup_learning_rate: 1.0e+5
    cosine_decay_learning_rate.warmup_steps: 0
    l2_weight: 0.0005
  - learning_rate: cosine_decay_learning_rate
    cosine_decay_learning_rate.learning_rate_base: 0.02
    cosine_decay_learning_rate.warmup_learning_rate: 0.005
    cosine_decay_learning_rate.warmup_steps: 5
    l2_weight: 0.01
"""


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For `pytest -n N` (pytest-xdist, `--dist loadgroup`, as ./run.sh test runs the suite):
    a module's tests stay on one worker, so its module-scoped fixture (one stand-in sweep that
    many checks read) runs once. The real TensorFlow work (the session's real sweep and the
    tests marked `tf`) is one group: it is CPU-bound, so two of them at once on this 2-core
    machine gain nothing and overload it; one worker runs them one after another while the
    other runs the stand-in and fast tests, which mostly wait on processes. Slow groups are
    handed out first, the real TensorFlow group before all, so no long test starts last.

    Two real TensorFlow groups on four workers (both cores training, two workers on the
    stand-in tests) was tried in a full run (2026-12-02): load ~12 on 2 cores, the real sweep's
    Ray failed to start ("GCS has become overloaded"), 17 failures, 60 min. One group it is."""

    def group(item: pytest.Item) -> str:
        if "real_sweep" in getattr(item, "fixturenames", ()) or item.get_closest_marker("tf"):
            return REAL_TF
        return item.nodeid.split("::")[0]

    slow_groups = {group(i) for i in items if i.get_closest_marker("slow")}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))
    order = {g: n for n, g in enumerate(dict.fromkeys(group(i) for i in items))}
    items.sort(key=lambda i: (group(i) != REAL_TF, group(i) not in slow_groups,
                              order[group(i)]))


REAL_TF = "real_tf"  # the serial group of real TensorFlow tests


@dataclass(frozen=True)
class SweepRun:
    cwd: Path
    experiment: Path
    reports: Path
    pipeline: Path
    space: Path
    returncode: int
    output: str
    wall_s: float
    killed: dict  # the base trial's train process the fixture killed: pid, trial, at


def start_local_ray(num_cpus: int) -> str:
    """An in-process local Ray for a module's sweeps (they run in this process, or join it with
    --address), the worker environment taken from os.environ as it is now; returns its GCS
    address. On a loaded machine a start can fail ("timed out during startup", "RPC error:
    Deadline Exceeded"): what it left running is ended and it starts again, as init_ray does."""
    import psutil
    import ray

    for attempt in range(6):
        before = {c.pid for c in psutil.Process().children()}
        try:
            ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                           log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
            return ctx.address_info["gcs_address"]
        except Exception:  # noqa: BLE001 - Ray raises bare Exceptions and RuntimeErrors here
            ray.shutdown()
            # A failed start leaves its GCS, monitor and dashboard running: end those (ours).
            for child in psutil.Process().children():
                if child.pid not in before:
                    child.kill()
            if attempt == 5:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def local_ray(num_cpus: int, env: dict[str, str]) -> Iterator[str]:
    """``start_local_ray`` with ``env`` in os.environ (Ray's workers, and the trials' jobs they
    start, take the environment of Ray's start); yields its address. On leaving, Ray is shut
    down and os.environ is as it was."""
    import ray

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield start_local_ray(num_cpus)
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def make_workspace(root: Path, *, n_train: int = 64, n_eval: int = 16) -> Path:
    """Synthetic data + tutorial layout under ``root``; returns the base pipeline.config."""
    from sweep.data.dataset import make_dataset
    from sweep.odapi.workspace import init_workspace

    ws = root / "workspace" / "training_demo"
    info = make_dataset(ws / "annotations", n_train=n_train, n_eval=n_eval)
    return init_workspace(ws, dataset=info)


def _cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(extra or {})}


def run_cli(args: list[str], cwd: Path, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep.cli", *args], cwd=cwd, env=_cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None,
              **popen: object) -> subprocess.Popen:
    """``sweep ARGS`` started, not waited for (sweeps side by side); output piped unless
    ``popen`` says where; ``env`` on top of this process's environment."""
    popen = popen or {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen([sys.executable, "-m", "sweep.cli", *args], cwd=cwd,
                            env=_cli_env(env), text=True, **popen)


def finish_cli(proc: subprocess.Popen, timeout: float = 900) -> subprocess.CompletedProcess:
    """Wait for a ``start_cli`` process with piped output; returns it as ``run_cli`` would."""
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_train_after_first_eval_checkpoint(trials_dir: Path, l2: float, stop: threading.Event,
                                           killed: dict) -> None:
    """Kill -9 the train process of the trial with ``l2_weight == l2`` as soon as its step-20
    checkpoint is the latest (a real 'process killed' for the retry policy to handle)."""
    while not stop.is_set():
        for t in trials_dir.glob("*/params.json"):
            try:
                if json.loads(t.read_text()).get("l2_weight") != l2:
                    continue
                state = (t.parent / "checkpoint").read_text()
                status = json.loads((t.parent / "status.json").read_text())
            except (OSError, ValueError):
                continue
            if '"ckpt-2"' in state and status.get("train_pid"):
                try:
                    os.kill(status["train_pid"], signal.SIGKILL)
                    killed.update(pid=status["train_pid"], trial=t.parent.name, at=time.time())
                except ProcessLookupError:
                    killed.update(missed=True)
                return
        time.sleep(0.1)


@pytest.fixture(scope="session")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> SweepRun:
    cwd = tmp_path_factory.mktemp("e2e")
    pipeline = make_workspace(cwd)
    space = cwd / "e2e_space.yaml"
    space.write_text(E2E_SPACE)
    t0 = time.time()
    stop, killed = threading.Event(), {}
    killer = threading.Thread(target=kill_train_after_first_eval_checkpoint,
                              args=(cwd / "experiments" / "e2e" / "trials", 0.0004, stop, killed),
                              daemon=True)
    killer.start()
    proc = run_cli(["run", "--space", str(space), "--pipeline", str(pipeline), "--name", "e2e",
                    "--num-trials", "3", "--max-concurrent", "2", "--eval-every", "20",
                    "--metric", "total_loss", "--scheduler", "asha",
                    "--declare-gpus", "2", "--gpus-per-trial", "1",
                    "--max-consecutive-failures", "5", "--no-dashboard"], cwd)
    run = SweepRun(cwd=cwd, experiment=cwd / "experiments" / "e2e", reports=cwd / "reports" / "e2e",
                   pipeline=pipeline, space=space, returncode=proc.returncode,
                   output=proc.stdout + proc.stderr, wall_s=time.time() - t0, killed=killed)
    stop.set()
    (cwd / "sweep-run.log").write_text(run.output)
    return run
