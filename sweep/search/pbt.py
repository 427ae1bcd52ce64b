"""Population-based training over OD API checkpoints (``--scheduler pbt``): the seed's
fine-tune chain ("default settings + fine tune (my_model_6)"), automated with a population.
This module holds PBT's rules over the search space; Ray's scheduler is built in
``sweep.run.schedulers``, the pre-launch checks are in ``sweep.run.validate`` and the report's
lineage figure in ``sweep.report.lineage``.

At each ``--perturbation-interval`` steps Ray Tune's ``PopulationBasedTraining`` lets a trial in
the bottom quantile copy a top trial's latest evaluated checkpoint (exploit) and continue with
perturbed values of the space's ``perturb:`` parameters (explore). This module decides what may
be perturbed, keeps every explored config inside the space, and records each trial's lineage
(its segments) in ``status.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from sweep.search.space import (
    Categorical,
    Choice,
    IntRange,
    SearchSpace,
    Stepped,
    replay,
)

SCHEDULERS = ("pbt", "pb2")
# Schedules whose fields may change mid-training: the OD API computes the rate from the global
# step each step, so a new schedule continues at the step the checkpoint was taken.
LR_SCHEDULES = ("cosine_decay_learning_rate", "exponential_decay_learning_rate",
                "manual_step_learning_rate", "constant_learning_rate")


def perturb_problem(name: str) -> str | None:
    """Why ``name`` may not change in the middle of training (None when it may)."""
    head = name.split(".", 1)[0]
    if head in LR_SCHEDULES and "." in name:
        return None
    if head in ("l2_weight", "augment") or name == "momentum":
        return None
    if name == "learning_rate":
        return ("switching the schedule's kind mid-training is not a perturbation; perturb its "
                "fields (e.g. cosine_decay_learning_rate.learning_rate_base) instead")
    return ("only training hyperparameters can change mid-training (learning-rate schedule "
            "fields, l2_weight, augment.*, momentum); this one changes the model, its targets "
            "or the run (a checkpoint of the old model would not fit it)")


def _clamp(d: Any, value: Any) -> Any:
    """A perturbed value (Ray multiplies by 0.8 or 1.2) kept inside the parameter's range."""
    if isinstance(d, Categorical | Choice) or isinstance(value, bool):
        return value
    low, high = float(d.low), float(d.high)
    v = min(max(float(value), low), high)
    if isinstance(d, Stepped):
        v = low + round((v - low) / d.step) * d.step
        v = min(v, high)
    if isinstance(d, IntRange):
        v = int(round(low + round((v - low) / d.step) * d.step))
        v = min(v, int(high))
    return v


def explore_fn(space: SearchSpace) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Ray's ``custom_explore_fn``: clamp perturbed values into the space, then keep only the
    parameters active under the config's choices (and recompute derived ones)."""
    dists = {p.name: p.dist for p, _ in space.walk()}

    def explore(config: dict[str, Any]) -> dict[str, Any]:
        clamped = {k: _clamp(dists[k], v) if k in space.perturb and k in dists else v
                   for k, v in config.items()}
        return active(space, clamped)

    return explore


def active(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` reduced to the parameters active under its own choices (PBT adds every
    mutable name to every trial's config, also ones under another option)."""
    sampled = {p.name for p, _ in space.walk() if p.sampled}
    return replay(space, {k: v for k, v in config.items() if k in sampled})


def pb2_problem(space: SearchSpace, name: str) -> str | None:
    """Why PB2 cannot explore ``name`` (its GP-bandit models continuous values only)."""
    d = {p.name: p.dist for p, _ in space.walk()}.get(name)
    if isinstance(d, Categorical | Choice):
        return ("pb2 explores continuous ranges only (its Gaussian-process bandit), and this is "
                "a categorical")
    return None


# ------------------------------------------------------------------------- lineage

def segment(step: int, params: Mapping[str, Any], perturb: tuple[str, ...],
            cloned_from: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One stretch of a trial's training: from ``step`` on, these values were in force."""
    return {"from_step": step, "params": {k: params[k] for k in perturb if k in params},
            "cloned_from": dict(cloned_from) if cloned_from else None}


def parent(status: Mapping[str, Any]) -> str | None:
    """The trial the current segment was cloned from (None for an original trial)."""
    lineage = status.get("lineage") or []
    src = lineage[-1].get("cloned_from") if lineage else None
    return src.get("trial") if src else None


def fmt_value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def describe(status: Mapping[str, Any]) -> str:
    """The lineage in the seed's own words: ``default settings + fine tune (trial X at step S)``
    and what changed, per segment."""
    parts = []
    for i, seg in enumerate(status.get("lineage") or []):
        src = seg.get("cloned_from")
        if src:
            prev = (status["lineage"][i - 1]["params"] if i else {})
            changed = {k: v for k, v in seg["params"].items() if prev.get(k) != v}
            what = ", ".join(f"{k.split('.')[-1]} {fmt_value(v)}" for k, v in changed.items())
            parts.append(f"fine tune ({src['trial']} at step {src['step']})"
                         + (f": {what}" if what else ""))
        elif i == 0:
            parts.append("default settings")
    return " + ".join(parts)
