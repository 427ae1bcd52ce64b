"""Experiment trackers: every trial of a sweep as an MLflow run (``--mlflow URI``) and/or a
W&B run (``--wandb PROJECT``), and the sweep's best config and report on a parent run.

This module owns all of it: the options and their environment variables, the launch-time
check (a tracker that cannot be reached refuses the launch), what a trial's run holds, the
run ids, and what to do when a tracker goes away. ``mlflow`` and ``wandb`` are imported here
only, lazily (each is an optional extra: ``pip install 'sweep[mlflow]'`` / ``'sweep[wandb]'``).

What is logged is read from the trial folders, the sweep's truth, never from memory: each
trial folder's ``trackers.json`` holds its run id per tracker and the last train and eval
steps the tracker acknowledged. A sync logs what the folder has beyond those marks, then moves
them. So a tracker that is down loses nothing (the marks stay; the next sync, at the trial's
next evaluation or the sweep's end, catches up), a resumed sweep continues the same runs, and
nothing is logged twice. Tracker calls run in the driver (the Ray Tune callback in
``sweep.run.tune_backend``) and never raise into the sweep: a failure is one warning per
outage, then retries every ``RETRY_S`` seconds.

A run holds: the trial's parameters (the space's names) and seed as params; every evaluation's
metrics (mAP, mAP_50, mAP_75, AR_100) at its step; the training curve (total_loss and the other
losses, learning_rate, steps_per_sec) at every summary step; tags sweep.experiment,
sweep.trial, sweep.seed, sweep.base and, once it ended, sweep.state (its status.json state).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sweep.core.errors import ConfigError, Problem
from sweep.core.experiment import ENDED, FAILED, INTERRUPTED, Experiment, TrialDir, read_json, write_json
from sweep.odapi import metrics
from sweep.search import marks

MLFLOW_ENV = "SWEEP_MLFLOW"  # the default of --mlflow
WANDB_ENV = "SWEEP_WANDB"  # the default of --wandb
STATE_FILE = "trackers.json"  # in the experiment folder (parent runs) and in each trial folder
RETRY_S = 15.0  # after a failed call, the tracker is left alone this long (no stalled driver)
CHECK_TIMEOUT_S = 10.0  # the launch-time check's wait for an answer
FINAL_TRIES = 3  # at the sweep's end, a tracker that is down is tried this many times, RETRY_S apart
EVAL_KEYS = {tag: key for tag, key in metrics.RESULT_KEYS.items() if tag not in metrics.TRAIN_SOURCED}
TRAIN_KEYS = {tag: key for tag, key in metrics.RESULT_KEYS.items() if tag in metrics.TRAIN_SOURCED}
MLFLOW_STATUS = {"COMPLETED": "FINISHED", "STOPPED": "FINISHED", "FAILED": "FAILED"}


def option_help(kind: str) -> str:
    """The --mlflow / --wandb help text (the CLI's)."""
    if kind == "mlflow":
        return ("log every trial as an MLflow run (params, metrics at their steps, seed, state) "
                "and the best config and report on a parent run, to this tracking URI (e.g. "
                "http://127.0.0.1:5000); needs `pip install 'sweep[mlflow]'` "
                f"[${MLFLOW_ENV}]")
    return ("log every trial as a W&B run in PROJECT (or ENTITY/PROJECT), grouped by "
            "experiment; WANDB_MODE=offline keeps the runs in <experiment>/wandb for `wandb "
            f"sync`; needs `pip install 'sweep[wandb]'` [${WANDB_ENV}]")


def from_env(value: str | None, kind: str) -> str | None:
    """The option's value, else its environment variable's (empty = off)."""
    value = value if value is not None else os.environ.get(MLFLOW_ENV if kind == "mlflow" else WANDB_ENV)
    return value or None


# ---------------------------------------------------------------------------------------------
# The launch-time check


def check(settings: Any, *, where: str = "command line") -> None:
    """Refuse a tracker that is not installed or cannot be reached, before anything is started
    (``ConfigError`` naming the option, the URI and what to do)."""
    problems = []
    if settings.mlflow:
        problems += _check_mlflow(settings.mlflow, where)
    if settings.wandb:
        problems += _check_wandb(settings.wandb, where)
    if problems:
        raise ConfigError(problems)


def _key(kind: str, where: str) -> str:
    return (f"--{kind} (or ${MLFLOW_ENV if kind == 'mlflow' else WANDB_ENV})"
            if where == "command line" else kind)


def _check_mlflow(uri: str, where: str) -> list[Problem]:
    key = _key("mlflow", where)
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return [Problem(where, key, "MLflow is not installed in this environment",
                        "install it with `pip install 'sweep[mlflow]'`, or leave --mlflow out")]
    try:
        with _quick_mlflow(CHECK_TIMEOUT_S):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - connection, HTTP and URI errors vary
        fix = ("start it (e.g. `mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
               f"sqlite:///mlflow.db`) and give its URL, or leave --mlflow out (and unset "
               f"${MLFLOW_ENV}); nothing was started" if where == "command line" else
               f"start the tracking server at {uri} again (the sweep's runs are there), then "
               f"resume; or set \"mlflow\" to null in {where} to go on without it")
        return [Problem(where, key, f"no MLflow tracking server answers at {uri}: {_words(e)}",
                        fix)]
    return []


def _check_wandb(project: str, where: str) -> list[Problem]:
    key = _key("wandb", where)
    try:
        import wandb
    except ImportError:
        return [Problem(where, key, "W&B (wandb) is not installed in this environment",
                        "install it with `pip install 'sweep[wandb]'`, or leave --wandb out")]
    if not _split_project(project)[1]:
        return [Problem(where, key, f"{project!r} names no W&B project",
                        "give PROJECT or ENTITY/PROJECT")]
    if _wandb_mode() in ("offline", "disabled", "dryrun"):
        return []  # nothing to reach: the runs stay on disk
    try:
        api = wandb.Api(timeout=int(CHECK_TIMEOUT_S))
        api.viewer  # noqa: B018 - asks the server who the key belongs to
    except Exception as e:  # noqa: BLE001 - no key, network or server errors vary
        return [Problem(where, key, f"W&B cannot be reached or refused the login: {_words(e)}",
                        "run `wandb login` (or set WANDB_API_KEY) and check the network, or set "
                        "WANDB_MODE=offline to keep the runs on disk and `wandb sync` them later")]
    return []


def _words(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


@contextmanager
def _quick_mlflow(timeout: float) -> Iterator[None]:
    """MLflow's HTTP client retries a dead server 7 times with backoff (minutes): in the
    driver, a call gets one try and ``timeout`` s; the next sync retries. A user's own
    MLFLOW_HTTP_REQUEST_* settings win."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout))}
    saved = {n: os.environ.get(n) for n in names}
    for n, v in names.items():
        os.environ.setdefault(n, v)
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)


def _wandb_mode() -> str:
    return (os.environ.get("WANDB_MODE") or "online").lower()


def _split_project(project: str) -> tuple[str | None, str]:
    entity, _, name = project.rpartition("/")
    return entity or None, name


# ---------------------------------------------------------------------------------------------
# What a trial folder says


def _marks(t: TrialDir) -> dict[str, Any]:
    data = read_json(t.path / STATE_FILE, {})
    return data if isinstance(data, dict) else {}


def run_ids(t: TrialDir) -> dict[str, str]:
    """The trial's run id per tracker (``{"mlflow": ..., "wandb": ...}``), as recorded."""
    return {k: v["run_id"] for k, v in _marks(t).items() if isinstance(v, dict) and v.get("run_id")}


Rows = list[tuple[int, dict[str, float], float]]  # (step, {result key: value}, wall time)


def trial_rows(t: TrialDir, *, train_after: int, eval_after: int, upto: int | None
               ) -> tuple[Rows, int, int]:
    """The trial's values to log beyond the marks, by step (train curve and recorded
    evaluations, steps <= ``upto`` or all when None), each with the wall time it was written
    (the train summary's, the evaluation's record), and the new marks."""
    m = metrics.read_trial(t.path)
    evaluated = {int(r["step"]): float(r.get("time") or 0) for r in t.evaluated() if "step" in r}
    rows: dict[int, dict[str, float]] = {}
    walls: dict[int, float] = {}
    new_train, new_eval = train_after, eval_after
    for step, tags in m.train.items():
        if step > train_after and (upto is None or step <= upto):
            values = {key: tags[tag] for tag, key in TRAIN_KEYS.items() if tag in tags}
            if values:
                rows.setdefault(step, {}).update(values)
                walls[step] = m.train_wall_at.get(step, 0.0)
                new_train = max(new_train, step)
    for step, wall in evaluated.items():
        tags = m.eval.get(step, {})
        if step > eval_after and (upto is None or step <= upto):
            values = {key: tags[tag] for tag, key in EVAL_KEYS.items() if tag in tags}
            if values:
                rows.setdefault(step, {}).update(values)
                walls[step] = max(walls.get(step, 0.0), wall)
            new_eval = max(new_eval, step)
    now = time.time()
    return [(s, rows[s], walls.get(s) or now) for s in sorted(rows)], new_train, new_eval


def _public_params(t: TrialDir) -> dict[str, Any]:
    return {k: v for k, v in marks.public(t.params()).items() if not isinstance(v, dict)}


# ---------------------------------------------------------------------------------------------
# The trackers


class _MLflow:
    kind, label = "mlflow", "MLflow"

    def __init__(self, uri: str, exp: Experiment) -> None:
        from mlflow.tracking import MlflowClient

        # MLflow prints a "View run" link per ended run: noise among the sweep's own lines.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.uri, self.exp = uri, exp
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id: str | None = None
        self.reopened: set[str] = set()

    def where(self) -> str:
        return self.uri

    def _experiment(self) -> str:
        if self.experiment_id is None:
            found = self.client.get_experiment_by_name(self.exp.name)
            self.experiment_id = (found.experiment_id if found is not None
                                  else self.client.create_experiment(self.exp.name))
        return self.experiment_id

    def start_parent(self, settings: dict[str, Any]) -> str:
        run = self.client.create_run(self._experiment(), run_name=f"{self.exp.name} (sweep)", tags={
            "sweep.experiment": self.exp.name, "sweep.role": "sweep",
            "sweep.root": str(self.exp.root)})
        params = {k: settings.get(k) for k in ("sampler", "scheduler", "num_trials",
                                                "max_concurrent", "metrics", "modes", "seed",
                                                "eval_every")}
        self._params(run.info.run_id, params)
        return run.info.run_id

    def start_trial(self, t: TrialDir, parent: str | None) -> str:
        params = t.params()
        seed = marks.seed_of(params)
        tags = {"sweep.experiment": self.exp.name, "sweep.trial": t.name, "sweep.role": "trial",
                "sweep.seed": str(seed), "sweep.base": str(marks.is_base(params)).lower()}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self._experiment(), run_name=t.name, tags=tags)
        self._params(run.info.run_id, {**_public_params(t), "sweep.seed": seed})
        return run.info.run_id

    def _params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def reopen(self, run_id: str, t: TrialDir) -> None:
        # A resumed trial's run was ended KILLED when the sweep was interrupted: it runs again.
        if run_id not in self.reopened:
            if self.client.get_run(run_id).info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            self.reopened.add(run_id)

    def log(self, run_id: str, rows: Rows) -> None:
        from mlflow.entities import Metric

        items = [Metric(k, float(v), int(wall * 1000), step)
                 for step, values, wall in rows for k, v in values.items()]
        for i in range(0, len(items), 1000):  # MLflow's limit per batch
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def end(self, run_id: str, state: str, reason: str | None) -> None:
        self.client.set_tag(run_id, "sweep.state", state)
        if reason:
            self.client.set_tag(run_id, "sweep.reason", str(reason)[:5000])
        self.client.set_terminated(run_id, status=MLFLOW_STATUS.get(state, "FINISHED"))
        self.reopened.discard(run_id)

    def pause(self, run_id: str) -> None:
        # An interrupted trial: KILLED until `sweep resume` continues it (reopen).
        self.client.set_terminated(run_id, status="KILLED")
        self.reopened.discard(run_id)

    def publish(self, parent: str, best_config: Path | None, report: Path | None,
                verdict: str | None) -> None:
        if verdict:
            self.client.set_tag(parent, "sweep.verdict", verdict[:5000])
        if best_config is not None:
            self.client.log_artifact(parent, str(best_config), artifact_path="best")
        if report is not None:
            self.client.log_artifacts(parent, str(report), artifact_path="report")

    def end_parent(self, parent: str, finished: bool) -> None:
        self.client.set_terminated(parent, status="FINISHED" if finished else "KILLED")

    def close(self) -> None:
        pass


class _Wandb:
    kind, label = "wandb", "W&B"

    def __init__(self, project: str, exp: Experiment) -> None:
        import wandb

        self.wandb, self.exp = wandb, exp
        self.entity, self.project = _split_project(project)
        self.runs: dict[str, Any] = {}  # run id -> the open run of this process

    def where(self) -> str:
        return f"project {self.project} ({_wandb_mode()})"

    def _init(self, run_id: str | None, name: str, job_type: str, config: dict[str, Any],
              tags: list[str]) -> Any:
        wandb = self.wandb
        # The runs' files go with the experiment (offline runs: `wandb sync <exp>/wandb/...`).
        return wandb.init(
            entity=self.entity, project=self.project, id=run_id, resume="allow" if run_id else None,
            name=name, group=self.exp.name, job_type=job_type, config=config, tags=tags,
            dir=str(self.exp.root), reinit="create_new", mode=_wandb_mode(),  # as checked
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True,
                                    init_timeout=60))

    def start_parent(self, settings: dict[str, Any]) -> str:
        run_id = self.wandb.util.generate_id()
        self.runs[run_id] = self._init(run_id, f"{self.exp.name} (sweep)", "sweep",
                                       {k: v for k, v in settings.items() if isinstance(
                                           v, str | int | float | bool | list) or v is None},
                                       [f"experiment={self.exp.name}"[:64]])
        return run_id

    def start_trial(self, t: TrialDir, parent: str | None) -> str:
        run_id = self.wandb.util.generate_id()
        self._open(run_id, t)
        return run_id

    def _open(self, run_id: str, t: TrialDir) -> Any:
        if run_id not in self.runs:
            params = t.params()
            config = {**_public_params(t), "sweep.seed": marks.seed_of(params),
                      "sweep.base": marks.is_base(params), "sweep.experiment": self.exp.name,
                      "sweep.trial": t.name}
            self.runs[run_id] = self._init(run_id, t.name, "trial", config,
                                           [f"experiment={self.exp.name}"[:64],
                                            f"trial={t.name}"[:64]])
        return self.runs[run_id]

    def reopen(self, run_id: str, t: TrialDir) -> None:
        self._open(run_id, t)

    def log(self, run_id: str, rows: Rows) -> None:
        run = self.runs[run_id]
        for step, values, _ in rows:  # W&B needs steps in order: rows are sorted (its own clock)
            run.log(values, step=step)

    def end(self, run_id: str, state: str, reason: str | None) -> None:
        run = self.runs.pop(run_id)
        run.summary["state"] = state
        if reason:
            run.summary["reason"] = str(reason)
        run.tags = (*run.tags, f"state={state}")
        run.finish(exit_code=1 if state == FAILED else 0)

    def pause(self, run_id: str) -> None:
        run = self.runs.pop(run_id, None)
        if run is not None:
            run.finish(exit_code=0)

    def publish(self, parent: str, best_config: Path | None, report: Path | None,
                verdict: str | None) -> None:
        run = self.runs.get(parent) or self._init(parent, f"{self.exp.name} (sweep)", "sweep",
                                                  {}, [f"experiment={self.exp.name}"[:64]])
        self.runs[parent] = run
        if verdict:
            run.summary["verdict"] = verdict
        if best_config is not None:
            art = self.wandb.Artifact(f"{self.exp.name}-best-config", type="config")
            art.add_file(str(best_config))
            run.log_artifact(art)
        if report is not None:
            art = self.wandb.Artifact(f"{self.exp.name}-report", type="report")
            art.add_dir(str(report))
            run.log_artifact(art)

    def end_parent(self, parent: str, finished: bool) -> None:
        run = self.runs.pop(parent, None)
        if run is not None:
            run.finish(exit_code=0 if finished else 1)

    def close(self) -> None:
        # Runs of trials not ended (an interrupted sweep): finished here, continued on resume.
        for run_id in list(self.runs):
            self.runs.pop(run_id).finish()


