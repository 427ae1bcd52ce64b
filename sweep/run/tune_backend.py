"""Ray Tune + Optuna: the sweep's Ray backend (with ``sweep.run.schedulers``, the only modules
that import Ray, lazily).

A sweep is a ``ray.tune.Tuner`` whose trainable wraps ``TrialRunner``, whose searcher is
Ray's ``OptunaSearch`` (define-by-run over the search space, the study in an RDB storage),
and whose scheduler is FIFO, ASHA or median stopping on the step axis.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.core import errors, interrupt
from sweep.core.experiment import Experiment
from sweep.odapi.metrics import result_key
from sweep.run import ray_node, trackers
from sweep.run.settings import SweepSettings
from sweep.run.trial import TrialRunner, TrialSpec, mark_failed
from sweep.search import marks, samplers

# A result that lacks the metric (a failed trial's last word) must not be an error in Ray.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Trials checkpoint (a few bytes) after every evaluation; Ray's warning about it is noise here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Ray's TensorBoard logger would add a second HParams experiment per Ray trial (under ray/);
# sweep.run.hparams writes one for the sweep, linked to the OD API curves. JSON and CSV stay.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


# Ray hands a finished trial's actor to the next trial (SweepTrainable.reset_config) instead of
# starting a new actor process per trial. A switch for benchmarks/control_plane.py, which
# measures what it saves.
REUSE_ACTORS = True


def make_sampler(settings: SweepSettings, space: Any = None, num_points: int = 0,
                 **what_if: Any):  # noqa: ANN201
    """The sweep's Optuna sampler from its settings (``sweep.search.samplers`` builds it);
    ``what_if`` (``startup``) is the replay benchmark's (`sweep run` passes none)."""
    return samplers.make_sampler(settings.sampler, seed=settings.seed,
                                 num_trials=settings.num_trials,
                                 max_concurrent=settings.max_concurrent, space=space,
                                 num_points=num_points, **what_if)


def make_scheduler(settings: SweepSettings, max_steps: int, space: Any = None,
                   **what_if: Any):  # noqa: ANN201
    """The sweep's scheduler from its settings (``sweep.run.schedulers`` builds it);
    ``what_if`` (``grace_period``, ``reduction_factor``, ``brackets``) is the replay
    benchmark's (`sweep run` passes none)."""
    from sweep.run import schedulers

    return schedulers.make_scheduler(
        settings.scheduler, metric=result_key(settings.metrics[0]), mode=settings.modes[0],
        max_steps=max_steps, eval_every=settings.eval_every, seed=settings.seed, space=space,
        perturbation_interval=settings.perturbation_interval, pbt_sync=settings.pbt_sync,
        **what_if)


def _trainable_class():  # noqa: ANN202 - a Ray Trainable subclass, built lazily
    import ray
    from ray import tune

    class SweepTrainable(tune.Trainable):
        """One OD API trial; Ray calls step() until done, stop() to end it early, and
        reset_config() to hand this actor the next trial (actor reuse, see run_sweep)."""

        def setup(self, config: dict[str, Any], spec: TrialSpec | None = None) -> None:
            gpu_ids = [str(g) for g in ray.get_gpu_ids()]
            if spec.space is not None:  # PBT adds every mutable name to every config
                from sweep.search import pbt

                config = pbt.active(spec.space, config)
            # A confirmation run has its own name (sweep.run.confirm): confirming again finds
            # its folder and continues it. Ray fills the keys other runs have with None.
            confirm = marks.confirm_of(config)
            if confirm:
                config = {k: v for k, v in config.items() if v is not None}
            name = (confirm or {}).get("name") or self.trial_id
            self.runner = TrialRunner(spec, name, config, gpu_ids=gpu_ids,
                                      node=ray_node.this_node)
            self.started = False  # Ray restores a checkpoint (load_checkpoint) after setup

        def step(self) -> dict[str, Any]:
            if not self.started:
                self.started = True
                self.runner.start()
            return self.runner.next_result()

        def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
            # The OD API's own checkpoints live in the trial folder; this names the one
            # evaluated last, which PBT hands to the trials that clone this one.
            step = self.runner.reported_step
            names = [r["checkpoint"] for r in self.runner.dir.evaluated()
                     if int(r.get("step", -1)) == step and "checkpoint" in r]
            return {"trial": self.trial_id, "reported_step": step, "step": step,
                    "checkpoint": names[-1] if names else None}

        def load_checkpoint(self, checkpoint: dict[str, Any] | str | None) -> None:
            # Our own checkpoint: start() resumes from the trial folder. Another trial's:
            # PBT's exploit, continue from its OD API checkpoint with our perturbed config.
            if (isinstance(checkpoint, dict)
                    and checkpoint.get("trial") not in (None, self.trial_id)):
                self.runner.exploit(checkpoint["trial"], int(checkpoint["step"]),
                                    checkpoint["checkpoint"])

        def cleanup(self) -> None:
            self.runner.stop()

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            # Ray keeps a finished or early-stopped trial's actor for the next trial without
            # stopping it: end that trial here (its processes, its status) before the next
            # one starts. self.trial_id is already the new trial's (Trainable.reset).
            self.runner.stop()
            self.setup(new_config)  # tune.with_parameters' setup passes the spec again
            return True

    return SweepTrainable


