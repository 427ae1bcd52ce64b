"""A sweep's trial scheduler: FIFO, ASHA or median stopping on the step axis, or population-
based training (Ray's PBT and PB2) over OD API checkpoints. The one place schedulers are built:
``sweep run`` (through ``tune_backend``) and the benchmarks call ``make_scheduler``, so they
cannot drift apart. Ray is imported only when a scheduler is built."""

from __future__ import annotations

import random
from typing import Any

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


def make_scheduler(name: str, *, metric: str, mode: str, max_steps: int, eval_every: int = 0,
                   seed: int | None = 0, space: SearchSpace | None = None,
                   perturbation_interval: int = 0, pbt_sync: bool = False,
                   grace_period: int = 0):  # noqa: ANN201 - a Ray TrialScheduler
    """The Ray Tune scheduler named by ``--scheduler`` for trials of ``max_steps`` steps that
    report ``metric`` (a result key) every ``eval_every`` steps (0: at the end only).
    ``grace_period``: steps before ASHA's first rung or the median rule judges (0: the first
    evaluation); `sweep run` leaves it 0, the replay benchmark tries others."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if name in ("pbt", "pb2"):
        return population_scheduler(space, metric=metric, mode=mode, seed=seed, kind=name,
                                    interval=perturbation_interval or eval_every, synch=pbt_sync)
    grace = grace_period or eval_every or max_steps
    if name == "asha":
        return ASHAScheduler(time_attr="step", metric=metric, mode=mode, max_t=max_steps,
                             grace_period=max(1, min(grace, max_steps)), reduction_factor=2)
    if name == "median":
        return MedianStoppingRule(time_attr="step", metric=metric, mode=mode,
                                  grace_period=max(1, grace), min_samples_required=2)
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
