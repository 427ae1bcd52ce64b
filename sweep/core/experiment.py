"""The on-disk layout of an experiment and its trials: the one place that knows the file names.

    <storage>/<experiment>/
        experiment.json         settings of the sweep (what `sweep run` was asked)
        base_pipeline.config    the base config every trial starts from
        space.yaml              the search space, as given
        driver.lock             host and pid of the one driver running the sweep (sweep.core.lock)
        stopping.json           why the whole sweep is stopping: {"kind": "interrupted", "signal", "at"}
                                (sweep.core.interrupt) or {"kind": "budget", "reason", "at"}; a trial
                                stopped meanwhile is INTERRUPTED, or STOPPED with that reason
        study.db                the Optuna study (SQLite), unless a URL was given
        ray/                    Ray Tune's experiment state
        trials/<trial>/         one OD API model_dir per trial:
            params.json         the sampled parameters
            pipeline.config     the rendered config the trial trained with
            status.json         state, reason if failed, attempts, resources
            train.log eval.log  stdout+stderr of the OD API train and eval processes
            ckpt-N.*, checkpoint, train/, eval/   as the OD API writes them
            eval/evaluated.jsonl  which checkpoint the eval job evaluated at which step
            best/               a copy of the checkpoint of the trial's best evaluation
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Trial states written to status.json.
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"  # trained to num_steps and evaluated
STOPPED = "STOPPED"  # stopped early by the scheduler (or the sweep's budget)
FAILED = "FAILED"  # see "reason": diverged, killed, out of memory, error
PENDING = "PENDING"
PAUSED = "PAUSED"  # PBT paused it to clone another trial into it; it continues
# The sweep was interrupted (SIGINT/SIGTERM) while it ran: `sweep resume` continues it from its
# last checkpoint. Not an end: neither a result nor a failure.
INTERRUPTED = "INTERRUPTED"
STATES = (PENDING, RUNNING, PAUSED, INTERRUPTED, COMPLETED, STOPPED, FAILED)
ENDED = (COMPLETED, STOPPED, FAILED)  # final states: a resumed sweep keeps these trials as they are


def write_json(path: Path, data: Any) -> None:
    """Write atomically so a reader (status, report) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError, json.JSONDecodeError):
        return default


EVALUATED = "evaluated.jsonl"


def evaluated_path(model_dir: Path) -> Path:
    return Path(model_dir) / "eval" / EVALUATED


def read_evaluated(model_dir: Path) -> list[dict[str, Any]]:
    """Checkpoints the eval job has evaluated, in order: ``{"checkpoint", "step", "metrics",
    "time"}`` (``eval/evaluated.jsonl``; the eval job appends a row after each evaluation)."""
    path = evaluated_path(model_dir)
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from a killed eval job
    return rows


def append_evaluated(model_dir: Path, row: dict[str, Any]) -> None:
    """The eval job's record of one evaluation (one JSON line, appended)."""
    with open(evaluated_path(model_dir), "a") as f:
        f.write(json.dumps(row) + "\n")


def take_checkpoint(prefix: Path, dest: Path) -> bool:
    """Hard-link the files of checkpoint ``prefix`` (``<dir>/ckpt-N``) into folder ``dest``;
    True only when the whole set came: the index and every data shard.

    The train job deletes old checkpoints (keep-last-N) whenever it saves, so a file listed a
    moment ago may be gone when it is copied. TensorFlow never rewrites a checkpoint's files,
    so a link taken is a consistent copy that survives the deletion, at no cost in disk or
    time. Where links are not supported the file is copied (an open file is still read whole
    after it is deleted)."""
    dest.mkdir(parents=True, exist_ok=True)
    taken = []
    for f in sorted(prefix.parent.glob(prefix.name + ".*")):
        try:
            _link_or_copy(f, dest / f.name)
        except FileNotFoundError:
            continue  # deleted since it was listed: the check below decides
        taken.append(f.name)
    return _whole_checkpoint(prefix.name, taken)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except FileNotFoundError:
        raise
    except OSError:  # no hard links on this filesystem (or across devices)
        shutil.copy2(src, dst)


