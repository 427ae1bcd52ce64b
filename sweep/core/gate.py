"""The train gate: how far a trial's train job may train before the scheduler has decided.

With an early-stopping scheduler, the trial (``TrialRunner``) writes ``train_gate.json``
``{"until_step": N}`` in the trial folder: the train job, after saving a checkpoint at step
``>= N`` (and before its last step), waits until the gate moves on. The trial moves it one
evaluation interval further each time Ray asks for the next result, i.e. once the scheduler
has decided to continue; a stopped trial is ended while it waits, so it never trains past the
rung it was stopped at. No gate file: the job never waits (FIFO).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

GATE = "train_gate.json"


def open_until(trial_dir: Path, until_step: int) -> None:
    """Let the train job in ``trial_dir`` train up to ``until_step`` (atomic write)."""
    tmp = trial_dir / f".{GATE}.tmp"
    tmp.write_text(json.dumps({"until_step": int(until_step)}))
    os.replace(tmp, trial_dir / GATE)


def remove(trial_dir: Path) -> None:
    (trial_dir / GATE).unlink(missing_ok=True)


def until_step(trial_dir: Path) -> int | None:
    """The step the gate allows training to, or None when there is no gate."""
    try:
        return int(json.loads((trial_dir / GATE).read_text())["until_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def paused(trial_dir: Path, step: int, num_steps: int) -> bool:
    """Whether a train job whose newest checkpoint is at ``step`` waits at the gate."""
    until = until_step(trial_dir)
    return until is not None and until <= step < num_steps


def wait(trial_dir: Path, step: int, num_steps: int, poll: float = 0.2) -> float:
    """Block the train job after its checkpoint at ``step`` while the gate is closed there;
    returns the seconds waited. The job's log says when it waits and for how long (the cost
    of pausing), and a job ended while waiting (stopped) leaves the first line last."""
    if not paused(trial_dir, step, num_steps):
        return 0.0
    print(f"train: checkpoint at step {step}; waiting for the scheduler's decision", flush=True)
    t0 = time.time()
    while paused(trial_dir, step, num_steps):
        time.sleep(poll)
    waited = time.time() - t0
    print(f"train: going on from step {step} after waiting {waited:.1f}s", flush=True)
    return waited
