"""What a sweep was asked to do: the options of `sweep run`, checked, and kept in experiment.json."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.core import study_url
from sweep.core.errors import ConfigError, Problem
from sweep.odapi import metrics
from sweep.odapi.worker import GRAPH_OPTIMIZER
from sweep.run import ray_job, ray_node

SAMPLERS = ("tpe", "random", "cmaes", "grid", "qmc", "nsga2")
SCHEDULERS = ("fifo", "asha", "median", "pbt", "pb2")
EVAL_DEVICES = ("gpu", "cpu")
# Short names accepted on the command line for the OD API's tags.
METRIC_ALIASES = {
    "mAP": metrics.MAP, "map": metrics.MAP, "mAP_50": metrics.MAP50, "mAP_75": metrics.MAP75,
    "AR_100": metrics.AR100, "total_loss": metrics.TOTAL_LOSS, "loss": metrics.TOTAL_LOSS,
}
DEFAULT_MODES = {metrics.TOTAL_LOSS: "min", metrics.CLASSIFICATION_LOSS: "min",
                 metrics.LOCALIZATION_LOSS: "min", metrics.REGULARIZATION_LOSS: "min"}


def metric_tag(name: str) -> str:
    """The OD API tag for a --metric: a short alias, a result key a trial reports, or the tag."""
    by_key = {key: tag for tag, key in metrics.RESULT_KEYS.items()}
    return METRIC_ALIASES.get(name) or by_key.get(name, name)


def known_metrics() -> list[str]:
    """What --metric accepts: every tag a trial reports, by its tag or its result key."""
    return sorted({*METRIC_ALIASES, *metrics.RESULT_KEYS, *metrics.RESULT_KEYS.values()})


def writable_storage_problem(storage: Path) -> tuple[str, str] | None:
    """(problem, fix) if experiments cannot be created under ``storage``, else None."""
    if storage.exists() and not storage.is_dir():
        return (f"'{storage}' is a file, not a folder", "give a folder (it is created if missing)")
    existing = storage
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return (f"'{existing}' is a file, so '{storage}' cannot be created",
                "give a folder path whose parents are folders")
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"'{existing}' is not writable by this user", "give a folder you can write to")
    return None


@dataclass
class SweepSettings:
    name: str
    space: Path
    pipeline: Path
    storage: Path = Path("experiments")
    num_trials: int = 4
    max_concurrent: int = 2
    sampler: str = "tpe"
    scheduler: str = "asha"
    metrics: list[str] = field(default_factory=lambda: [metrics.MAP])
    modes: list[str] = field(default_factory=lambda: ["max"])
    time_budget_s: float | None = None
    step_budget: int | None = None
    seed: int | None = 0  # the sampler's seed, and every trial's seed is drawn from it
    deterministic: bool = False  # TensorFlow's op determinism in the train jobs
    confirm: int = 0  # seeds per config to retrain the top configs and the base with (0 = none)
    confirm_top: int = 1  # how many of the search's top configs to confirm
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    eval_every: int = 0
    keep_checkpoints: int = 3
    max_failures: int = 2
    max_consecutive_failures: int = 3
    perturbation_interval: int = 0  # PBT: steps between exploit/explore; 0 = --eval-every
    pbt_sync: bool = False  # PBT: every trial waits at each interval, then the bottom ones clone
    stall_minutes: float = 30.0  # training without a new summary or checkpoint; 0 = never
    eval_device: str = "gpu"
    graph_optimizer: str = "auto"  # TF grappler in the jobs: auto = on only with a GPU
    address: str | None = None
    study_url: str | None = None  # any SQLAlchemy URL; default sqlite in the experiment folder
    study_name: str = ""  # a new study per experiment (sweep.search.study.new_study_name); default name
    mlflow: str | None = None  # MLflow tracking URI (sweep.run.trackers)
    wandb: str | None = None  # W&B [entity/]project (sweep.run.trackers)
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    declare_gpus: int | None = None  # GPUs to declare to an embedded Ray (tests GPU placement on CPU)
    model_name: str = ""
    dataset: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    # Relative paths in a pipeline.config (the tutorial's "annotations/train.record") are
    # relative to where `sweep run` was started; trials run their OD API jobs from there.
    cwd: str = field(default_factory=lambda: str(Path.cwd()))

    def __post_init__(self) -> None:
        self.study_name = self.study_name or self.name

    @property
    def experiment_root(self) -> Path:
        return (self.storage / self.name).resolve()

    @property
    def population_based(self) -> bool:
        """PBT or PB2: trials continue from each other's checkpoints."""
        return self.scheduler in ("pbt", "pb2")

    @property
    def replicas(self) -> int:
        """Devices each trial trains on: MirroredStrategy over whole GPUs when more than one."""
        return int(self.gpus_per_trial) if self.gpus_per_trial > 1 else 1

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    def check(self) -> None:
        """Raise ConfigError naming each bad option and its fix."""
        problems: list[Problem] = []

        def bad(key: str, problem: str, fix: str) -> None:
            problems.append(Problem("command line", key, problem, fix))

        if not self.name or "/" in self.name or self.name.startswith(".") or any(
                c in self.name for c in "\0\\\n\r\t"):
            bad("--name", f"experiment name {self.name!r} is not a plain folder name",
                "use letters, digits, '-' and '_'")
        if self.num_trials < 1:
            bad("--num-trials", f"must be >= 1, got {self.num_trials}", "ask for at least 1 trial")
        if self.max_concurrent < 1:
            bad("--max-concurrent", f"must be >= 1, got {self.max_concurrent}", "use 1 or more")
        if self.sampler not in SAMPLERS:
            bad("--sampler", f"unknown sampler {self.sampler!r}", f"use one of {', '.join(SAMPLERS)}")
        if self.scheduler not in SCHEDULERS:
            bad("--scheduler", f"unknown scheduler {self.scheduler!r}",
                f"use one of {', '.join(SCHEDULERS)}")
        if len(self.metrics) != len(self.modes):
            bad("--mode", f"{len(self.metrics)} metrics but {len(self.modes)} modes",
                "give one --mode per --metric (max or min), or none for the defaults")
        for m in self.modes:
            if m not in ("max", "min"):
                bad("--mode", f"mode {m!r} is neither 'max' nor 'min'", "use max or min")
        if self.sampler == "nsga2" and not self.multi_objective:
            bad("--sampler", "nsga2 is a multi-objective sampler but one metric was given",
                "add a second --metric (e.g. --metric mAP --metric total_loss) or use tpe")
        if self.sampler in ("cmaes", "grid", "qmc") and self.multi_objective:
            bad("--sampler", f"{self.sampler} does not support multiple objectives",
                "use tpe, random or nsga2 with two metrics")
        if self.confirm < 0 or self.confirm == 1:
            bad("--confirm", f"must be 0 (none) or at least 2 seeds, got {self.confirm}",
                "use e.g. --confirm 3 (one seed says nothing about the spread)")
        if self.confirm_top < 1:
            bad("--confirm-top", f"must be >= 1, got {self.confirm_top}", "use e.g. 1")
        if self.cpus_per_trial <= 0:
            bad("--cpus-per-trial", f"must be > 0, got {self.cpus_per_trial}", "use e.g. 1")
        if self.gpus_per_trial < 0:
            bad("--gpus-per-trial", f"must be >= 0, got {self.gpus_per_trial}", "use 0, 0.5, 1 ...")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            bad("--gpus-per-trial", f"{self.gpus_per_trial} GPUs: above 1 it must be whole",
                "use a fraction below 1 or a whole number")
        if self.population_based:
            if self.eval_every <= 0:
                bad("--eval-every", "PBT needs evaluations during training to compare trials",
                    "set --eval-every (e.g. 2000) and --perturbation-interval a multiple of it")
            elif self.perturbation_interval % self.eval_every:
                bad("--perturbation-interval", f"{self.perturbation_interval} is not a multiple "
                    f"of --eval-every {self.eval_every}: trials are compared and cloned at "
                    "evaluated checkpoints", f"use a multiple of {self.eval_every}")
            if self.multi_objective:
                bad("--scheduler", "pbt compares trials on one metric", "give one --metric")
        elif self.pbt_sync:
            bad("--pbt-sync", f"applies to --scheduler pbt or pb2, not {self.scheduler}",
                "drop --pbt-sync, or use --scheduler pbt")
        if self.perturbation_interval < 0:
            bad("--perturbation-interval", f"must be >= 0, got {self.perturbation_interval}",
                "use a number of steps, or 0 for --eval-every")
        if self.stall_minutes < 0:
            bad("--stall-minutes", f"must be >= 0, got {self.stall_minutes}",
                "use 0 to turn stall detection off, or minutes (e.g. 30)")
        if self.eval_device not in EVAL_DEVICES:
            bad("--eval-device", f"unknown device {self.eval_device!r}", "use gpu or cpu")
        if self.graph_optimizer not in GRAPH_OPTIMIZER:
            bad("--graph-optimizer", f"unknown choice {self.graph_optimizer!r}",
                "use " + ", ".join(GRAPH_OPTIMIZER))
        for key, value in (("--cpus-per-trial", self.cpus_per_trial),
                           ("--gpus-per-trial", self.gpus_per_trial),
                           ("--time-budget", self.time_budget_s)):
            if value is not None and not math.isfinite(value):
                bad(key, f"must be a finite number, got {value}", "give a number")
        known = known_metrics()
        for m in self.metrics:
            if m not in known:
                bad("--metric", f"unknown metric {m!r}: trials report no such value, so they "
                    "could never be ranked", f"use one of {', '.join(known)}")
        if len(set(self.metrics)) != len(self.metrics):
            bad("--metric", f"the same metric twice in {self.metrics}", "give each --metric once")
        at_least = (("--eval-every", self.eval_every, 0, "0 (evaluate at the end only) or more"),
                    ("--keep-checkpoints", self.keep_checkpoints, 1,
                     "1 or more (the eval job and retries read the last checkpoint)"),
                    ("--max-failures", self.max_failures, 0, "0 (no retries) or more"),
                    ("--max-consecutive-failures", self.max_consecutive_failures, 1,
                     "1 or more (0 would stop the sweep before any trial failed)"))
        for key, value, low, fix in at_least:
            if value < low:
                bad(key, f"must be >= {low}, got {value}", f"use {fix}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            bad("--time-budget", f"must be > 0 minutes, got {self.time_budget_s / 60:g}",
                "give the minutes after which no trial starts, or leave it out (no limit)")
        if self.step_budget is not None and self.step_budget <= 0:
            bad("--step-budget", f"must be > 0, got {self.step_budget}",
                "give the total train steps, or leave it out (no limit)")
        storage = writable_storage_problem(self.storage)
        if storage:
            bad("--storage", *storage)
        in_job = ray_job.storage_problem(self.storage)
        if in_job:
            problems.append(in_job)
        if not self.address:
            self._check_local_resources(bad)
        if problems:
            raise ConfigError(problems)

    def _check_local_resources(self, bad: Any) -> None:
        """A trial the embedded Ray can never place would wait forever: refuse it now."""
        cpus = os.cpu_count() or 1
        if math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > cpus:
            bad("--cpus-per-trial", f"{self.cpus_per_trial:g} CPUs per trial, but this machine "
                f"has {cpus}", f"use at most {cpus}, or run on a cluster with --address")
        gpus = self.declare_gpus if self.declare_gpus is not None else ray_node.local_gpus()
        if self.declare_gpus is not None and self.declare_gpus < 0:
            bad("--declare-gpus", f"must be >= 0, got {self.declare_gpus}", "use 0 or more")
        elif math.isfinite(self.gpus_per_trial) and self.gpus_per_trial > gpus:
            source = "--declare-gpus says" if self.declare_gpus is not None else "Ray would see"
            bad("--gpus-per-trial", f"{self.gpus_per_trial:g} GPUs per trial, but {source} "
                f"{gpus} on this machine, so no trial could ever start",
                f"use --gpus-per-trial {min(gpus, 1) if gpus else 0}, or run on a cluster "
                "with GPUs (--address)")

    def check_cluster(self, nodes: list[dict[str, Any]]) -> None:
        """After connecting to --address: refuse a trial no alive node can ever hold."""
        alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", n.get("alive", True))]
        fits = [r for r in alive if r.get("CPU", 0) >= self.cpus_per_trial
                and r.get("GPU", 0) >= self.gpus_per_trial]
        if not fits:
            most_cpu = max((r.get("CPU", 0) for r in alive), default=0)
            most_gpu = max((r.get("GPU", 0) for r in alive), default=0)
            raise ConfigError(Problem(
                "command line", "--cpus-per-trial/--gpus-per-trial",
                f"a trial needs {self.cpus_per_trial:g} CPUs and {self.gpus_per_trial:g} GPUs "
                f"on one node, but the {len(alive)} node(s) of the cluster at {self.address} "
                f"have at most {most_cpu:g} CPUs and {most_gpu:g} GPUs each",
                f"ask for at most {most_cpu:g} CPUs and {most_gpu:g} GPUs per trial, or add a "
                "node that has them (`ray start --address ...`)"))

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for k, v in data.items():
            if isinstance(v, Path):
                data[k] = str(v)
        # No password on disk: resume and report take it from the environment (sweep.core.study_url).
        data["study_url"] = self.study_url and study_url.without_password(self.study_url)
        data["storage_url"] = study_url.without_password(self.storage_url())
        data["base_pipeline_source"] = str(self.pipeline)
        data["space_source"] = str(self.space)
        return data

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles objects holding these settings into the experiment folder: no password.
        state = dict(self.__dict__)
        if self.study_url:
            state["study_url"] = study_url.without_password(self.study_url)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.study_url:
            self.study_url = study_url.with_password(self.study_url)

    def storage_url(self) -> str:
        """The study's storage URL with its password (in memory only)."""
        if self.study_url:
            return study_url.with_password(self.study_url)
        return f"sqlite:///{self.experiment_root / 'study.db'}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        try:
            for k in ("space", "pipeline", "storage"):
                kw[k] = Path(kw[k])
            return cls(**kw)
        except (KeyError, TypeError) as e:
            raise ConfigError(Problem(
                "experiment.json", str(e), "the experiment's settings are incomplete or not "
                "those of this version of sweep", "start anew with `sweep run ... --overwrite`, "
                "or restore experiment.json")) from e
