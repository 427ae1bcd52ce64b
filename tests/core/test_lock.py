"""One driver per experiment (sweep.core.lock): a second driver is refused within a second,
before Ray starts, naming the host and process holding the lock; a dead holder's lock is taken
over with a note. Fast: no Ray."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep import cli
from sweep.core import lock
from sweep.core.experiment import Experiment, write_json


def _experiment(root: Path, name: str = "held") -> Experiment:
    exp = Experiment(root / "experiments" / name)
    (exp.root / "ray").mkdir(parents=True)
    write_json(exp.settings_path, {"name": name, "space": "s.yaml", "pipeline": "p.config",
                                   "storage": str(root / "experiments"), "num_trials": 2})
    return exp


@pytest.fixture
def other_driver():  # noqa: ANN201 - a live process of this host standing in for a driver
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _hold(exp: Experiment, pid: int, host: str | None = None) -> None:
    exp.lock_path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                         "started_at": time.time(), "command": "sweep run"}))


@pytest.mark.parametrize("command", ["resume", "run", "run --overwrite"])
def test_a_second_driver_is_refused_at_once_naming_the_holder(
        tmp_path: Path, other_driver: int, command: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    exp = _experiment(tmp_path)
    _hold(exp, other_driver)
    before = sorted(p.name for p in exp.root.iterdir())
    monkeypatch.chdir(tmp_path)
    argv = (["resume", "held"] if command == "resume" else
            ["run", "--space", "s.yaml", "--pipeline", "p.config", "--name", "held",
             *command.split()[1:]])
    t0 = time.monotonic()
    rc = cli.main(argv)
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"process {other_driver} on host {socket.gethostname()}" in err, err
    assert f"- {exp.lock_path}: another sweep driver runs this experiment" in err, err
    assert took < 2.0, took
    assert sorted(p.name for p in exp.root.iterdir()) == before  # nothing moved or written
    assert not any(p.name.startswith("held.old-") for p in exp.root.parent.iterdir())
    import ray

    assert not ray.is_initialized()


def test_run_on_an_existing_name_is_refused_at_once_naming_the_option(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _experiment(tmp_path)
    monkeypatch.chdir(tmp_path)
    t0 = time.monotonic()
    rc = cli.main(["run", "--space", "s.yaml", "--pipeline", "p.config", "--name", "held"])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < 2.0
    assert "  - command line: --name: experiment 'held' already exists" in err, err
    assert "sweep resume held" in err


def test_a_dead_drivers_lock_is_taken_over_with_a_note(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    exp = _experiment(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    _hold(exp, proc.pid)
    lock.acquire(exp.root)
    assert f"taking over {exp.lock_path} from process {proc.pid}" in capsys.readouterr().err
    assert lock.holder(exp.root)["pid"] == os.getpid()
    lock.release(exp.root)
    assert not exp.lock_path.exists()
    exp.lock_path.write_text('{"host": "x", "pi')  # a driver killed while writing it
    lock.acquire(exp.root)
    assert "from a damaged lock file" in capsys.readouterr().err
    lock.release(exp.root)


def test_another_hosts_lock_is_never_taken_over(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    _hold(exp, 1, host="elsewhere")
    with pytest.raises(cli.ConfigError, match="on host elsewhere") as e:
        lock.acquire(exp.root)
    assert "delete" in str(e.value)
    assert lock.holder(exp.root)["host"] == "elsewhere"