def _whole_checkpoint(name: str, files: list[str]) -> bool:
    """``ckpt-N.index`` and ``ckpt-N.data-0000i-of-0000K`` for every i < K are all there."""
    shards = [f for f in files if f.startswith(name + ".data-")]
    of = re.fullmatch(r".*\.data-\d+-of-(\d+)", shards[0]) if shards else None
    return f"{name}.index" in files and of is not None and len(set(shards)) == int(of.group(1))


@dataclass(frozen=True)
class TrialDir:
    """One trial's folder, which is also its OD API ``model_dir``."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def params_path(self) -> Path:
        return self.path / "params.json"

    @property
    def pipeline_path(self) -> Path:
        return self.path / "pipeline.config"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    @property
    def eval_log(self) -> Path:
        return self.path / "eval.log"

    def params(self) -> dict[str, Any]:
        return read_json(self.params_path, {})

    def evaluated(self) -> list[dict[str, Any]]:
        return read_evaluated(self.path)

    def status(self) -> dict[str, Any]:
        return read_json(self.status_path, {"state": PENDING})

    def update_status(self, **fields: Any) -> dict[str, Any]:
        status = self.status()
        status.update(fields)
        status["updated_at"] = time.time()
        write_json(self.status_path, status)
        return status

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(checkpoint number, prefix)`` of the OD API checkpoints on disk, oldest first."""
        out = []
        for index in self.path.glob("ckpt-*.index"):
            num = index.name[len("ckpt-"): -len(".index")]
            if num.isdigit():
                out.append((int(num), index.with_suffix("")))
        return sorted(out)


@dataclass(frozen=True)
class Experiment:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def settings_path(self) -> Path:
        return self.root / "experiment.json"

    @property
    def base_pipeline(self) -> Path:
        return self.root / "base_pipeline.config"

    @property
    def space_path(self) -> Path:
        return self.root / "space.yaml"

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def ray_dir(self) -> Path:
        return self.root / "ray"

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    @property
    def stop_path(self) -> Path:
        return self.root / "stopping.json"

    @property
    def lock_path(self) -> Path:
        return self.root / "driver.lock"

    def exists(self) -> bool:
        return self.settings_path.exists()

    def settings(self) -> dict[str, Any]:
        data = read_json(self.settings_path)
        if not isinstance(data, dict) and self.settings_path.is_file():
            from sweep.core.errors import ConfigError, Problem

            # Damaged (a driver or disk stopped mid-write): say so, never "no experiment".
            raise ConfigError(Problem(
                str(self.settings_path), "", "is damaged: not the JSON object of an "
                "experiment's settings (truncated or overwritten?)", "restore it from a copy "
                "(the trials under trials/ are untouched and are read again once it is back); "
                "nothing was changed"))
        if not isinstance(data, dict):
            raise FileNotFoundError(
                f"{self.settings_path}: no experiment here. "
                "Start one with `sweep run` (or `sweep demo`), or pass --storage to where it is."
            )
        return data

    def storage_url(self) -> str:
        """The study's URL; a password comes from the environment only (sweep.core.study_url)."""
        from sweep.core.study_url import with_password

        return with_password(self.settings().get("storage_url")
                             or f"sqlite:///{self.study_db.resolve()}")

    def trial(self, name: str) -> TrialDir:
        return TrialDir(self.trials_dir / name)

    def trials(self) -> list[TrialDir]:
        if not self.trials_dir.is_dir():
            return []
        dirs = [p for p in self.trials_dir.iterdir() if p.is_dir()]
        # Creation order = the order Ray started them; stable for tables and plots.
        return [TrialDir(p) for p in sorted(dirs, key=lambda p: (_created(p), p.name))]


def trust_problem(exp: Experiment) -> tuple[str, str] | None:
    """(problem, fix) if the folder could hold someone else's code, else None.

    Resuming unpickles Ray Tune's state (``ray/tuner.pkl``), which runs whatever code the
    pickle names: an experiment folder is trusted input. Like ssh with a group-writable key,
    refuse one that another user owns or could have written.
    """
    paths = [exp.root, exp.ray_dir]
    if exp.ray_dir.is_dir():
        paths += sorted(exp.ray_dir.iterdir())
    me = os.getuid()
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        if st.st_uid not in (me, 0):
            return (f"'{path}' belongs to another user (uid {st.st_uid}); resuming runs the "
                    "code its pickled Ray state names",
                    "resume only your own experiments (copy the folder to start from it "
                    "as yourself, after checking it)")
        if st.st_mode & 0o022:
            return (f"'{path}' is writable by {'group and others' if st.st_mode & 0o002 else 'its group'}"
                    f" (mode {st.st_mode & 0o777:o}); resuming runs the code its pickled Ray "
                    "state names, so someone else could have put code there",
                    f"if you trust its contents: chmod -R go-w '{exp.root}', then resume")
    return None


