"""The Optuna study in PostgreSQL (`--study-url`), with a real server started for the test and
the Ray backend driven by the stand-in worker (tests/fake_worker.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from sweep.experiment import Experiment
from tests.conftest import make_workspace, run_cli

pytestmark = pytest.mark.slow
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


def _as_postgres(args: list[str]) -> subprocess.CompletedProcess:
    # initdb and postgres refuse to run as root: run them as the postgres user when we are root.
    cmd = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(args)] if os.geteuid() == 0 else args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if PG_BIN is None or (os.geteuid() == 0 and shutil.which("su") is None):
        pytest.skip("no PostgreSQL server binaries on this machine (Debian package postgresql)")
    root = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # short: unix socket path limit
    os.chmod(root, 0o777)
    data = root / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _as_postgres([f"{PG_BIN}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres"])
    assert out.returncode == 0, out.stderr
    out = _as_postgres([f"{PG_BIN}/pg_ctl", "-D", str(data), "-w", "-l", str(root / "log"),
                        "-o", f"'-k {root} -p {port} -c listen_addresses=127.0.0.1'", "start"])
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        out = _as_postgres([f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(port),
                            "-U", "postgres", "optuna"])
        assert out.returncode == 0, out.stderr
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/optuna"
    finally:
        _as_postgres([f"{PG_BIN}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def test_sweep_keeps_its_study_in_postgresql(postgres_url: str, tmp_path: Path) -> None:
    pipeline = make_workspace(tmp_path, n_train=8, n_eval=4)
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  num_steps: 20\n  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}\n")
    env = {"SWEEP_WORKER_MODULE": "tests.fake_worker", "FAKE_MODE": "ok"}
    os.environ.update(env)
    try:
        out = run_cli(["run", "--space", str(space), "--pipeline", str(pipeline), "--name", "pg",
                       "--num-trials", "2", "--scheduler", "fifo", "--no-dashboard",
                       "--no-report", "--study-url", postgres_url], tmp_path, timeout=600)
    finally:
        for k in env:
            del os.environ[k]
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    exp = Experiment(tmp_path / "experiments" / "pg")
    assert exp.settings()["storage_url"] == postgres_url
    assert not exp.study_db.exists()  # nothing went to the default SQLite file
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["ray_trial_id"] for t in done) == sorted(t.name for t in exp.trials())