def _checkpoint_config(settings: SweepSettings):  # noqa: ANN202
    """Ray checkpoints only under PBT/PB2, which clone from a trial's last saved one. All are
    kept: each is a few hundred bytes (save_checkpoint names an OD API checkpoint in the trial
    folder), and a clone that has not saved since its exploit is restored, after a driver's
    death, from its source's checkpoint of then, which keeping the last 4 had deleted ("Could
    not recover from checkpoint as it does not exist on storage anymore": the resumed sweep
    failed that trial). Otherwise the trial folder is the whole state (a restarted or resumed
    trial goes on from it), and a Ray checkpoint per result would also make Ray rewrite the
    whole experiment state after every result: O(trials) each, slow at 1000s."""
    from ray import tune

    if settings.population_based:
        return tune.CheckpointConfig(num_to_keep=None, checkpoint_frequency=1)
    return tune.CheckpointConfig(checkpoint_frequency=0, checkpoint_at_end=False)


def _pbt_population(settings: SweepSettings, space: Any, points: list[dict[str, Any]],  # noqa: ANN202
                    base_point: dict[str, Any] | None = None):
    """PBT's initial population (Ray allows no searcher beside it): the known points first,
    then configs drawn at random from the space, ``--num-trials`` in all, each with its seed
    (and the base point with the base marker: sweep.search.marks)."""
    from ray.tune.search import BasicVariantGenerator

    from sweep.search.space import random_samples, replay

    known = [replay(space, p) for p in points[:settings.num_trials]]
    drawn = random_samples(space, settings.num_trials - len(known), seed=settings.seed or 0)
    population = [{**c, marks.SEED: marks.trial_seed(settings.seed, i),
                   **({marks.BASE: True} if i < len(known) and points[i] == base_point else {})}
                  for i, c in enumerate(known + drawn)]
    # Ray takes preset configs only for keys of param_space: every key, unset by default (a
    # parameter under another choice stays None and is dropped by pbt.active in the trial).
    keys = {k for config in population for k in config}
    return (BasicVariantGenerator(points_to_evaluate=population,
                                  max_concurrent=settings.max_concurrent),
            dict.fromkeys(sorted(keys)))


def _pbt_study_recorder(settings: SweepSettings, exp: Experiment, space: Any):  # noqa: ANN202
    """Under PBT no Optuna searcher runs, yet the report and optuna-dashboard read the study:
    record each finished trial there (its final parameters and last reported value)."""
    import optuna
    from ray.tune import Callback

    url, key = settings.storage_url(), result_key(settings.metrics[0])
    name = settings.study_name or settings.name
    direction = "maximize" if settings.modes[0] == "max" else "minimize"
    optuna.create_study(study_name=name, storage=url, direction=direction,
                        load_if_exists=True)

    class PbtStudy(Callback):
        def _record(self, trial, result: dict | None) -> None:  # noqa: ANN001
            from optuna.trial import TrialState

            from sweep.search import pbt

            study = optuna.load_study(study_name=name, storage=url)
            if any(t.user_attrs.get("ray_trial_id") == trial.trial_id for t in study.trials):
                return
            params = pbt.active(space, exp.trial(trial.trial_id).params() or trial.config)
            study.enqueue_trial({k: v for k, v in params.items()
                                 if k in {p.name for p, _ in space.walk() if p.sampled}})
            ot = study.ask()
            space.define_by_run(ot)
            ot.set_user_attr("ray_trial_id", trial.trial_id)
            value = (result or {}).get(key)
            failed = (result or {}).get("sweep_failed")
            if failed or not isinstance(value, int | float) or value != value:
                ot.set_user_attr("failure", failed or "no result")
                study.tell(ot, state=TrialState.FAIL)
            else:
                study.tell(ot, float(value))

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            self._record(trial, trial.last_result)

        def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
            self._record(trial, {"sweep_failed": errors.ACTOR_DIED})

    return PbtStudy()


ACTOR_DETAIL = ("Ray gave up on the trial's actor (its process or node died, or the trainable "
                "raised); see the driver's output and Ray's logs")


def _searcher_class(exp: Experiment):  # noqa: ANN202
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class SweepSearch(OptunaSearch):
        """OptunaSearch that records failures (with their reason) and early stops in the
        study as such."""

        def suggest(self, trial_id: str) -> dict | None:
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None:
                ot_trial.set_user_attr("ray_trial_id", trial_id)
            return config

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            if trial_id in self._completed_trials or ot_trial is None:
                return super().on_trial_complete(trial_id, result, error)
            if _told(self._ot_study, ot_trial):
                # reconcile() recorded it from its folder when the sweep was interrupted; the
                # resumed run reports the same end again.
                self._completed_trials.add(trial_id)
                return None
            failed = (result or {}).get("sweep_failed")
            if error and not failed:  # Ray's own give-up: the folder says why, or it is ours
                failed = mark_failed(exp.trial(trial_id), errors.ACTOR_DIED, ACTOR_DETAIL)
            if failed:
                ot_trial.set_user_attr("failure", failed)
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
                self._completed_trials.add(trial_id)
                return None
            if result and not result.get("trained_to_end", False):
                ot_trial.set_user_attr("stopped_early", True)
                if not isinstance(self.metric, list):
                    # Ray hands the stopping result to on_trial_complete only: record it, so
                    # the pruned trial carries its last value for the sampler.
                    value = result.get(self.metric)
                    if isinstance(value, int | float) and value == value:
                        ot_trial.report(float(value), int(result.get("training_iteration", 1)))
                    self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
                    self._completed_trials.add(trial_id)
                    return None
            return super().on_trial_complete(trial_id, result, error)

    return SweepSearch


