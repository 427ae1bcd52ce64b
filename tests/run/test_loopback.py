"""The embedded Ray listens on loopback only: every TCP port that the processes of a running
`sweep run` (driver, GCS, raylet, agents, workers) listen on is on 127.0.0.1, seen with `ss`;
and its dashboard, which `sweep run` starts unless told not to, answers there."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, make_workspace
from tests.run.test_cluster import _status_code

pytestmark = pytest.mark.slow

LOOPBACK = ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")


def _descendants(root: int) -> set[int]:
    rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    pairs = [tuple(map(int, r.split())) for r in rows.splitlines() if r.strip()]
    found, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in pairs:
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def _listening(pids: set[int]) -> list[tuple[str, str]]:
    """(local address:port, process name) of the TCP listeners owned by ``pids``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        if "users:" not in line:
            continue
        users = line.split("users:", 1)[1]
        owners = {int(p.split("=")[1].rstrip(")")) for p in users.split(",") if p.startswith("pid=")}
        if owners & pids:
            rows.append((line.split()[3], users.split('"')[1]))
    return rows


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_embedded_ray_listens_on_loopback_only(tmp_path: Path) -> None:
    pipeline = make_workspace(tmp_path, n_train=8, n_eval=4)
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  num_steps: 40\n  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "SWEEP_WORKER_MODULE": "tests.fake_worker",
           "FAKE_MODE": "hang", "PYTHONUNBUFFERED": "1"}  # the trial stays up while we look
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "run", "--space", str(space), "--pipeline",
         str(pipeline), "--name", "lo", "--num-trials", "1", "--no-report"],
        cwd=tmp_path, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True,  # noqa: SIM115
        start_new_session=True)
    seen: dict[str, str] = {}
    dashboard, answered = "", 0
    try:
        deadline = time.monotonic() + 240
        # Wait until the trial's Ray worker is up: then GCS, raylet, agents and workers are.
        while time.monotonic() < deadline and proc.poll() is None:
            for addr, name in _listening(_descendants(proc.pid)):
                seen[addr] = name
            dashboard = next((ln.split("Ray dashboard: ", 1)[1].strip()
                              for ln in log.read_text().splitlines() if "Ray dashboard: " in ln), "")
            if dashboard and any(name.startswith("ray::") and "Dashboard" not in name
                                 and "RuntimeEnv" not in name for name in seen.values()) \
                    and any(n == "raylet" for n in seen.values()):
                break
            time.sleep(1)
        for addr, name in _listening(_descendants(proc.pid)):  # once more, all up
            seen[addr] = name
        while dashboard and time.monotonic() < deadline and answered != 200:
            answered = _status_code(dashboard + "/")
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # the CLI shuts Ray down on Ctrl-C
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text()
    names = set(seen.values())
    assert {"gcs_server", "raylet"} <= names, (seen, out[-3000:])
    assert any(n.startswith("ray::") for n in names), (seen, out[-3000:])
    exposed = {a: n for a, n in seen.items() if not a.startswith(LOOPBACK)}
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert dashboard.startswith("http://127.0.0.1:") and answered == 200, (dashboard, answered,
                                                                          out[-3000:])
