"""What a sweep was asked to do: the options of `sweep run`, checked, and kept in experiment.json."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep import metrics, study
from sweep.errors import ConfigError, Problem

SAMPLERS = ("tpe", "random", "cmaes", "grid", "qmc", "nsga2")
SCHEDULERS = ("fifo", "asha", "median")
# Short names accepted on the command line for the OD API's tags.
METRIC_ALIASES = {
    "mAP": metrics.MAP, "map": metrics.MAP, "mAP_50": metrics.MAP50, "mAP_75": metrics.MAP75,
    "AR_100": metrics.AR100, "total_loss": metrics.TOTAL_LOSS, "loss": metrics.TOTAL_LOSS,
}
DEFAULT_MODES = {metrics.TOTAL_LOSS: "min", metrics.CLASSIFICATION_LOSS: "min",
                 metrics.LOCALIZATION_LOSS: "min", metrics.REGULARIZATION_LOSS: "min"}


def metric_tag(name: str) -> str:
    return METRIC_ALIASES.get(name, name)


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
    seed: int | None = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    eval_every: int = 0
    keep_checkpoints: int = 3
    max_failures: int = 2
    max_consecutive_failures: int = 3
    address: str | None = None
    study_url: str | None = None  # any SQLAlchemy URL; default sqlite in the experiment folder
    study_name: str = ""  # a new study per experiment (sweep.study.new_study_name); default name
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
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    def check(self) -> None:
        """Raise ConfigError naming each bad option and its fix."""
        problems: list[Problem] = []

        def bad(key: str, problem: str, fix: str) -> None:
            problems.append(Problem("command line", key, problem, fix))

        if not self.name or "/" in self.name or self.name.startswith("."):
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
        if self.cpus_per_trial <= 0:
            bad("--cpus-per-trial", f"must be > 0, got {self.cpus_per_trial}", "use e.g. 1")
        if self.gpus_per_trial < 0:
            bad("--gpus-per-trial", f"must be >= 0, got {self.gpus_per_trial}", "use 0, 0.5, 1 ...")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            bad("--gpus-per-trial", f"{self.gpus_per_trial} GPUs: above 1 it must be whole",
                "use a fraction below 1 or a whole number")
        if problems:
            raise ConfigError(problems)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for k, v in data.items():
            if isinstance(v, Path):
                data[k] = str(v)
        # No password on disk: resume and report take it from the environment (sweep.study).
        data["study_url"] = self.study_url and study.without_password(self.study_url)
        data["storage_url"] = study.without_password(self.storage_url())
        data["base_pipeline_source"] = str(self.pipeline)
        data["space_source"] = str(self.space)
        return data

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles objects holding these settings into the experiment folder: no password.
        state = dict(self.__dict__)
        if self.study_url:
            state["study_url"] = study.without_password(self.study_url)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.study_url:
            self.study_url = study.with_password(self.study_url)

    def storage_url(self) -> str:
        """The study's storage URL with its password (in memory only)."""
        if self.study_url:
            return study.with_password(self.study_url)
        return f"sqlite:///{self.experiment_root / 'study.db'}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        for k in ("space", "pipeline", "storage"):
            kw[k] = Path(kw[k])
        return cls(**kw)