def _told(study: Any, ot_trial: Any) -> bool:
    """Whether the study already holds this trial's end."""
    try:
        return study._storage.get_trial(ot_trial._trial_id).state.is_finished()
    except Exception:  # noqa: BLE001 - not knowing means telling, as before
        return False


def _callbacks(settings: SweepSettings, exp: Experiment):  # noqa: ANN202
    from ray.tune import Callback
    from ray.tune.stopper import Stopper

    class Progress(Callback):
        """One line per event: trials done/total, best so far, elapsed and ETA.

        Counts come from Ray's trial list, so a resumed sweep counts the trials it restored;
        elapsed and ETA are of this run (the pickled callback is reused by Tuner.restore).
        """

        def __init__(self) -> None:
            self.t0 = time.time()
            self.done = 0
            self.done_here = 0  # trials that ended in this run (the ETA's rate)
            self.best: float | None = None
            self.key = result_key(settings.metrics[0])
            self.mode = settings.modes[0]

        def setup(self, **info: Any) -> None:
            from sweep.core import interrupt  # by name: this class is pickled by value

            self.t0 = time.time()
            self.done_here = 0
            # Ray Tune's SIGINT handler is in place now: SIGINT and SIGTERM go through it.
            interrupt.hand_to_ray(exp.stop_path)

        def _count(self, trials: list) -> None:
            self.done = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
            for t in trials:
                v = (t.last_result or {}).get(self.key)
                if isinstance(v, float) and v == v and (
                        self.best is None or (v > self.best if self.mode == "max" else v < self.best)):
                    self.best = v

        def _line(self, what: str) -> None:
            elapsed = time.time() - self.t0
            eta = (elapsed / self.done_here * (settings.num_trials - self.done)
                   if self.done_here else None)
            best = f"{self.best:.4f}" if self.best is not None else "-"
            print(f"[sweep {time.strftime('%H:%M:%S')}] {self.done}/{settings.num_trials} trials "
                  f"done | best {self.key} {best} | elapsed {elapsed / 60:.1f} min"
                  f" | ETA {'-' if eta is None else f'{eta / 60:.1f} min'} | {what}", flush=True)

        def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001
            self._count(trials)
            self._line(f"{trial.trial_id} started {_short(trial.config)}")

        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
            v = result.get(self.key)
            if isinstance(v, float) and v == v and (
                    self.best is None or (v > self.best if self.mode == "max" else v < self.best)):
                self.best = v
            if result.get("sweep_failed"):
                self._line(f"{trial.trial_id} FAILED: {result['sweep_failed']}")
            else:
                self._line(f"{trial.trial_id} step {result.get('step')} "
                           f"total_loss={_fmt(result.get('total_loss'))} mAP={_fmt(result.get('mAP'))}")

        def _finished(self, trials, trial) -> None:  # noqa: ANN001
            self.done_here += 1
            self._count(trials)
            self.done = max(self.done, sum(1 for t in trials if t.status in ("TERMINATED", "ERROR")
                                           or t is trial))

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            self._finished(trials, trial)
            self._line(f"{trial.trial_id} finished")

        def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
            reason = mark_failed(exp.trial(trial.trial_id), errors.ACTOR_DIED, ACTOR_DETAIL)
            budget.errored(trial.trial_id)
            self._finished(trials, trial)
            self._line(f"{trial.trial_id} FAILED: {reason} (see {exp.trial(trial.trial_id).path})")

    class Budget(Stopper):
        """Stops the sweep after N consecutive failed trials, a total train-step budget or
        its time budget (the sweep's wall time over all its runs, experiment.json's
        ``wall_time_s`` holding the earlier ones). A spent budget writes the experiment's
        stop file, so each trial stopped with it says why (TrialRunner.stop)."""

        def __init__(self) -> None:
            self.streak = 0
            self.steps: dict[str, int] = {}
            self.reason: str | None = None
            self.pid = os.getpid()
            self.deadline = self._deadline()

        @staticmethod
        def _deadline() -> float | None:
            if not settings.time_budget_s:
                return None
            from sweep.core.experiment import read_json

            earlier = (read_json(exp.settings_path, {}) or {}).get("wall_time_s") or 0
            return time.time() + settings.time_budget_s - float(earlier)

        def _seed(self) -> None:
            """Tune.restore (a new driver process) reuses this object as pickled at the start:
            take what the trial folders say (steps trained, failures in a row) first."""
            self.pid = os.getpid()
            self.deadline = self._deadline()
            for t in exp.trials():
                st = t.status()
                if st.get("last_step") is not None:
                    self.steps.setdefault(t.name, int(st["last_step"]))
                if st.get("state") == "FAILED":
                    self.streak += 1
                elif st.get("state") in ("COMPLETED", "STOPPED"):
                    self.streak = 0

        def __call__(self, trial_id: str, result: dict) -> bool:
            if self.pid != os.getpid():
                self._seed()
            if result.get("sweep_failed"):
                self.streak += 1
            elif result.get("done"):
                self.streak = 0
            if "step" in result:
                self.steps[trial_id] = int(result["step"])
            self._check()
            return False

        def errored(self, trial_id: str) -> None:
            """A trial Ray gave up on (no result of ours) fails like any other."""
            if self.pid != os.getpid():
                self._seed()
            self.streak += 1
            self._check()

        def _check(self) -> None:
            if self.streak >= settings.max_consecutive_failures:
                self.reason = (f"{self.streak} trials failed in a row; the sweep stops. Look at "
                               f"the last trials' train.log / eval.log under {exp.trials_dir}")
            if step_budget_spent(self.steps, settings.step_budget):
                self._spent(f"the step budget ({settings.step_budget} train steps) is spent")
            if self.deadline is not None and time.time() >= self.deadline:
                self._spent(f"the time budget ({settings.time_budget_s / 60:g} min) is spent")

        def _spent(self, reason: str) -> None:
            self.reason = self.reason or reason
            if not exp.stop_path.exists():  # trials stopped from now on say why
                from sweep.core.experiment import write_json

                write_json(exp.stop_path, {"kind": "budget", "reason": self.reason,
                                           "at": time.time()})

        def stop_all(self) -> bool:
            # Ray asks every loop, results or not: the time budget is checked here too.
            if self.pid != os.getpid():
                self._seed()
            self._check()
            return self.reason is not None

    budget = Budget()
    return Progress(), budget


