"""`sweep run --address` on a real two-node Ray cluster on this machine (slow).

One sweep proves both claims: two trials run at once, one per node (each node has 1 CPU, each
trial asks for 1); then the second node is killed (its raylet and everything under it, as a
lost machine would be) while its trial trains, and the sweep still completes: Ray reschedules
that trial on the head node, where it resumes from its checkpoint in the shared experiment
folder.

The cluster, Ray Tune, Optuna and the runner are real; the trials' jobs are the stand-in
worker's (`tests/fake_worker.py`): what is tested is where Ray places and reschedules trials
and that the runner continues from the folder, which is not TensorFlow's work. The real OD API
resume from a checkpoint is tested in tests/run/test_resume.py and tests/test_e2e.py.

Each node gets its own --temp-dir, so the cluster's address file is not the default
/tmp/ray/ray_current_cluster that a plain ray.init() elsewhere on the machine would join, and
nodes are stopped by their process ids, never with `ray stop` (that stops every Ray here).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from sweep.core.experiment import COMPLETED, RUNNING, Experiment, TrialDir
from sweep.odapi import metrics
from tests.conftest import REPO, make_workspace

pytestmark = pytest.mark.slow

NUM_STEPS = 60
# The stand-in's pace: 1.5 s per iteration of 10 steps (60 steps at --eval-every 20 run as 6
# iterations), so each trial runs ~9 s: the trial on the second node must still be training
# when a Ray worker there has started (seconds on a loaded machine) and between its checkpoints
# 20 and 50, where the node is lost. At 0.1 s a trial ran in under a second, the head's trial
# finished before the second node's started, and the window was missed (CI, 2026-12-01).
STAND_IN = {"SWEEP_WORKER_MODULE": "tests.fake_worker", "FAKE_MODE": "slow",
            "FAKE_STEP_SLEEP": "1.5"}
SPACE = f"""\
description: cluster test (stand-in jobs, {NUM_STEPS} steps)
parameters:
  num_steps: {NUM_STEPS}
  l2_weight: {{loguniform: [1.0e-5, 1.0e-2]}}
points:
  - l2_weight: 0.0004
  - l2_weight: 0.0001
"""
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    address: str
    dashboard: str
    env: dict[str, str]
    head_dir: Path
    worker_dir: Path
    head_id: str = ""
    worker_id: str = ""


def _processes_of(temp_dir: Path) -> list[psutil.Process]:
    """A node's processes: those naming its temp dir (raylet, agents...) and their children
    (the Ray workers, which run our trials, and the trials' OD API jobs)."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in a for a in (p.info["cmdline"] or [])):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
        except psutil.Error:
            continue
    return list(found.values())


def _kill_node(temp_dir: Path) -> list[int]:
    procs = _processes_of(temp_dir)
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=30)
    return [p.pid for p in procs]


def _ray_start(args: list[str], env: dict[str, str], temp_dir: Path) -> None:
    """`ray start`; on a loaded machine a node can time out during startup (its raylet gives
    up on slow agents), as in sweep.run.tune_backend.init_ray: end what it left, start again."""
    for attempt in range(3):
        out = subprocess.run([RAY, "start", *args], env=env, capture_output=True, text=True,
                             timeout=300)
        if out.returncode == 0:
            return
        if "timed out during startup" not in out.stderr or attempt == 2:
            break
        _kill_node(temp_dir)
    raise AssertionError((out.stdout + out.stderr)[-3000:])


@contextlib.contextmanager
def local_cluster(*, pythonpath: bool = True,
                  extra_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A head and a second node on 127.0.0.1, 1 CPU each, with the dashboard (and so the Ray
    Jobs API); stopped by their processes when the block ends. ``pythonpath``: the nodes' Ray
    workers import this checkout (as an installed package would be); without it, only what a
    job's working directory brings. ``extra_env``: for every process of the nodes (e.g. the
    stand-in worker's selection)."""
    port, dash = _free_port(), _free_port()
    # Token authentication for every process of this cluster (head, worker, the sweep's driver),
    # with a token of its own: no dependence on ~/.ray/auth_token.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0", **(extra_env or {})}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = str(REPO)
    # Short paths: Ray's Unix sockets live under the temp dir (at most 107 bytes).
    short = Path(tempfile.mkdtemp(prefix="sweep-rc-", dir="/tmp"))
    c = Cluster(address=f"127.0.0.1:{port}", dashboard=f"http://127.0.0.1:{dash}", env=env,
                head_dir=short / "h", worker_dir=short / "w")
    try:
        # Each node's dashboard agent on a port of its own: the default (52365) is taken when
        # another Ray runs on this machine (a sweep's local Ray in the other xdist worker), and
        # then the Jobs API answers "No available agent to submit job" for good.
        _ray_start(["--head", f"--port={port}", "--num-cpus=1", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash}", "--include-dashboard=true",
                    f"--dashboard-agent-listen-port={_free_port()}",
                    f"--temp-dir={c.head_dir}", "--disable-usage-stats"], env, c.head_dir)
        _ray_start([f"--address={c.address}", "--num-cpus=1", f"--temp-dir={c.worker_dir}",
                    f"--dashboard-agent-listen-port={_free_port()}",
                    "--disable-usage-stats"], env, c.worker_dir)
        nodes = subprocess.run(
            [sys.executable, "-c", f"import json, ray; ray.init(address='{c.address}', log_to_driver=False);"
             "print(json.dumps([[n['NodeID'], 'node:__internal_head__' in n['Resources']]"
             " for n in ray.nodes() if n['Alive']]))"],
            env=env, capture_output=True, text=True, timeout=180)
        alive = json.loads(nodes.stdout.strip().splitlines()[-1])
        assert len(alive) == 2, nodes.stdout + nodes.stderr
        c.head_id = next(n for n, head in alive if head)
        c.worker_id = next(n for n, head in alive if not head)
        yield c
    finally:
        _kill_node(c.worker_dir)
        _kill_node(c.head_dir)
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with local_cluster(extra_env=STAND_IN) as c:
        yield c


