"""Ray Tune + Optuna: the only module that imports Ray.

A sweep is a ``ray.tune.Tuner`` whose trainable wraps ``TrialRunner``, whose searcher is
Ray's ``OptunaSearch`` (define-by-run over the search space, the study in an RDB storage),
and whose scheduler is FIFO, ASHA or median stopping on the step axis.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from sweep import errors, search
from sweep.experiment import Experiment
from sweep.settings import SweepSettings
from sweep.trial import TrialRunner, TrialSpec, result_key

# A result that lacks the metric (a failed trial's last word) must not be an error in Ray.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Trials checkpoint (a few bytes) after every evaluation; Ray's warning about it is noise here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Ray's TensorBoard logger would add a second HParams experiment per Ray trial (under ray/);
# sweep.hparams writes one for the sweep, linked to the OD API curves. JSON and CSV stay.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def make_scheduler(settings: SweepSettings, max_steps: int):  # noqa: ANN201 - ray type
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    metric = result_key(settings.metrics[0])
    mode = settings.modes[0]
    grace = settings.eval_every or max_steps
    if settings.scheduler == "asha":
        return ASHAScheduler(time_attr="step", metric=metric, mode=mode, max_t=max_steps,
                             grace_period=max(1, min(grace, max_steps)), reduction_factor=2)
    if settings.scheduler == "median":
        return MedianStoppingRule(time_attr="step", metric=metric, mode=mode,
                                  grace_period=max(1, grace), min_samples_required=2)
    return FIFOScheduler()


def _trainable_class():  # noqa: ANN202 - a Ray Trainable subclass, built lazily
    import ray
    from ray import tune

    class SweepTrainable(tune.Trainable):
        """One OD API trial; Ray calls step() until done, stop() to end it early."""

        def setup(self, config: dict[str, Any], spec: TrialSpec | None = None) -> None:
            gpu_ids = [str(g) for g in ray.get_gpu_ids()]
            self.runner = TrialRunner(spec, self.trial_id, config, gpu_ids=gpu_ids)
            self.runner.start()

        def step(self) -> dict[str, Any]:
            return self.runner.next_result()

        def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
            # The OD API's own checkpoints live in the trial folder; this marks progress.
            return {"reported_step": self.runner.reported_step}

        def load_checkpoint(self, checkpoint: dict[str, Any] | str | None) -> None:
            pass  # TrialRunner.start() resumes from the trial folder

        def cleanup(self) -> None:
            self.runner.stop()

    return SweepTrainable


def _searcher_class():  # noqa: ANN202
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class SweepSearch(OptunaSearch):
        """OptunaSearch that records failures and early stops in the study as such."""

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
            failed = (result or {}).get("sweep_failed")
            if failed or error:
                ot_trial.set_user_attr("failure", failed or "error")
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
            self.t0 = time.time()
            self.done_here = 0

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
            self._finished(trials, trial)
            self._line(f"{trial.trial_id} errored (see {exp.trial(trial.trial_id).path})")

    class Budget(Stopper):
        """Stops the sweep after N consecutive failed trials or a total train-step budget."""

        def __init__(self) -> None:
            self.streak = 0
            self.steps: dict[str, int] = {}
            self.reason: str | None = None
            self.pid = os.getpid()

        def _seed(self) -> None:
            """Tune.restore (a new driver process) reuses this object as pickled at the start:
            take what the trial folders say (steps trained, failures in a row) first."""
            self.pid = os.getpid()
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
            if self.streak >= settings.max_consecutive_failures:
                self.reason = (f"{self.streak} trials failed in a row; the sweep stops. Look at "
                               f"the last trials' train.log / eval.log under {exp.trials_dir}")
            if settings.step_budget and sum(self.steps.values()) >= settings.step_budget:
                self.reason = f"the step budget ({settings.step_budget} train steps) is spent"
            return False

        def stop_all(self) -> bool:
            return self.reason is not None

    return Progress(), Budget()


def _short(config: dict) -> str:
    # Last path component, unless two keys share it (learning_rate vs <schedule>.learning_rate).
    last = [k.split(".")[-1] for k in config]
    items = [f"{k.split('.')[-1] if last.count(k.split('.')[-1]) == 1 else k}={_fmt(v)}"
             for k, v in sorted(config.items())]
    return ", ".join(items)[:160]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


STARTUP_ATTEMPTS = 3


def init_ray(settings: SweepSettings) -> str | None:
    """Connect to ``--address`` or start an embedded local Ray; returns the dashboard URL."""
    import ray

    # Workers must import this package the way the driver does.
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p)}}
    if settings.address:
        ctx = ray.init(address=settings.address, runtime_env=env, log_to_driver=False)
    else:
        # "local": always a new Ray of our own, even if `ray start` left a cluster running here
        # (ray.init() with no address would join that one).
        for attempt in range(1, STARTUP_ATTEMPTS + 1):
            try:
                ctx = ray.init(address="local", num_cpus=os.cpu_count(),
                               num_gpus=settings.declare_gpus, include_dashboard=settings.dashboard,
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


def run_sweep(settings: SweepSettings, space: Any, points: list[dict[str, Any]], max_steps: int,
              *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) the sweep to its end; returns a summary for the CLI."""
    import ray
    from ray import tune

    from sweep.study_storage import PasswordFreeRDBStorage

    exp = Experiment(settings.experiment_root)
    study_name = settings.to_json()["study_name"]
    spec = TrialSpec(experiment_root=exp.root, metric=settings.metrics[0], mode=settings.modes[0],
                     eval_every=settings.eval_every, keep_checkpoints=settings.keep_checkpoints,
                     threads=max(1, int(settings.cpus_per_trial)),
                     max_failures=settings.max_failures,
                     # A test hook: tests run Ray-level logic with a fast stand-in worker.
                     worker_module=os.environ.get("SWEEP_WORKER_MODULE", "sweep.worker"),
                     pause_at_rungs=settings.scheduler in ("asha", "median"),
                     cwd=Path(settings.cwd))
    trainable = tune.with_resources(
        tune.with_parameters(_trainable_class(), spec=spec),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
    progress, budget = _callbacks(settings, exp)
    if resume and not tune.Tuner.can_restore(str(exp.ray_dir)):
        # A new Tuner here would sample the known points again into the same study.
        raise errors.ConfigError(errors.Problem(
            "sweep resume", str(exp.ray_dir), "Ray Tune saved no experiment state before the "
            "driver stopped, so there is nothing to resume",
            f"start anew: sweep run ... --name {settings.name} --overwrite"))
    # A Ray already up in this process (a test's, shared by many sweeps) is used, not ended.
    own_ray = not ray.is_initialized()
    url = init_ray(settings) if own_ray else None
    if url:
        print(f"Ray dashboard: {url}", flush=True)
    print(f"TensorBoard:   tensorboard --logdir {exp.root}", flush=True)
    try:
        from sweep import hparams

        hparams.write_experiment(exp.root, space, description=f"sweep {settings.name}")
    except Exception as e:  # noqa: BLE001 - TensorBoard extras never stop a sweep
        print(f"sweep: could not write the TensorBoard HParams experiment: {e}", file=sys.stderr)
    try:
        run_config = tune.RunConfig(
            name="ray", storage_path=str(exp.root), verbose=0,
            callbacks=[progress], stop=budget,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_frequency=1),
        )
        ray_dir = exp.ray_dir
        if resume:
            tuner = tune.Tuner.restore(str(ray_dir), trainable=trainable,
                                       resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
        else:
            metric_keys = [result_key(m) for m in settings.metrics]
            points = search.known_points(points, settings.num_trials, space=space,
                                         sampler=settings.sampler)
            searcher = _searcher_class()(
                space=space.define_by_run,
                metric=metric_keys if settings.multi_objective else metric_keys[0],
                mode=settings.modes if settings.multi_objective else settings.modes[0],
                points_to_evaluate=points or None,
                sampler=search.make_sampler(settings, space, len(points)),
                study_name=study_name,
                storage=PasswordFreeRDBStorage(settings.storage_url()),
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher, scheduler=make_scheduler(settings, max_steps),
                    num_samples=settings.num_trials, max_concurrent_trials=settings.max_concurrent,
                    time_budget_s=settings.time_budget_s,
                    trial_dirname_creator=lambda t: t.trial_id,
                ),
                run_config=run_config,
            )
        # Trial metrics live in the trial folders, not in Ray's result files: silence Ray's
        # "Failed to fetch metrics" warning when it builds the (unused) result grid.
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        grid = tuner.fit()
        errored = len(grid.errors)
        lost = reconcile(exp, settings.storage_url(), study_name)
        if lost:
            print(f"sweep: {len(lost)} trial(s) were lost with a killed driver before Ray "
                  f"recorded them; marked failed: {', '.join(lost)}", file=sys.stderr, flush=True)
    finally:
        if own_ray:
            ray.shutdown()
    if budget.reason:
        print(f"sweep stopped: {budget.reason}", file=sys.stderr, flush=True)
    return {"errors": errored, "stopped_reason": budget.reason, "dashboard": url}


LOST = "lost"  # a trial the driver started but Ray's saved state did not know when resumed


def reconcile(exp: Experiment, storage_url: str, study_name: str) -> list[str]:
    """After ``fit()``: nothing may be left running. A driver killed between Ray suggesting a
    trial and saving its experiment state leaves an Optuna trial (and maybe a trial folder)
    that the resumed run does not know and re-suggests; mark those failed, never running."""
    import optuna
    from optuna.trial import TrialState

    from sweep.experiment import FAILED, RUNNING

    lost: list[str] = []
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    # Only RUNNING trials can be told (public API); a WAITING one is a known point never asked
    # for, harmless: it is no trial of this sweep's and not in its report.
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        except (ValueError, RuntimeError) as e:  # another process finished it meanwhile
            print(f"sweep: could not mark Optuna trial #{t.number} failed: {e}", file=sys.stderr)
            continue
        lost.append(str(t.user_attrs.get("ray_trial_id", f"optuna#{t.number}")))
    for t in exp.trials():
        if t.status().get("state") == RUNNING:
            t.update_status(state=FAILED, reason=LOST, ended_at=time.time(),
                            detail="its process ended without a word (driver or node killed)")
            if t.name not in lost:
                lost.append(t.name)
    return lost