def step_budget_spent(steps: Mapping[str, int], budget: int | None) -> bool:
    """`--step-budget`'s rule: the trials' last reported steps add up to the budget (then the
    whole sweep stops). The replay benchmark applies the same rule."""
    return bool(budget) and sum(steps.values()) >= budget


def _tracking_callbacks(settings: SweepSettings, exp: Experiment) -> list:
    """The experiment trackers' callback (sweep.run.trackers), if --mlflow or --wandb: each
    trial event syncs that trial's run with its folder, in this driver."""
    if not trackers.enabled(settings):
        return []
    from ray.tune import Callback

    root = exp.root

    class Tracking(Callback):
        """Pickled with Ray's state and restored on resume: it holds the settings only; the
        trackers (clients, open runs) are this process's (trackers.for_experiment)."""

        def _sync(self, trial) -> None:  # noqa: ANN001
            from sweep.run import trackers  # by name: this class is pickled by value
            from sweep.search import marks

            name = (marks.confirm_of(trial.config) or {}).get("name") or trial.trial_id
            trackers.for_experiment(settings, root).sync(name)

        def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001
            self._sync(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
            self._sync(trial)

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            self._sync(trial)

        def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
            self._sync(trial)

    return [Tracking()]


def _short(config: dict) -> str:
    # Last path component, unless two keys share it (learning_rate vs <schedule>.learning_rate).
    last = [k.split(".")[-1] for k in config]
    items = [f"{k.split('.')[-1] if last.count(k.split('.')[-1]) == 1 else k}={_fmt(v)}"
             for k, v in sorted(config.items())]
    return ", ".join(items)[:160]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass
class Plan:
    """What a sweep needs that can be built and checked before Ray starts or a folder is
    written: the sampler and scheduler (None on resume: Ray restores its own), and the
    study storage opened (None for a new run's default SQLite file, made in the folder)."""

    sampler: Any = None
    scheduler: Any = None
    storage: Any = None


def preflight(settings: SweepSettings, space: Any, max_steps: int, *,
              resume: bool = False) -> Plan:
    """Build and check everything that does not need Ray running; ``ConfigError`` if bad."""
    plan = Plan()
    if resume:
        from ray import tune

        exp = Experiment(settings.experiment_root)
        if not tune.Tuner.can_restore(str(exp.ray_dir)):
            # A new Tuner here would sample the known points again into the same study.
            raise errors.ConfigError(errors.Problem(
                "sweep resume", str(exp.ray_dir), "Ray Tune saved no experiment state before the "
                "driver stopped, so there is nothing to resume",
                f"start anew: sweep run ... --name {settings.name} --overwrite"))
    else:
        plan.sampler = make_sampler(settings, space)  # built to refuse a bad one now
        plan.scheduler = make_scheduler(settings, max_steps, space)
    if resume or settings.study_url:
        plan.storage = open_study_storage(settings, resume=resume)
    trackers.check(settings, where=str(Experiment(settings.experiment_root).settings_path)
                   if resume else "command line")
    return plan


def open_study_storage(settings: SweepSettings, *, resume: bool) -> Any:
    """Open (and on resume, load the study from) the Optuna storage; ``ConfigError`` naming
    the URL or file and the database's own words if it cannot."""
    import optuna

    url = settings.storage_url()
    study_name = settings.study_name or settings.name
    key = "--study-url" if settings.study_url else "study.db"
    where = "command line" if settings.study_url else str(settings.experiment_root)
    if resume and not settings.study_url:
        _check_study_file(settings, Experiment(settings.experiment_root).study_db)
    try:
        storage = optuna.storages.RDBStorage(url)
        if resume:
            optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as e:
        raise errors.ConfigError(errors.Problem(
            where, key, f"the study '{study_name}' is not in {_safe_url(url)}",
            "resume with the storage the sweep was started with, or start anew with "
            f"`sweep run ... --name {settings.name} --overwrite`")) from e
    except Exception as e:  # noqa: BLE001 - SQLAlchemy/driver errors vary by database
        words = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        fix = ("give a SQLAlchemy URL the database answers, e.g. sqlite:////abs/path/study.db "
               "or postgresql+psycopg://user@host/db (is the server up, the driver installed?)"
               if settings.study_url else
               "the study database is damaged: restore it from a copy, or start anew with "
               f"`sweep run ... --name {settings.name} --overwrite`")
        raise errors.ConfigError(errors.Problem(
            where, key, f"cannot open the Optuna study storage {_safe_url(url)}: {words}",
            fix)) from e
    return storage


def _check_study_file(settings: SweepSettings, path: Path) -> None:
    """Read-only look at a resumed experiment's study.db (sweep.core.experiment)."""
    from sweep.core.experiment import study_file_problem

    problem = study_file_problem(path)
    if problem:
        raise errors.ConfigError(errors.Problem(
            str(path), "", f"the sweep's Optuna study database {problem}", "restore study.db "
            f"from a copy, or start anew with `sweep run ... --name {settings.name} "
            "--overwrite`; nothing was changed"))


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL has no password to hide
        return url[:120]


STARTUP_ATTEMPTS = 3
PROBE_TIMEOUT_S = 10.0


def _probe_address(address: str) -> None:
    """Refuse a host:port nothing listens on: ray.init would retry it for minutes."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # 'auto', or a ray:// client address: Ray answers these quickly itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise errors.ConfigError(errors.Problem(
            "command line", "--address", f"no Ray cluster answers at {address} "
            f"({e.strerror or e})", "start one with `ray start --head` and give its address "
            "(host:port, or 'auto' on a node of the cluster), or leave --address out for an "
            "embedded local Ray")) from e
LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """While an embedded single-machine Ray starts, make it listen on loopback only (GCS,
    raylet, workers, agents, metrics): nothing on this machine's network addresses. Ray binds
    its servers to the node IP, and takes the loopback IP as the node IP when it believes
    clusters are off (as on macOS); the processes it starts read the same switch from the
    environment. Restored afterwards, so nothing else in this process inherits it."""
    from ray._private import ray_constants

    name = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    saved_env, saved_flag = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env


_STARTED_RAY = False  # whether init_ray started or joined the Ray that stop_ray ends
JOB_ENV = "SWEEP_JOB_ENV"


def job_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's environment variables named in ``SWEEP_JOB_ENV`` (comma-separated names, a
    trailing ``*`` for a prefix, e.g. ``TF_CPP_MIN_LOG_LEVEL,WANDB_*``). A Ray that was already
    running (``--address``: a cluster, or one Ray many sweeps share) started its workers with
    its own environment, not this driver's: these reach the trials' jobs through the sweep's
    Ray job (its runtime_env), on every node."""
    environ = os.environ if environ is None else environ
    patterns = [p.strip() for p in environ.get(JOB_ENV, "").split(",") if p.strip()]
    return {k: v for k, v in environ.items()
            if any(k.startswith(p[:-1]) if p.endswith("*") else k == p for p in patterns)}


def init_ray(settings: SweepSettings) -> str | None:
    """Connect to ``--address`` or start an embedded local Ray; returns the dashboard URL.
    A Ray already up in this process (a test's, shared by many sweeps) is used as it is."""
    global _STARTED_RAY
    import ray

    if ray.is_initialized():
        return None
    _STARTED_RAY = True
    # Workers must import this package the way the driver does.
    pkg_root = str(Path(__file__).resolve().parents[2])
    env = {"env_vars": {**job_env(), "PYTHONPATH": os.pathsep.join(
        p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p)}}
    if settings.address:
        _probe_address(settings.address)
        try:
            ctx = ray.init(address=settings.address, runtime_env=env, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise errors.ConfigError(errors.Problem(
                "command line", "--address", f"cannot connect to a Ray cluster at "
                f"{settings.address!r}: {str(e).splitlines()[0][:200] if str(e) else e!r}",
                "start one with `ray start --head` and give its address (host:port or 'auto'), "
                "or leave --address out for an embedded local Ray")) from e
        try:
            settings.check_cluster(ray.nodes())
        except errors.ConfigError:
            ray.shutdown()
            raise
    else:
        # "local": always a new Ray of our own, even if `ray start` left a cluster running here
        # (ray.init() with no address would join that one).
        for attempt in range(1, STARTUP_ATTEMPTS + 1):
            try:
                with _loopback_only():
                    ctx = ray.init(address="local", _node_ip_address=LOOPBACK,
                                   num_cpus=os.cpu_count(), num_gpus=settings.declare_gpus,
                                   include_dashboard=settings.dashboard,
                                   dashboard_host=settings.dashboard_host, runtime_env=env,
                                   log_to_driver=False)
                break
            except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
                # On a loaded machine the raylet can give up on its agents (slow Python start-up)
                # and abort: "The current node timed out during startup". A new start works.
                if "timed out during startup" not in str(e) or attempt == STARTUP_ATTEMPTS:
                    raise
                print(f"sweep: Ray did not start ({e}); trying again ({attempt + 1}/"
                      f"{STARTUP_ATTEMPTS})", file=sys.stderr, flush=True)
                ray.shutdown()
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url and not str(url).startswith("http") else url


def stop_ray() -> None:
    """Shut down the Ray this driver started or joined (not one it found running)."""
    global _STARTED_RAY
    import ray

    if _STARTED_RAY:
        ray.shutdown()
        _STARTED_RAY = False


def trial_spec(settings: SweepSettings, exp: Experiment, space: Any) -> TrialSpec:
    """What every trial of the sweep shares."""
    return TrialSpec(experiment_root=exp.root, metric=settings.metrics[0], mode=settings.modes[0],
                     eval_every=settings.eval_every, keep_checkpoints=settings.keep_checkpoints,
                     threads=max(1, int(settings.cpus_per_trial)),
                     max_failures=settings.max_failures,
                     stall_s=settings.stall_minutes * 60, eval_device=settings.eval_device,
                     graph_optimizer=settings.graph_optimizer,
                     deterministic=settings.deterministic,
                     run_id=f"{socket.gethostname()}-{os.getpid()}-{time.time():.0f}",
                     perturb=space.perturb if settings.population_based else (),
                     space=space if settings.population_based else None,
                     # A test hook: tests run Ray-level logic with a fast stand-in worker.
                     worker_module=os.environ.get("SWEEP_WORKER_MODULE", "sweep.odapi.worker"),
                     pause_at_rungs=settings.scheduler in ("asha", "median", "pbt", "pb2"),
                     cwd=Path(settings.cwd))


def _trainable(settings: SweepSettings, spec: TrialSpec):  # noqa: ANN202 - a Ray trainable
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(_trainable_class(), spec=spec),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})


