"""What a trial's "best" is: the one rule that the runner, the report, `sweep export`, `sweep
status` and ``fine_tune_checkpoint: best:EXPERIMENT`` all call.

- A trial's best is its evaluation (step > 0) with the best value of the sweep's first metric
  as it was reported to Ray Tune and Optuna: COCO metrics from the eval job at that step,
  losses and the learning rate from the training job's latest summary at or before it. NaN and
  Inf never win; on a tie the earlier step wins.
- Its checkpoint is the one the eval job evaluated at that step (``eval/evaluated.jsonl``):
  the runner's copy in ``best/`` or the ``ckpt-N`` still kept. When neither is on disk any
  more, the kept checkpoint nearest that step stands in, and ``TrialBest.exact`` says so.
- An experiment's best trial is the one with the best such value among trials that did not
  fail; on a tie the trial created first wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.core.experiment import (
    FAILED,
    Experiment,
    TrialDir,
    find_experiment,
    read_evaluated,
    read_json,
)
from sweep.odapi import metrics as m

BEST_DIR = "best"
BEST_JSON = "best.json"


def objective(settings: dict[str, Any]) -> tuple[str, str]:
    """``(OD API tag, "max"|"min")`` of the sweep's first metric, from experiment.json."""
    return (settings.get("metrics") or [m.MAP])[0], (settings.get("modes") or ["max"])[0]


def better(value: float | None, than: float | None, mode: str) -> bool:
    """Whether ``value`` strictly beats ``than`` (anything finite beats None; NaN never wins)."""
    if value is None or not math.isfinite(value):
        return False
    if than is None:
        return True
    return value > than if mode == "max" else value < than


def reported(tm: m.TrialMetrics, tag: str, step: int) -> float | None:
    """The value of ``tag`` the runner reported for the eval at ``step``: losses and learning
    rate from the training job at that step, COCO metrics from the eval job.

    The eval job writes its own ``Loss/*`` too; the runner never mixes them in, nor does this.
    """
    if tag in m.TRAIN_SOURCED:  # the runner's result rule
        before = [s for s in tm.train if s <= step and tag in tm.train[s]]
        return tm.train[max(before)][tag] if before else None
    return tm.eval.get(step, {}).get(tag)


def best_eval(tm: m.TrialMetrics, tag: str, mode: str, up_to: int | None = None
              ) -> tuple[int, float] | None:
    """``(eval step, value)`` of the trial's best evaluation by ``tag`` (at or before step
    ``up_to``, when given: to compare two trials at the same training length)."""
    found: tuple[int, float] | None = None
    for step in sorted(tm.eval):
        if step <= 0 or (up_to is not None and step > up_to):
            continue
        value = reported(tm, tag, step)
        if better(value, None if found is None else found[1], mode):
            assert value is not None
            found = (step, value)
    return found


def checkpoint_steps(trial: TrialDir) -> dict[str, int]:
    """``{checkpoint name: global step}`` as the eval job recorded them."""
    return {row["checkpoint"]: int(row["step"]) for row in read_evaluated(trial.path)
            if "checkpoint" in row and "step" in row}


def kept_best(trial: TrialDir) -> dict[str, Any]:
    """What the runner's ``best/best.json`` says (``step``, ``value``, ``checkpoint``), or {}."""
    return read_json(trial.path / BEST_DIR / BEST_JSON) or {}


def nearest_checkpoint(trial: TrialDir, step: int) -> tuple[Path, int] | None:
    """The checkpoint on disk (prefix, its step) nearest ``step``: the runner's ``best/`` copy
    or a kept ``ckpt-N`` whose step the eval job recorded. On a tie ``best/`` wins, then the
    later checkpoint."""
    known = checkpoint_steps(trial)
    candidates = [(known[prefix.name], 0, prefix) for _, prefix in trial.checkpoints()
                  if prefix.name in known]
    kept = kept_best(trial)
    if kept.get("checkpoint") and kept.get("step") is not None:
        prefix = trial.path / BEST_DIR / str(kept["checkpoint"])
        if prefix.with_name(prefix.name + ".index").exists():
            candidates.append((int(kept["step"]), -1, prefix))
    if not candidates:
        return None
    ck_step, _, prefix = min(candidates, key=lambda c: (abs(c[0] - step), c[1], -c[0]))
    return prefix, ck_step


@dataclass(frozen=True)
class TrialBest:
    """A trial's best evaluation and the checkpoint that goes with it."""

    trial: TrialDir
    tag: str
    mode: str
    step: int
    value: float
    checkpoint: Path | None  # prefix, e.g. <trial>/best/ckpt-4; None when none is on disk
    checkpoint_step: int | None

    @property
    def exact(self) -> bool:
        """The checkpoint is the one that was evaluated at ``step`` (not a stand-in)."""
        return self.checkpoint is not None and self.checkpoint_step == self.step


def trial_best(trial: TrialDir, tag: str, mode: str,
               tm: m.TrialMetrics | None = None) -> TrialBest | None:
    """The trial's best evaluation by ``tag`` and its checkpoint, or None if never evaluated."""
    tm = tm if tm is not None else m.read_trial(trial.path)
    found = best_eval(tm, tag, mode)
    if found is None:
        return None
    ck = nearest_checkpoint(trial, found[0])
    return TrialBest(trial, tag, mode, found[0], found[1],
                     ck[0] if ck else None, ck[1] if ck else None)


def rank(bests: Iterable[tuple[str, TrialBest | None]]) -> list[str]:
    """Trial names best first, among ``(name, best)`` pairs given in creation order; trials
    with no best are left out. Stable: on a tie the earlier trial stays ahead."""
    rows = [(name, b) for name, b in bests if b is not None]
    rows.sort(key=lambda nb: -nb[1].value if nb[1].mode == "max" else nb[1].value)
    return [name for name, _ in rows]


def experiment_best(exp: Experiment) -> TrialBest | None:
    """The best trial of an experiment by its first metric (failed trials excluded)."""
    tag, mode = objective(exp.settings())
    candidates = [(t.name, trial_best(t, tag, mode)) for t in exp.trials()
                  if t.status().get("state") != FAILED]
    names = rank(candidates)
    return dict(candidates)[names[0]] if names else None


def best_checkpoint(experiment: str, storage: str | Path = "experiments") -> Path:
    """The checkpoint prefix of the best evaluation of the best trial of an earlier experiment,
    by that experiment's own metric (the same one the report and export name): what a
    ``best:EXPERIMENT`` fine-tune checkpoint means.
    Raises ``FileNotFoundError`` when there is none to fine-tune from."""
    exp = find_experiment(experiment, storage)
    found = experiment_best(exp)
    if found is None:
        tag = (exp.settings().get("metrics") or ["the sweep's metric"])[0]
        raise FileNotFoundError(
            f"experiment {exp.root}: no trial has an evaluation of {tag} yet. Let its trials "
            "train and evaluate, or give fine_tune_checkpoint a checkpoint path")
    if found.checkpoint is None:
        raise FileNotFoundError(
            f"experiment {exp.root}: its best trial {found.trial.name} (step {found.step}) has no "
            f"checkpoint on disk any more (no {found.trial.path}/best/). Give fine_tune_checkpoint "
            "a checkpoint path instead")
    return found.checkpoint
