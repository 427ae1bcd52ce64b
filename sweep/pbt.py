"""Population-based training over OD API checkpoints (``--scheduler pbt``): the seed's
fine-tune chain ("default settings + fine tune (my_model_6)"), automated with a population.

At each ``--perturbation-interval`` steps Ray Tune's ``PopulationBasedTraining`` lets a trial in
the bottom quantile copy a top trial's latest evaluated checkpoint (exploit) and continue with
perturbed values of the space's ``perturb:`` parameters (explore). This module decides what may
be perturbed, turns the space into Ray's mutations, keeps every explored config inside the
space, and records each trial's lineage (its segments) in ``status.json``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sweep.space import (
    Categorical,
    Choice,
    IntRange,
    LogUniform,
    SearchSpace,
    Stepped,
    Uniform,
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


def check(kind: str, space: SearchSpace) -> None:
    """Refuse, before launch, a population-based sweep the space cannot drive."""
    from sweep.errors import ConfigError, Problem

    file = str(space.path or "the search space")
    if not space.perturb:
        raise ConfigError([Problem(file, "perturb", f"--scheduler {kind} needs parameters it may "
                                   "change mid-training", "add e.g. `perturb: [cosine_decay_"
                                   "learning_rate.learning_rate_base, l2_weight]` (searched "
                                   "parameters; see the README's Population-based training)")])
    if kind == "pb2":
        problems = [Problem(file, f"perturb.{n}", why, "use --scheduler pbt, or perturb only "
                            "uniform / loguniform / int / stepped parameters")
                    for n in space.perturb if (why := pb2_problem(space, n))]
        if problems:
            raise ConfigError(problems)


def make_scheduler(space: SearchSpace, *, metric: str, mode: str, interval: int,
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


def _fmt(v: Any) -> str:
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
            what = ", ".join(f"{k.split('.')[-1]} {_fmt(v)}" for k, v in changed.items())
            parts.append(f"fine tune ({src['trial']} at step {src['step']})"
                         + (f": {what}" if what else ""))
        elif i == 0:
            parts.append("default settings")
    return " + ".join(parts)


# ------------------------------------------------------------------------- replay

END = 10**12  # "to the end" of a stretch


def chain(exp: Any, trial_name: str) -> list[tuple[Any, Path, int, int]]:
    """The lineage of a trial's weights, oldest first: ``(trial, event root, from, to)`` per
    stretch of steps. Before a clone at step S the weights came from the source trial's own
    lineage up to S (its archived segment if it was itself cloned later), back to step 0."""
    out: list[tuple[Any, Path, int, int]] = []
    name: str | None = trial_name
    end, seen = END, set()
    while name is not None and name not in seen:
        seen.add(name)
        trial = exp.trial(name)
        lineage = trial.status().get("lineage") or [segment(0, {}, ())]
        name = None
        for k in reversed(range(len(lineage))):
            start = int(lineage[k].get("from_step", 0))
            if start >= end:
                continue  # this trial's later stretch: not what the clone took
            last = k == len(lineage) - 1
            out.append((trial, trial.path if last else trial.path / "lineage" / f"segment-{k}",
                        start, end))
            src = lineage[k].get("cloned_from")
            if src:  # earlier segments of this trial were replaced by the clone
                name, end = src["trial"], int(src["step"])
                break
            end = start
    return list(reversed(out))


def learning_rate_history(exp: Any, trial_name: str) -> list[tuple[int, float]]:
    """``(step, learning rate)`` as training logged it along the trial's best lineage."""
    from sweep.metrics import LEARNING_RATE, read_scalars

    out: list[tuple[int, float]] = []
    for _, root, start, end in chain(exp, trial_name):
        rows = {s.step: s.value for s in read_scalars(root / "train", [LEARNING_RATE])}
        out += [(s, v) for s, v in sorted(rows.items()) if start < s <= end]
    return out


MAX_REPLAY_STEPS = 200  # boundaries in the replayed manual schedule


def replay_params(history: list[tuple[int, float]], rel_tol: float = 0.02
                  ) -> dict[str, Any]:
    """A ``manual_step_learning_rate`` that follows ``history`` from step 0 in one run: a new
    boundary where the rate moved by more than ``rel_tol`` (at most MAX_REPLAY_STEPS)."""
    if not history:
        raise ValueError("no learning_rate summaries along this lineage")
    steps: list[list[float]] = []
    current = history[0][1]
    for step, rate in history[1:]:
        if abs(rate - current) > rel_tol * max(abs(current), 1e-12):
            steps.append([int(step), float(rate)])
            current = rate
    if len(steps) > MAX_REPLAY_STEPS:
        keep = len(steps) / MAX_REPLAY_STEPS
        steps = [steps[int(i * keep)] for i in range(MAX_REPLAY_STEPS)]
    return {"learning_rate": "manual_step_learning_rate",
            "manual_step_learning_rate.initial_learning_rate": float(history[0][1]),
            "manual_step_learning_rate.schedule": steps}


def replay_note(exp: Any, trial_name: str) -> str:
    """What else changed between the lineage's segments (the replay keeps the last values)."""
    lines = []
    for trial, _, start, end in chain(exp, trial_name):
        for seg in trial.status().get("lineage") or []:
            if int(seg.get("from_step", 0)) == start:
                values = ", ".join(f"{k} {_fmt(v)}" for k, v in seg["params"].items())
                lines.append(f"steps {start}-{end if end < END else 'end'}: {trial.name} "
                             f"({values})")
    return "\n".join(lines)


# ------------------------------------------------------------------------- the report's figure

def lineage_figure(exp: Any, best: str | None, out: Path, metric: str) -> Path | None:
    """Every trial's ``metric`` over steps, step-aligned, each clone drawn as a jump from its
    source's point (a dashed line), and below it the learning rate ``best``'s lineage trained
    with. None when no trial was ever cloned."""
    from sweep.metrics import read_scalars

    trials = [t for t in exp.trials() if len(t.status().get("lineage") or []) > 1]
    if not trials:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, low) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    for i, t in enumerate(exp.trials()):
        color = f"C{i % 10}"
        lineage = t.status().get("lineage") or []
        for k, seg in enumerate(lineage):
            root = t.path if k == len(lineage) - 1 else t.path / "lineage" / f"segment-{k}"
            pts = sorted((s.step, s.value) for s in read_scalars(root / "eval", [metric])
                         if s.step > int(seg.get("from_step", 0)))
            src = seg.get("cloned_from")
            if src:  # the jump: from the source's value at the clone step
                sv = [s.value for s in read_scalars(exp.trial(src["trial"]).path / "eval",
                                                    [metric]) if s.step == int(src["step"])]
                if sv and pts:
                    top.plot([src["step"], pts[0][0]], [sv[-1], pts[0][1]], ls="--", lw=1,
                             color=color)
            if pts:
                top.plot(*zip(*pts, strict=True), marker="o", ms=3, color=color,
                         label=t.name if k == 0 else None)
    top.set_ylabel(metric.rsplit("/", 1)[-1])
    top.set_title("Every trial's metric; dashed: a clone continuing from a better trial")
    top.legend(fontsize=7, ncol=2)
    if best:
        history = learning_rate_history(exp, best)
        if history:
            low.step(*zip(*history, strict=True), where="post", color="k")
            low.set_title(f"Learning rate along {best}'s lineage", fontsize=9)
    low.set_xlabel("step")
    low.set_ylabel("learning rate")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=96, bbox_inches="tight")
    plt.close(fig)
    return out