def run_confirmations(settings: SweepSettings, space: Any, configs: list[dict[str, Any]], *,
                      url: str | None = None) -> dict[str, Any]:
    """Run the confirmation trials ``configs`` (sweep.run.confirm) to their end: FIFO, the
    sweep's concurrency and resources, no sampler (they never feed the study). Ray's state
    goes to ``ray-confirm/``; the trial folders are the truth, so a later run of the same
    configs skips the finished ones."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    own_driver_staging()
    exp = Experiment(settings.experiment_root)
    spec = trial_spec(settings, exp, space)
    # Ray takes a preset config's values only for keys of param_space, nested ones included.
    skeleton: dict[str, Any] = {}
    for c in configs:
        for k, v in c.items():
            skeleton[k] = ({**(skeleton.get(k) or {}), **dict.fromkeys(v)}
                           if isinstance(v, dict) else None)
    progress, _ = _callbacks(settings, exp)
    tuner = tune.Tuner(
        _trainable(settings, spec), param_space=skeleton,
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=configs,
                                             max_concurrent=settings.max_concurrent),
            num_samples=len(configs), trial_dirname_creator=lambda t: t.trial_id,
            reuse_actors=REUSE_ACTORS),
        run_config=tune.RunConfig(
            name="ray-confirm", storage_path=str(exp.root), verbose=0,
            callbacks=[progress, *_tracking_callbacks(settings, exp)],
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=0,
                                                    checkpoint_at_end=False)))
    if url:
        print(f"Ray dashboard: {url}", flush=True)
    quiet_ray_logs()
    interrupt.check()
    grid = tuner.fit()
    for c in configs:  # nothing may be left RUNNING in a folder
        t = exp.trial(c[marks.CONFIRM]["name"])
        if t.status().get("state") in ("RUNNING", "PENDING"):
            mark_failed(t, LOST, "its process ended without a word (driver or node killed)")
    if trackers.enabled(settings):
        trackers.for_experiment(settings, exp.root).finish()
    return {"errors": len(grid.errors)}


def own_driver_staging() -> None:
    """Give this driver its own Ray Tune staging folder. Ray Tune writes a driver's experiment
    state into <Ray session>/artifacts/<the second the Tuner was made>/<experiment dir name>/
    and copies that folder to the experiment's storage. Every sweep's experiment dir is named
    "ray" (``Experiment.ray_dir``), so two drivers on one Ray cluster that made their Tuners
    in the same second shared the folder, and each copied the other's state into its own
    experiment: a resume then restored another sweep's trials (5 sweeps started together on
    one Ray, 2026-12-01). The stamp gets this process's id. Idempotent."""
    from ray.tune import utils

    if getattr(utils.date_str, "_sweep_pid", None) == os.getpid():
        return
    plain = getattr(utils.date_str, "_sweep_plain", utils.date_str)

    def stamped() -> str:
        return f"{plain()}-{os.getpid()}"

    stamped._sweep_pid = os.getpid()  # type: ignore[attr-defined]
    stamped._sweep_plain = plain  # type: ignore[attr-defined]
    utils.date_str = stamped