def study_file_problem(path: Path) -> str | None:
    """What is wrong with an experiment's SQLite study file, or None. Read-only (opening a
    damaged or empty file with SQLAlchemy would write Optuna's tables into it)."""
    import contextlib
    import sqlite3

    try:
        with path.open("rb") as f:
            header = f.read(16)
        if header != b"SQLite format 3\x00":
            return "is not an SQLite database"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {r[0] for r in db.execute("select name from sqlite_master")}
            if "studies" not in tables:
                return "holds no Optuna study"
            db.execute("select count(*) from trials").fetchone()
    except (OSError, sqlite3.Error) as e:
        return f"cannot be read ({e})"
    return None


def damaged(exp: Experiment) -> list[tuple[Path, str, str]]:
    """``(file, problem, what the user can do)`` for each of the experiment's records that is
    there but cannot be read: a trial's status.json, the study file (the default SQLite one),
    Ray Tune's saved state. experiment.json is Experiment.settings()'s (an error: nothing
    can be read without it). Read-only."""
    out: list[tuple[Path, str, str]] = []
    for t in exp.trials():
        if t.status_path.is_file() and not isinstance(read_json(t.status_path), dict):
            out.append((t.status_path, "is damaged: not a trial status (truncated?); the trial "
                        "is shown as PENDING", "`sweep resume` rebuilds it from the trial's "
                        "folder (the damaged file is kept beside it); or restore it from a copy"))
    storage = (read_json(exp.settings_path, {}) or {}).get("storage_url")
    if exp.study_db.exists() and (not storage or str(storage).endswith(str(exp.study_db))):
        problem = study_file_problem(exp.study_db)
        if problem:
            out.append((exp.study_db, f"the sweep's Optuna study database {problem}",
                        "restore study.db from a copy: the trials' folders are intact and "
                        "`sweep status`/`report` read them, but `sweep resume` needs the study"))
    problem = ray_state_problem(exp.ray_dir)
    if problem:
        out.append((problem[0], problem[1], "`sweep resume` cannot continue without Ray Tune's "
                    "state: restore the ray/ folder from a copy, or start anew with `sweep run "
                    f"... --name {exp.name} --overwrite`; `sweep status`/`report` read the "
                    "trials' folders as they are"))
    return out


def ray_state_problem(ray_dir: Path) -> tuple[Path, str] | None:
    """``(file, problem)`` if Ray Tune's saved state in ``ray_dir`` is there but damaged:
    its newest experiment state not JSON, or its pickled tuner empty (no state at all is not
    damage: Ray saved none yet)."""
    states = sorted(ray_dir.glob("experiment_state-*.json"), key=lambda f: f.stat().st_mtime)
    if states:
        data = read_json(states[-1])
        if not isinstance(data, dict) or "trial_data" not in data:
            return states[-1], "is damaged: not Ray Tune's experiment state (truncated?)"
    tuner = ray_dir / "tuner.pkl"
    if states and (not tuner.is_file() or tuner.stat().st_size < 16):
        return tuner, "is missing or truncated (Ray Tune's pickled tuner)"
    return None


def _created(path: Path) -> float:
    status = read_json(path / "status.json", {}) or {}
    return float(status.get("created_at", path.stat().st_mtime))


def find_experiment(name_or_path: str, storage: Path | str = "experiments") -> Experiment:
    """An experiment by folder path or by name under ``storage``."""
    p = Path(name_or_path)
    candidates = [p, Path(storage) / name_or_path]
    for c in candidates:
        if (c / "experiment.json").exists():
            return Experiment(c.resolve())
    raise FileNotFoundError(
        f"no experiment '{name_or_path}': looked for experiment.json in "
        + ", ".join(str(c) for c in candidates)
        + ". List experiments with `ls experiments/`, or pass --storage DIR."
    )
