"""A sweep's trial scheduler: FIFO, ASHA or median stopping on the step axis, or population-
based training (Ray's PBT and PB2) over OD API checkpoints. The one place schedulers are built:
``sweep run`` (through ``tune_backend``) and the benchmarks call ``make_scheduler``, so they
cannot drift apart. Ray is imported only when a scheduler is built.

The base config's trial (``sweep.search.marks``: launched from the space's ``base`` point) is
the reference every verdict is measured against, so ASHA and median stopping never stop it:
its results still fill their rungs, but it trains to ``num_steps``.
"""

from __future__ import annotations

import random
from typing import Any

from sweep.search import marks
from sweep.search.pbt import explore_fn
from sweep.search.space import (
    Categorical,
    Choice,
    IntRange,
    LogUniform,
    SearchSpace,
    Stepped,
    Uniform,
)

SCHEDULERS = ("fifo", "asha", "median", "pbt", "pb2")
EARLY_STOPPING = ("asha", "median", "pbt", "pb2")  # decide at evaluations during training
DEFAULT_EVALUATIONS = 4  # --eval-every 0 under asha/median: evaluate every quarter of num_steps


def eval_points(name: str, eval_every: int, max_steps: int) -> tuple[int, str | None]:
    """The ``--eval-every`` a sweep runs with, and a note when it was chosen for the user.

    A scheduler that stops trials early decides only at evaluations during training: with none
    (``--eval-every 0`` evaluates at the end only) it would silently never stop one. asha and
    median then evaluate every quarter of num_steps; an ``--eval-every`` at or past num_steps
    is refused (ConfigError naming it). fifo takes what it was given."""
    from sweep.core.errors import ConfigError, Problem

    if name not in EARLY_STOPPING:
        return eval_every, None
    if eval_every <= 0 and name in ("asha", "median"):
        every = max(1, max_steps // DEFAULT_EVALUATIONS)
        return every, (f"--scheduler {name} stops trials at evaluations during training: "
                       f"evaluating every {every} steps (a quarter of num_steps {max_steps}); "
                       "set --eval-every to choose")
    if eval_every >= max_steps:
        raise ConfigError(Problem(
            "command line", "--eval-every", f"{eval_every} is not below num_steps {max_steps}: "
            f"the only evaluation is the last, so --scheduler {name} could never stop or "
            "compare trials during training",
            f"use fewer steps, e.g. --eval-every {max(1, max_steps // DEFAULT_EVALUATIONS)}, or "
            "--scheduler fifo to train every trial to the end"))
    return eval_every, None


def decision_steps(name: str, max_steps: int, eval_every: int,
                   perturbation_interval: int = 0) -> list[int]:
    """The steps at which the scheduler can stop (or, PBT, clone) a trial: its rungs."""
    from sweep.run.trial import plan_steps

    every, _ = plan_steps(max_steps, eval_every)
    evals = list(range(every, max_steps, every))  # evaluations before the last
    if name == "asha":  # milestones grace * 2^k below max_t, decided at the first eval past each
        out, milestone = [], max(1, min(eval_every or max_steps, max_steps))
        while milestone < max_steps:
            at = next((s for s in evals if s >= milestone), None)
            if at is not None and at not in out:
                out.append(at)
            milestone *= 2
        return out
    if name == "median":
        return [s for s in evals if s >= max(1, eval_every)]
    if name in ("pbt", "pb2"):
        interval = perturbation_interval or eval_every
        return [s for s in evals if interval and s % interval == 0]
    return []


def make_scheduler(name: str, *, metric: str, mode: str, max_steps: int, eval_every: int = 0,
                   seed: int | None = 0, space: SearchSpace | None = None,
                   perturbation_interval: int = 0, pbt_sync: bool = False,
                   grace_period: int = 0, reduction_factor: int = 2,
                   brackets: int = 1):  # noqa: ANN201 - a Ray TrialScheduler
    """The Ray Tune scheduler named by ``--scheduler`` for trials of ``max_steps`` steps that
    report ``metric`` (a result key) every ``eval_every`` steps (0: at the end only).
    ``grace_period``: steps before ASHA's first rung or the median rule judges (0: the first
    evaluation); ``reduction_factor`` and ``brackets``: ASHA's. `sweep run` uses the defaults;
    the replay benchmark (benchmarks/search_replay.py) tries others."""
    from ray.tune.schedulers import FIFOScheduler

    if name in ("pbt", "pb2"):
        return population_scheduler(space, metric=metric, mode=mode, seed=seed, kind=name,
                                    interval=perturbation_interval or eval_every, synch=pbt_sync)
    grace = grace_period or eval_every or max_steps
    if name == "asha":
        asha = __getattr__("ProtectedASHAScheduler")
        return asha(time_attr="step", metric=metric, mode=mode, max_t=max_steps,
                    grace_period=max(1, min(grace, max_steps)),
                    reduction_factor=reduction_factor, brackets=brackets)
    if name == "median":
        median = __getattr__("ProtectedMedianStoppingRule")
        return median(time_attr="step", metric=metric, mode=mode, grace_period=max(1, grace),
                      min_samples_required=2)
    if name == "fifo":
        return FIFOScheduler()
    raise ValueError(f"unknown scheduler {name!r}: use one of {', '.join(SCHEDULERS)}")


def population_scheduler(space: SearchSpace, *, metric: str, mode: str, interval: int,
                   seed: int | None, kind: str = "pbt", synch: bool = False
                   ):  # noqa: ANN201 - a Ray scheduler
    from ray.tune.schedulers import PopulationBasedTraining

    if seed is not None:
        random.seed(seed)  # Ray's PBT draws from the random module
    if kind == "pb2":
        from ray.tune.schedulers.pb2 import PB2

        dists = {p.name: p.dist for p, _ in space.walk()}
        bounds = {n: [float(dists[n].low), float(dists[n].high)] for n in space.perturb}
        return PB2(time_attr="step", metric=metric, mode=mode, perturbation_interval=interval,
                   hyperparam_bounds=bounds, quantile_fraction=0.25, synch=synch,
                   custom_explore_fn=explore_fn(space))
    return PopulationBasedTraining(
        time_attr="step", metric=metric, mode=mode, perturbation_interval=interval,
        hyperparam_mutations=mutations(space), custom_explore_fn=explore_fn(space),
        quantile_fraction=0.25, resample_probability=0.25, synch=synch)


def mutations(space: SearchSpace) -> dict[str, Any]:
    """Ray PBT's ``hyperparam_mutations`` for the space's ``perturb:`` parameters."""
    from ray import tune

    dists = {p.name: p.dist for p, _ in space.walk()}
    out: dict[str, Any] = {}
    for name in space.perturb:
        d = dists[name]
        if isinstance(d, Categorical | Choice):
            out[name] = list(d.choices)
        elif isinstance(d, LogUniform):
            out[name] = tune.loguniform(float(d.low), float(d.high))
        elif isinstance(d, Uniform):
            out[name] = tune.uniform(float(d.low), float(d.high))
        elif isinstance(d, Stepped):
            out[name] = tune.quniform(float(d.low), float(d.high), float(d.step))
        elif isinstance(d, IntRange):
            out[name] = tune.qrandint(int(d.low), int(d.high), int(d.step))
    return out


def _protected(base: type, name: str) -> type:
    """``base`` (a Ray early-stopping scheduler) that records the base trial's results like any
    other's but never stops it (a stop before the end becomes a continue)."""

    class Protected(base):  # type: ignore[misc, valid-type]
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            action = super().on_trial_result(tune_controller, trial, result)
            if action in (self.STOP, self.PAUSE) and marks.is_base(trial.config):
                if hasattr(self, "_num_stopped"):  # ASHA's count of stopped trials
                    self._num_stopped -= 1
                getattr(self, "_stopped_trials", set()).discard(trial)  # median's
                return self.CONTINUE
            return action

    Protected.__name__ = Protected.__qualname__ = name
    Protected.__module__ = __name__
    return Protected


_CLASSES: dict[str, type] = {}


def __getattr__(name: str) -> type:
    """The protected schedulers, built on first use so this module imports Ray only then (and
    found by name when Ray unpickles a saved experiment's scheduler)."""
    if name not in ("ProtectedASHAScheduler", "ProtectedMedianStoppingRule"):
        raise AttributeError(name)
    if name not in _CLASSES:
        from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

        base = ASHAScheduler if name == "ProtectedASHAScheduler" else MedianStoppingRule
        _CLASSES[name] = _protected(base, name)
    return _CLASSES[name]