# ---------------------------------------------------------------------------------------------
# One sweep's trackers in this driver


class Trackers:
    """The trackers of one sweep in this driver process (``for_experiment``). Every public
    method swallows tracker failures: a warning per outage, a retry later."""

    def __init__(self, settings: Any, exp: Experiment) -> None:
        self.settings, self.exp = settings, exp
        self.backends: list[Any] = []
        self.down_until: dict[str, float] = {}
        self.warned: set[str] = set()
        self.dirty: set[str] = set()  # trials with something a tracker did not take yet
        for kind, value in (("mlflow", settings.mlflow), ("wandb", settings.wandb)):
            if value:
                try:
                    self.backends.append(_MLflow(value, exp) if kind == "mlflow"
                                         else _Wandb(value, exp))
                except Exception as e:  # noqa: BLE001 - checked at launch; never fail a sweep
                    _warn(f"{kind} is not usable in this driver ({_words(e)}); not logging to it")

    # -- the experiment's own record (parent run ids) -------------------------------------
    def _state(self) -> dict[str, Any]:
        data = read_json(self.exp.root / STATE_FILE, {})
        return data if isinstance(data, dict) else {}

    def _save_state(self, data: dict[str, Any]) -> None:
        write_json(self.exp.root / STATE_FILE, data)

    def _parent(self, b: Any) -> str:
        data = self._state()
        entry = data.get(b.kind) or {}
        if not entry.get("parent_run_id"):
            entry = {"where": b.where(), "parent_run_id": b.start_parent(self.settings.to_json())}
            data[b.kind] = entry
            self._save_state(data)
        return entry["parent_run_id"]

    # -- guarded calls ----------------------------------------------------------------------
    def _available(self, b: Any) -> bool:
        return time.time() >= self.down_until.get(b.kind, 0.0)

    def _failed(self, b: Any, e: BaseException) -> None:
        self.down_until[b.kind] = time.time() + RETRY_S
        if b.kind not in self.warned:
            self.warned.add(b.kind)
            _warn(f"{b.label} at {b.where()} is not answering ({_words(e)}); trials go on, and "
                  f"what they log is kept in their folders and sent when it answers again "
                  f"(tried every {RETRY_S:g} s)")

    def _recovered(self, b: Any) -> None:
        if b.kind in self.warned:
            self.warned.discard(b.kind)
            _warn(f"{b.label} at {b.where()} answers again: logging resumed")

    # -- syncing trials ---------------------------------------------------------------------
    def sync(self, name: str) -> None:
        """Log what trial ``name``'s folder holds beyond what each tracker took; end its run
        once the folder says it ended. Retries trials a down tracker left behind."""
        if not self.backends:
            return
        self.dirty.add(name)
        for trial in sorted(self.dirty):
            if self._sync_trial(self.exp.trial(trial)):
                self.dirty.discard(trial)

    def _sync_trial(self, t: TrialDir) -> bool:
        """True once every tracker took everything the folder has (so far)."""
        if not t.path.is_dir():
            return True
        done = True
        for b in self.backends:
            if not self._available(b):
                done = False
                continue
            try:
                with _quick_mlflow(CHECK_TIMEOUT_S):
                    self._sync_one(b, t)
                self._recovered(b)
            except Exception as e:  # noqa: BLE001 - a tracker never fails a trial
                self._failed(b, e)
                done = False
        return done

    def _sync_one(self, b: Any, t: TrialDir) -> None:
        data = _marks(t)
        entry = data.get(b.kind) or {}
        if entry.get("ended"):
            return
        status = t.status()
        state = status.get("state")
        ended = state in ENDED
        evaluated = [int(r["step"]) for r in t.evaluated() if "step" in r]
        # Steps in order (W&B drops a step below one it has): the training curve up to the last
        # recorded evaluation while the trial runs, all of it once it ended.
        upto = None if ended else (max(evaluated) if evaluated else -1)
        rows, train_step, eval_step = trial_rows(t, train_after=entry.get("train_step", -1),
                                                 eval_after=entry.get("eval_step", -1), upto=upto)
        if not entry.get("run_id"):
            entry = {"run_id": b.start_trial(t, self._parent(b)), "train_step": -1, "eval_step": -1}
            data[b.kind] = entry
            write_json(t.path / STATE_FILE, data)
        elif rows or ended or state not in (INTERRUPTED, None):
            b.reopen(entry["run_id"], t)  # (a W&B run is opened again only to take something)
        if rows:
            b.log(entry["run_id"], rows)
        entry.update(train_step=train_step, eval_step=eval_step)
        if ended:
            b.end(entry["run_id"], state, status.get("reason"))
            entry["ended"] = state
        elif state == INTERRUPTED:
            b.pause(entry["run_id"])
        data[b.kind] = entry
        write_json(t.path / STATE_FILE, data)

    def finish(self, *, wait: bool = True) -> None:
        """At the sweep's end (after Ray's fit and the folders' reconciliation): bring every
        trial's run in line with its folder; a tracker that is down is tried ``FINAL_TRIES``
        times before the sweep goes on without it (`sweep resume` sends the rest)."""
        if not self.backends:
            return
        self.dirty.update(t.name for t in self.exp.trials())
        for attempt in range(FINAL_TRIES if wait else 1):
            for trial in sorted(self.dirty):
                if self._sync_trial(self.exp.trial(trial)):
                    self.dirty.discard(trial)
            if not self.dirty:
                return
            if attempt + 1 < (FINAL_TRIES if wait else 1):
                time.sleep(max(0.0, min(self.down_until.values(), default=0.0) - time.time()))
        _warn(f"{len(self.dirty)} trial(s) are not fully logged to "
              f"{', '.join(b.label for b in self.backends if not self._available(b))}: their "
              f"folders keep it; `sweep resume {self.exp.name}` sends it once the tracker answers")

    def publish(self, report: Path | None, verdict: str | None = None, *, finished: bool) -> None:
        """The parent run: the report folder and its best config as artifacts and the verdict
        (if a report was written); then end it and close the trackers."""
        for b in self.backends:
            for _ in range(FINAL_TRIES):
                if not self._available(b):
                    time.sleep(max(0.0, self.down_until[b.kind] - time.time()))
                try:
                    with _quick_mlflow(CHECK_TIMEOUT_S):
                        parent = self._parent(b)
                        if report is not None and report.is_dir():
                            best = report / "best" / "pipeline.config"
                            b.publish(parent, best if best.is_file() else None, report, verdict)
                        b.end_parent(parent, finished)
                    self._recovered(b)
                    break
                except Exception as e:  # noqa: BLE001 - a tracker never fails a sweep
                    self._failed(b, e)
            try:
                b.close()
            except Exception as e:  # noqa: BLE001
                _warn(f"{b.label}: closing failed ({_words(e)})")
        _ACTIVE.pop(self.exp.root, None)

    def close(self) -> None:
        """End this driver's use of the trackers without publishing (an interrupted or failed
        sweep): open runs are closed, and continued by `sweep resume`."""
        for b in self.backends:
            try:
                b.close()
            except Exception as e:  # noqa: BLE001
                _warn(f"{b.label}: closing failed ({_words(e)})")
        _ACTIVE.pop(self.exp.root, None)


_ACTIVE: dict[Path, Trackers] = {}


def for_experiment(settings: Any, root: Path) -> Trackers:
    """This driver's trackers of the sweep at ``root`` (one per process: the Ray Tune callback,
    restored by Ray on resume, and the CLI's end of the sweep share it)."""
    if root not in _ACTIVE:
        _ACTIVE[root] = Trackers(settings, Experiment(root))
    return _ACTIVE[root]


def close_all() -> None:
    """End this process's use of every sweep's trackers (open runs closed; nothing lost:
    the folders keep what was not sent)."""
    for t in list(_ACTIVE.values()):
        t.close()


def enabled(settings: Any) -> bool:
    return bool(getattr(settings, "mlflow", None) or getattr(settings, "wandb", None))


def _warn(text: str) -> None:
    print(f"sweep: {text}", file=sys.stderr, flush=True)


def describe(settings: Any) -> list[str]:
    """One line per tracker, for the sweep's opening lines."""
    out = []
    if settings.mlflow:
        out.append(f"MLflow:        {settings.mlflow} (experiment {settings.name})")
    if settings.wandb:
        out.append(f"W&B:           {settings.wandb} (group {settings.name}, {_wandb_mode()})")
    return out