def run_sweep(settings: SweepSettings, space: Any, points: list[dict[str, Any]], max_steps: int,
              *, plan: Plan, url: str | None, resume: bool = False,
              base_point: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep to its end on the Ray ``init_ray`` started; returns a summary
    for the CLI. Shuts Ray down at the end. ``base_point``: the known point of the base
    config's own values (its trial is marked the base: sweep.search.marks)."""
    from ray import tune

    from sweep.search.study_storage import PasswordFreeRDBStorage

    own_driver_staging()
    exp = Experiment(settings.experiment_root)
    study_name = settings.to_json()["study_name"]
    spec = trial_spec(settings, exp, space)
    trainable = _trainable(settings, spec)
    progress, budget = _callbacks(settings, exp)
    # Ray is the CLI's (init_ray / stop_ray): a test's shared Ray outlives a sweep.
    if url:
        print(f"Ray dashboard: {url}", flush=True)
    print(f"TensorBoard:   tensorboard --logdir {exp.root}", flush=True)
    for line in trackers.describe(settings):
        print(line, flush=True)
    try:
        from sweep.run import hparams

        hparams.write_experiment(exp.root, space, description=f"sweep {settings.name}")
    except Exception as e:  # noqa: BLE001 - TensorBoard extras never stop a sweep
        print(f"sweep: could not write the TensorBoard HParams experiment: {e}",
              file=sys.stderr)
    run_config = tune.RunConfig(
        name="ray", storage_path=str(exp.root), verbose=0,
        callbacks=[progress] + ([_pbt_study_recorder(settings, exp, space)]
                                if settings.population_based else [])
        + _tracking_callbacks(settings, exp),
        stop=budget,
        # Ray restarts a trial whose actor died; the runner counts those restarts and its
        # own process restarts against the same --max-failures (TrialSpec.run_id).
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=_checkpoint_config(settings),
    )
    ray_dir = exp.ray_dir
    quiet_ray_logs()  # before Tuner.restore, which builds a result grid of its own
    if resume:
        tuner = tune.Tuner.restore(str(ray_dir), trainable=trainable,
                                   resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        metric_keys = [result_key(m) for m in settings.metrics]
        param_space = None
        if settings.population_based:
            searcher, param_space = _pbt_population(settings, space, points, base_point)
        else:
            points = samplers.known_points(points, settings.num_trials, space=space,
                                         sampler=settings.sampler)
            searcher = _searcher_class(exp)(
                space=marks.MarkedDefineByRun(
                    space, settings.seed,
                    base_point if base_point is not None and base_point in points else None),
                metric=metric_keys if settings.multi_objective else metric_keys[0],
                mode=settings.modes if settings.multi_objective else settings.modes[0],
                points_to_evaluate=points or None,
                sampler=make_sampler(settings, space, len(points)),
                study_name=study_name,
                storage=PasswordFreeRDBStorage(settings.storage_url()),
            )
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=plan.scheduler,
                num_samples=settings.num_trials,
                # PBT's population generator limits concurrency itself.
                max_concurrent_trials=(None if settings.population_based
                                       else settings.max_concurrent),
                # --time-budget is the Budget stopper's (a budget, with its message and
                # trial state), not Ray's time_budget_s (a stop like the scheduler's).
                trial_dirname_creator=lambda t: t.trial_id,
                # The next trial takes over a finished trial's Ray actor (reset_config) instead
                # of a new actor process per trial. Not under PBT, whose exploit would reset a
                # live trial's actor in place; there each clone gets a fresh actor.
                reuse_actors=REUSE_ACTORS and not settings.population_based,
            ),
            run_config=run_config,
        )
    exp.stop_path.unlink(missing_ok=True)  # a resumed sweep: its trials run again
    if resume:
        # The last driver may have died before its own reconcile (kill -9, a lost node): the
        # folders are the truth before Ray and the searcher go on from their saved state.
        reconcile(exp, settings.storage_url(), study_name, interrupted=True,
                  keys=[result_key(m) for m in settings.metrics])
    interrupt.check()
    grid = tuner.fit()
    errored = len(grid.errors)
    sig = interrupt.received()
    lost = reconcile(exp, settings.storage_url(), study_name, interrupted=sig is not None,
                     keys=[result_key(m) for m in settings.metrics],
                     budget=None if sig is not None else budget.reason)
    if lost:
        print(f"sweep: {len(lost)} trial(s) were lost with a killed driver before Ray "
              f"recorded them; marked failed: {', '.join(lost)}", file=sys.stderr, flush=True)
    if trackers.enabled(settings):  # every run in line with its folder's final word
        trackers.for_experiment(settings, exp.root).finish(wait=sig is None)
    return {"errors": errored, "stopped_reason": budget.reason, "dashboard": url,
            "interrupted": None if sig is None else interrupt.name(sig)}


