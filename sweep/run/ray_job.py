"""`sweep run` / `sweep resume` submitted as a Ray Job (``ray job submit ... -- sweep run ...
--address auto``): how the driver knows it is one, and the two things such a driver needs that
a terminal's does not.

- Its working directory is Ray's unpacked copy of ``--working-dir`` on the head node, gone
  when the job ends and invisible to the user's machine: ``--storage`` must be an absolute
  path (a folder every node and the user's machine share), or `sweep status` and `sweep
  report` would have nothing to read.
- ``ray job stop`` sends SIGTERM to the driver (``sweep.core.interrupt`` stops the sweep
  cleanly on it), then SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S`` (default 3 s): too soon for
  the running trials to stop at their checkpoints and Ray Tune to save its state. The job's
  runtime env should set it to ``STOP_GRACE_S``; a shorter grace gets a warning at start.

Ray sets ``RAY_JOB_CONFIG_JSON_ENV_VAR`` in the environment of a job's entrypoint (the job's
runtime env and metadata); Ray itself is not imported here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sweep.core.errors import Problem

JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
STOP_WAIT_ENV = "RAY_JOB_STOP_WAIT_TIME_S"
RAY_DEFAULT_STOP_WAIT_S = 3  # Ray's JobSupervisor.DEFAULT_RAY_JOB_STOP_WAIT_TIME_S
STOP_GRACE_S = 60  # what the docs tell a job to set: trials stop and Tune saves well within it


def job_id() -> str | None:
    """The submission id of the Ray Job this process is the entrypoint of, else None."""
    raw = os.environ.get(JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        meta = json.loads(raw).get("metadata") or {}
    except (ValueError, AttributeError):
        meta = {}
    return str(meta.get("job_submission_id") or meta.get("job_name") or "unknown")


def storage_problem(storage: Path) -> Problem | None:
    """A Ray Job's experiments must go to an absolute, shared folder."""
    if job_id() is None or Path(storage).is_absolute():
        return None
    return Problem("command line", "--storage", f"'{storage}' is relative, and this sweep runs "
                   f"as Ray Job {job_id()}: it would be written into Ray's temporary copy of "
                   "the job's working directory, which `sweep status` and `sweep report` on "
                   "your machine cannot see and Ray deletes",
                   "give an absolute path every node and your machine share, e.g. "
                   "--storage /shared/experiments")


def stop_grace_warning() -> str | None:
    """A warning when `ray job stop` would SIGKILL this driver before it stops cleanly."""
    if job_id() is None:
        return None
    raw = os.environ.get(STOP_WAIT_ENV, str(RAY_DEFAULT_STOP_WAIT_S))
    try:
        grace = float(raw)
    except ValueError:
        grace = RAY_DEFAULT_STOP_WAIT_S
    if grace >= STOP_GRACE_S / 2:
        return None
    return (f"`ray job stop` will kill this sweep {grace:g} s after asking it to stop "
            f"({STOP_WAIT_ENV}={raw}), which may be before its trials have stopped at their "
            f"checkpoints and Ray Tune has saved its state. Submit with "
            f"--runtime-env-json '{{\"env_vars\": {{\"{STOP_WAIT_ENV}\": \"{STOP_GRACE_S}\"}}}}'")
