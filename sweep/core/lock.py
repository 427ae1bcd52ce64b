"""One driver per experiment: ``<experiment>/driver.lock`` names the host and process running
the sweep (`sweep run`, `demo`, `resume`). It is taken before Ray starts and removed when the
driver ends. A second driver is refused at once, naming the holder. A lock whose process is
gone (on this host: checked; a damaged lock file: a driver killed while writing it) is taken
over with a note. A process on another host cannot be checked from here: the message says how
to clear its lock if it is gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sweep.core.errors import ConfigError, Problem

LOCK = "driver.lock"  # sweep.core.experiment.Experiment.lock_path


def holder(root: Path) -> dict[str, Any] | None:
    """Who holds the experiment's lock: ``{"host", "pid", "started_at", "command"}``; ``{}``
    for a damaged lock file; None when there is none."""
    try:
        data = json.loads((root / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def alive(held: dict[str, Any]) -> bool:
    """Whether the process that took the lock may still run (another host's: assume so)."""
    if not held or not isinstance(held.get("pid"), int):
        return False
    if held.get("host") != socket.gethostname():
        return True
    if held["pid"] == os.getpid():
        return False  # this very process: a lock its earlier run in-process left
    try:
        os.kill(held["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def refusal(root: Path, held: dict[str, Any]) -> ConfigError:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(held.get("started_at", 0))))
    here = held.get("host") == socket.gethostname()
    return ConfigError(Problem(
        str(root / LOCK), "", f"another sweep driver runs this experiment: process "
        f"{held.get('pid')} on host {held.get('host')}, since {since} "
        f"({str(held.get('command', ''))[:200]})",
        "wait for it to end, or stop it (Ctrl-C in its terminal, or "
        f"`kill -INT {held.get('pid')}`{'' if here else ' on ' + str(held.get('host'))}) and "
        "resume; if that process is gone (another host's cannot be checked from here), "
        f"delete {root / LOCK}"))


def check(root: Path) -> None:
    """Refuse (ConfigError) if a live driver holds the experiment at ``root``."""
    held = holder(root)
    if held is not None and alive(held):
        raise refusal(root, held)


def acquire(root: Path) -> None:
    """Take the lock of the experiment at ``root`` (its folder exists), or refuse."""
    path = root / LOCK
    mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "started_at": time.time(), "command": " ".join(sys.argv)[:500]})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = holder(root)
            if held is None:
                continue  # released meanwhile
            if alive(held):
                raise refusal(root, held) from None
            who = (f"process {held.get('pid')} on {held.get('host')}" if held
                   else "a damaged lock file")
            print(f"sweep: taking over {path} from {who}, which is no longer running",
                  file=sys.stderr, flush=True)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(mine + "\n")
        return
    raise refusal(root, holder(root) or {})


def release(root: Path) -> None:
    """Remove the lock if this process holds it."""
    held = holder(root)
    if held and held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        (root / LOCK).unlink(missing_ok=True)
