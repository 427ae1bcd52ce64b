"""Child processes end for sure: process groups, grace then kill, parent watch, reasons."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep.core import errors
from sweep.core.process import log_tail, start


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_terminate_ends_the_whole_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    # The child ignores SIGTERM and has a grandchild: both must be gone after terminate().
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            "print(p.pid, flush=True); time.sleep(60)")
    proc = start("t", [sys.executable, "-c", code], tmp_path / "t.log")
    for _ in range(100):
        lines = [x for x in (tmp_path / "t.log").read_text().splitlines() if x.isdigit()]
        if lines:
            break
        time.sleep(0.05)
    grandchild = int(lines[0])
    t0 = time.time()
    proc.terminate(grace=0.5)
    assert time.time() - t0 < 5
    assert _gone(proc.pid)
    for _ in range(50):
        if _gone(grandchild):
            break
        time.sleep(0.05)
    assert _gone(grandchild)


def test_log_is_appended_across_attempts(tmp_path: Path) -> None:
    for word in ("first", "second"):
        p = start("t", [sys.executable, "-c", f"print('{word}')"], tmp_path / "t.log")
        p.popen.wait(10)
    text = (tmp_path / "t.log").read_text()
    assert text.index("first") < text.index("second")
    assert text.count("start t:") == 2


@pytest.mark.parametrize(("code", "reason"), [
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", errors.KILLED),
    ("print('ResourceExhaustedError: OOM when allocating tensor'); raise SystemExit(1)", errors.OOM),
    ("raise SystemExit(1)", errors.CRASHED),
])
def test_failure_reason(tmp_path: Path, code: str, reason: str) -> None:
    p = start("t", [sys.executable, "-c", code], tmp_path / "t.log")
    p.popen.wait(10)
    assert p.failure_reason() == reason


def test_a_worker_exits_when_its_parent_dies(tmp_path: Path) -> None:
    """The parent (a Ray actor in real life) is killed -9: the child notices within seconds."""
    repo = str(Path(__file__).resolve().parents[2])
    child_pid = tmp_path / "child.pid"
    (tmp_path / "child.py").write_text(
        f"import os, sys, time\nsys.path.insert(0, {repo!r})\n"
        "from sweep.core.process import watch_parent\n"
        "watch_parent(os.getppid(), 0.1)\n"
        f"open({str(child_pid)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    (tmp_path / "parent.py").write_text(
        f"import sys, time\nfrom pathlib import Path\nsys.path.insert(0, {repo!r})\n"
        "from sweep.core.process import start\n"
        f"start('c', [sys.executable, {str(tmp_path / 'child.py')!r}], Path({str(tmp_path / 'c.log')!r}))\n"
        "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")])
    for _ in range(200):
        if child_pid.exists() and child_pid.read_text():
            break
        time.sleep(0.05)
    pid = int(child_pid.read_text())
    assert not _gone(pid)
    parent.kill()
    parent.wait()
    for _ in range(100):
        if _gone(pid):
            break
        time.sleep(0.05)
    assert _gone(pid)


def test_log_tail_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert log_tail(tmp_path / "none.log") == ""
