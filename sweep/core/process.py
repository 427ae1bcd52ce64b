"""Child processes of a trial (the OD API train and eval jobs): start, watch, end for sure.

Each child runs in its own process group so that stopping a trial ends everything it started
(TF spawns no children, but a user's wrapper might), and each child watches its parent
(``--parent-pid``) so it exits by itself if the Ray actor that owns it dies without cleanup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sweep.core import errors

# Words in a log tail that mean the process ran out of memory rather than crashed.
_OOM_MARKERS = ("ResourceExhaustedError", "MemoryError", "OOM when allocating", "std::bad_alloc")


@dataclass
class ManagedProcess:
    """A started child: its command, log file and ``Popen``."""

    name: str
    cmd: list[str]
    log_path: Path
    popen: subprocess.Popen = field(repr=False)
    started_at: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, grace: float = 5.0) -> int | None:
        """SIGTERM the process group, then SIGKILL after ``grace`` seconds; returns the code."""
        if self.popen.poll() is not None:
            return self.popen.returncode
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                return self.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        return self.popen.poll()

    def failure_reason(self) -> str:
        """Why a process that exited non-zero failed, in the policy's words (errors.py)."""
        code = self.popen.returncode
        tail = log_tail(self.log_path)
        if any(m in tail for m in _OOM_MARKERS):
            return errors.OOM
        if code is not None and code < 0:
            # SIGKILL from outside is most often the kernel's OOM killer or a user; say which signal.
            return errors.KILLED
        return errors.CRASHED


def log_tail(path: Path, max_bytes: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def start(name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> ManagedProcess:
    """Start ``python -m sweep.odapi.worker ARGS`` (or any argv) with stdout+stderr appended to a log."""
    cmd = [sys.executable, *args] if args and args[0] == "-m" else list(args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # append: a retried process keeps the earlier attempt's log
    log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start {name}: {' '.join(cmd)}\n".encode())
    log.flush()
    try:
        popen = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own descriptor
    return ManagedProcess(name, cmd, log_path, popen)


def watch_parent(parent_pid: int, interval: float = 1.0) -> None:
    """In a child: exit at once when ``parent_pid`` is gone (a daemon thread polls)."""
    import threading

    def _watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid:
                os._exit(3)

    threading.Thread(target=_watch, name="sweep-parent-watch", daemon=True).start()