def quiet_ray_logs() -> None:
    """Ray Tune's log lines that would mislead here, silenced before a Tuner is made or restored.

    - An interrupt is ours to explain (sweep.core.interrupt, the CLI's closing line), not Ray's
      advice to call Tuner.restore.
    - Trial metrics live in the trial folders, not in Ray's result files: Ray's "Failed to
      fetch metrics ... result.json and progress.csv were not found" warning, logged when it
      builds a result grid (at the end of fit() and inside Tuner.restore), is noise."""
    tune_log = logging.getLogger("ray.tune.tune")
    if _no_ray_interrupt_advice not in tune_log.filters:
        tune_log.addFilter(_no_ray_interrupt_advice)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def _no_ray_interrupt_advice(record: logging.LogRecord) -> bool:
    text = record.getMessage()
    return not ("Stop signal received" in text or "has been interrupted" in text)


LOST = "lost"  # a trial the driver started but Ray's saved state did not know when resumed


def reconcile(exp: Experiment, storage_url: str, study_name: str, *, interrupted: bool = False,
              keys: list[str] | None = None, budget: str | None = None) -> list[str]:
    """After ``fit()``, on every exit path: a trial's folder is the truth, and the Optuna study
    is brought in line with it (never the other way). Nothing may be left running:

    - a folder still RUNNING/PENDING/PAUSED: INTERRUPTED if the sweep was interrupted (its actor
      was stopped before it could say so; `sweep resume` continues it), else lost with a killed
      driver (FAILED), or stopped by the sweep's spent ``budget`` (STOPPED); an INTERRUPTED one
      after an uninterrupted run was not continued by Ray: STOPPED;
    - an Optuna trial still RUNNING: told what its folder says (COMPLETED: its last values,
      STOPPED: pruned, FAILED: failed with the reason); an unfinished one stays RUNNING when
      the sweep was interrupted (the resumed searcher tells it); one a spent ``budget`` never
      let start fails as "not started: <budget>"; else it was lost with a killed driver.

    Returns the trials lost."""
    import optuna
    from optuna.trial import TrialState

    from sweep.core.experiment import (
        COMPLETED,
        FAILED,
        INTERRUPTED,
        PAUSED,
        PENDING,
        RUNNING,
        STOPPED,
    )
    from sweep.run.trial import last_result, mark_interrupted

    lost: list[str] = []
    for t in exp.trials():
        state = t.status().get("state")
        if interrupted and state in (RUNNING, PENDING, PAUSED):
            mark_interrupted(t, exp)
        elif state == PAUSED:  # PBT paused it and the sweep ended first
            t.update_status(state=STOPPED, reason="the sweep ended while PBT had it paused",
                            ended_at=time.time())
        elif state == INTERRUPTED and not interrupted:
            t.update_status(state=STOPPED, reason="interrupted with the sweep, and already "
                            "ended in Ray's saved state: not continued", ended_at=time.time())
        elif state in (RUNNING, PENDING) and budget:
            # Ray ended its actor when the budget stopped the sweep, before its runner could
            # say so (still starting its jobs): stopped by the budget, not lost.
            t.update_status(state=STOPPED, reason=f"stopped with the sweep: {budget}",
                            ended_at=time.time())
        elif state in (RUNNING, PENDING):
            mark_failed(t, LOST, "its process ended without a word (driver or node killed)")
            lost.append(t.name)
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    keys = keys or []
    # Only RUNNING trials can be told (public API); a WAITING one is a known point never asked
    # for, harmless: it is no trial of this sweep's and not in its report.
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name = t.user_attrs.get("ray_trial_id")
        status = exp.trial(name).status() if name and exp.trial(name).path.is_dir() else {}
        state = status.get("state")
        try:
            if state == COMPLETED:
                result = last_result(exp.trial(name))
                values = [result.get(k) for k in keys]
                if values and all(isinstance(v, int | float) and v == v for v in values):
                    study.tell(t.number, values=[float(v) for v in values],
                               skip_if_finished=True)
                    continue
                study._storage.set_trial_user_attr(t._trial_id, "failure", "no result")
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            elif state == STOPPED:
                study._storage.set_trial_user_attr(t._trial_id, "stopped_early", True)
                study.tell(t.number, state=TrialState.PRUNED, skip_if_finished=True)
            elif state == FAILED:
                study._storage.set_trial_user_attr(t._trial_id, "failure",
                                                   str(status.get("reason") or "failed"))
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            elif budget and not status:
                study._storage.set_trial_user_attr(t._trial_id, "failure",
                                                   f"not started: {budget}")
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            elif not interrupted:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                label = str(name or f"optuna#{t.number}")
                if label not in lost:
                    lost.append(label)
        except (ValueError, RuntimeError) as e:  # another process finished it meanwhile
            print(f"sweep: could not record Optuna trial #{t.number}: {e}", file=sys.stderr)
    return lost


def resumable(root: Path) -> bool:
    """Whether Ray saved a state of the experiment at ``root`` that a resume can continue."""
    if not (root / "ray").is_dir():
        return False
    from ray import tune

    return bool(tune.Tuner.can_restore(str(root / "ray")))
