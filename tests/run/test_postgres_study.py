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

from sweep.core.experiment import Experiment
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


def _fake_sweep(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """`sweep run` of 2 trials with the stand-in worker (tests/fake_worker.py)."""
    pipeline = make_workspace(tmp_path, n_train=8, n_eval=4)
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  num_steps: 20\n  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}\n")
    env = {"SWEEP_WORKER_MODULE": "tests.fake_worker", "FAKE_MODE": "ok"}
    os.environ.update(env)
    try:
        return run_cli(["run", "--space", str(space), "--pipeline", str(pipeline), "--name", name,
                        "--num-trials", "2", "--no-dashboard", *args], tmp_path, timeout=600)
    finally:
        for k in env:
            del os.environ[k]


PASSWORD = "pw-Xq7-never-on-disk"


@pytest.fixture(scope="module")
def pg_sweep(postgres_url: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One stand-in sweep (ASHA, with its report) whose study URL carries a password; the
    server trusts local connections, so any password works: what matters is where it goes."""
    tmp_path = tmp_path_factory.mktemp("pg")
    url = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@")
    out = _fake_sweep(tmp_path, "pw", "--scheduler", "asha", "--eval-every", "10",
                      "--study-url", url)
    status = run_cli(["status", "pw"], tmp_path, timeout=120)
    return tmp_path, out, status


def test_sweep_keeps_its_study_in_postgresql(postgres_url: str, pg_sweep) -> None:  # noqa: ANN001
    tmp_path, out, _ = pg_sweep
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    exp = Experiment(tmp_path / "experiments" / "pw")
    assert exp.settings()["storage_url"] == postgres_url  # the same server, no password
    assert not exp.study_db.exists()  # nothing went to the default SQLite file
    study = optuna.load_study(study_name="pw", storage=postgres_url)
    assert len(study.trials) == 2  # the report read it too (no password needed)
    assert all(t.state.is_finished() for t in study.trials)  # complete, or pruned by ASHA
    assert sorted(t.user_attrs["ray_trial_id"] for t in study.trials) == sorted(
        t.name for t in exp.trials())


def test_a_password_in_the_study_url_reaches_no_file_and_no_output(pg_sweep) -> None:  # noqa: ANN001
    tmp_path, out, status = pg_sweep
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert PASSWORD not in out.stdout + out.stderr + status.stdout + status.stderr
    exp = Experiment(tmp_path / "experiments" / "pw")
    files = [p for d in (exp.root, tmp_path / "reports" / "pw") for p in d.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files)
    assert any("searcher" in p.name for p in files)  # Ray's pickled searcher is checked too
    leaks = [str(p) for p in files if PASSWORD.encode() in p.read_bytes()]
    assert leaks == []