def _checkpoint_step(t: TrialDir) -> int:
    """The step of a trial's newest checkpoint (the stand-in writes it into the index file)."""
    ckpts = t.checkpoints()
    try:
        return int(ckpts[-1][1].with_suffix(".index").read_text()) if ckpts else 0
    except (OSError, ValueError):
        return 0


def _status_code(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except OSError:
        return 0


def test_sweep_on_two_nodes_survives_losing_one(cluster: Cluster, tmp_path: Path) -> None:
    t_start = time.time()
    pipeline = make_workspace(tmp_path, n_train=8, n_eval=4)
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "sweep.cli", "run", "--space", str(space), "--pipeline",
             str(pipeline), "--name", "cl", "--address", cluster.address,
             "--num-trials", "2", "--max-concurrent", "2", "--cpus-per-trial", "1",
             "--eval-every", "20", "--scheduler", "fifo", "--max-failures", "2", "--no-report"],
            cwd=tmp_path, env={**cluster.env, "PYTHONUNBUFFERED": "1"}, stdout=log,
            stderr=subprocess.STDOUT)
        exp = Experiment(tmp_path / "experiments" / "cl")
        try:
            # The dashboard of the cluster answers on 127.0.0.1 while the sweep runs.
            assert _status_code(cluster.dashboard + "/") == 200
            # Wait until the trial on the second node has a checkpoint (the stand-in's ckpt-k is
            # step 20*k) and has not reached its last step; then lose that node.
            victim: TrialDir | None = None
            deadline = time.time() + 600
            while time.time() < deadline and driver.poll() is None and victim is None:
                for t in exp.trials():
                    st = t.status()
                    if (st.get("node_id") == cluster.worker_id and st.get("state") == RUNNING
                            and 20 <= _checkpoint_step(t) < NUM_STEPS - 10):
                        victim = t
                time.sleep(0.1)
            assert victim is not None, log_path.read_text()[-4000:]
            killed_at = _checkpoint_step(victim)
            killed = _kill_node(cluster.worker_dir)
            print(f"killed node {cluster.worker_id[:8]} ({len(killed)} processes) at "
                  f"{time.time() - t_start:.0f}s; {victim.name} was at ckpt-{killed_at}")
            rc = driver.wait(timeout=600)
        finally:
            if driver.poll() is None:
                driver.kill()
    out = log_path.read_text()
    assert rc == 0, out[-4000:]
    assert "2/2 trials done" in out, out[-3000:]
    assert f"Ray dashboard: {cluster.dashboard}" in out

    trials = exp.trials()
    assert len(trials) == 2
    nodes_used = {n for t in trials for n in t.status()["attempt_nodes"]}
    assert nodes_used == {cluster.head_id, cluster.worker_id}, nodes_used  # both nodes ran trials
    for t in trials:
        assert t.status()["state"] == COMPLETED, t.status()
        assert max(metrics.read_trial(t.path).eval) == NUM_STEPS

    # The trial of the lost node was rescheduled on the head and resumed from its checkpoint.
    st = victim.status()
    assert st["attempts"] == 2 and st["attempt_nodes"] == [cluster.worker_id, cluster.head_id], st
    files = metrics.event_files(victim.path / "train")
    assert len(files) == 2, files
    from tests.run.test_resume import _file_steps

    second = _file_steps(files[1])
    assert min(second) > killed_at >= 20 and max(second) == NUM_STEPS, (killed_at, second)
    other = next(t for t in trials if t.name != victim.name)
    assert other.status()["attempts"] == 1
    print(f"test_cluster wall time {time.time() - t_start:.0f}s (sweep only)")
