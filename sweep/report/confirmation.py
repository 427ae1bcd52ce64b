"""Confirmation over seeds: what the verdict rests on once configs were retrained.

``sweep confirm`` (or ``sweep run --confirm N``) retrains the search's top configs and the base
config with N new seeds each, to the end of training; those runs are tagged
(``sweep.search.marks.CONFIRM``) and scored at their final evaluation, a step fixed in advance,
never at their own best one. The search's own run of a config is not among them: it was
selected because it did well, so it is biased upward.

The interval of ``mean(best) - mean(base)`` takes both noises in: a two-level bootstrap
(Bouthillier et al., MLSys 2021, recommend accounting for both): each resample draws every
config's seeds with replacement (training noise: data order, initialisation, augmentation) and
the eval images with replacement, the same images for every run (eval-set noise, paired as in
``sweep.report.bootstrap``), and recomputes each run's COCO mAP on that image draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sweep.report import bootstrap

LEVEL = bootstrap.LEVEL
RESAMPLES = bootstrap.RESAMPLES
Z = 1.96  # two-sided 95%


@dataclass
class ConfirmedConfig:
    """One config's confirmation runs: the search trial it retrains, and each run's final mAP."""

    of: str  # the search trial whose config this is
    base: bool
    runs: dict[str, float] = field(default_factory=dict)  # confirmation trial -> final mAP
    seeds: dict[str, int | None] = field(default_factory=dict)
    step: int | None = None  # the step they are scored at (num_steps)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.runs.values()))) if self.runs else math.nan

    @property
    def sd(self) -> float:
        v = list(self.runs.values())
        return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan


@dataclass
class Verdict:
    """The confirmed comparison: the recommended config against the base over seeds."""

    winner: ConfirmedConfig
    base: ConfirmedConfig
    diff: float  # mean(winner) - mean(base)
    low: float
    high: float
    resamples: int
    n_images: int | None  # None when the interval could not resample images (seeds only)
    seeds_needed: int | None  # seeds per config that would likely settle a difference this size
    base_best: bool = False  # the base config has the best mean: keep it

    @property
    def recommended(self) -> ConfirmedConfig:
        return self.base if self.base_best else self.winner

    @property
    def distinguishable(self) -> bool:
        return self.low > 0 or self.high < 0


def two_level_interval(a: np.ndarray, b: np.ndarray, *, resamples: int = RESAMPLES,
                       seed: int = 0) -> tuple[float, float, int]:
    """The ``LEVEL`` interval of ``mean(b) - mean(a)`` from per-run mAPs on image draws.

    ``a`` and ``b`` are ``[runs, draws]``: column ``j`` is every run's mAP on the ``j``-th
    bootstrap draw of eval images (the same draw for all runs). Resample ``j`` draws each
    config's runs with replacement and averages them on image draw ``j``. Returns
    (low, high, resamples used)."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    draws = min(a.shape[1], b.shape[1])
    rng = np.random.default_rng(seed)
    n = min(resamples, draws)
    ia = rng.integers(0, a.shape[0], (n, a.shape[0]))
    ib = rng.integers(0, b.shape[0], (n, b.shape[0]))
    cols = np.arange(n)
    d = b[ib, cols[:, None]].mean(axis=1) - a[ia, cols[:, None]].mean(axis=1)
    d = d[np.isfinite(d)]
    if not len(d):
        return math.nan, math.nan, 0
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(d, [tail, 1 - tail])
    return float(low), float(high), len(d)


def seeds_needed(a: ConfirmedConfig, b: ConfirmedConfig) -> int | None:
    """Seeds per config at which a difference of this size would clear the training noise
    seen (``Z * sqrt(sd_a² / n + sd_b² / n) < |diff|``); None without spread or difference."""
    diff = b.mean - a.mean
    var = np.nansum([a.sd ** 2, b.sd ** 2])
    if not np.isfinite(diff) or diff == 0 or not np.isfinite(var) or var == 0:
        return None
    return max(2, math.ceil(Z * Z * var / diff / diff))


def image_draws(per_image: list[bootstrap.PerImage], resamples: int, seed: int = 0
                ) -> np.ndarray:
    """``[runs, resamples]`` mAPs: each run's COCO mAP on the same bootstrap draws of images."""
    counts = bootstrap.draw_counts(len(per_image[0].image_ids), resamples, seed)
    return np.vstack([bootstrap.mean_aps(pi, counts) for pi in per_image])


def decide(configs: list[ConfirmedConfig], mode: str,
           detections: dict[str, tuple[dict, list[dict]]] | None = None,
           resamples: int = RESAMPLES) -> Verdict | None:
    """The recommended config (best mean over its seeds, the base included as a candidate)
    against the base config, or None without a confirmed base and another confirmed config.

    ``detections``: each confirmation run's kept (ground truth, detections) at the scored
    step; with them the interval resamples eval images too, otherwise seeds only."""
    base = next((c for c in configs if c.base and c.runs), None)
    others = [c for c in configs if c.runs]
    if base is None or len(others) < 2:
        return None
    pick = max if mode == "max" else min
    winner = pick(others, key=lambda c: c.mean)
    base_best = winner is base
    if base_best:  # the base won: compare it with the best of the rest
        winner = pick([c for c in others if c is not base], key=lambda c: c.mean)
    runs = list(base.runs) + list(winner.runs)
    n_images = None
    if detections and all(r in detections for r in runs):
        gt = detections[runs[0]][0]
        ids = {i["id"] for i in gt["images"]}
        if all({i["id"] for i in detections[r][0]["images"]} == ids for r in runs):
            pis = [bootstrap.evaluate(gt, detections[r][1]) for r in runs]
            draws = image_draws(pis, resamples)
            a, b = draws[:len(base.runs)], draws[len(base.runs):]
            n_images = len(ids)
    if n_images is None:  # seeds only: every column the same (no image noise)
        a = np.repeat(np.array(list(base.runs.values()))[:, None], resamples, axis=1)
        b = np.repeat(np.array(list(winner.runs.values()))[:, None], resamples, axis=1)
    low, high, used = two_level_interval(a, b, resamples=resamples)
    return Verdict(winner, base, winner.mean - base.mean, low, high, used, n_images,
                   seeds_needed(base, winner), base_best)


def describe(v: Verdict, label: str, experiment: str) -> list[str]:
    """The verdict's sentences for a confirmed comparison."""
    w, b = v.winner, v.base
    n = min(len(w.runs), len(b.runs))
    how = (f"bootstrap over seeds and, within them, the {v.n_images} eval images"
           if v.n_images else "bootstrap over seeds (no per-image detections were kept)")
    lines = [
        f"Confirmed over seeds, each scored at its final evaluation (step {w.step}): "
        f"{w.of}'s config {label} {w.mean:.4g} (sd {_sd(w)}, {len(w.runs)} seeds) vs the base "
        f"config {b.mean:.4g} (sd {_sd(b)}, {len(b.runs)} seeds): difference {v.diff:+.3g}, "
        f"{LEVEL:.0%} interval [{v.low:+.3g}, {v.high:+.3g}] ({how}, {v.resamples} resamples; "
        "docs/report.md: Is the win real?)."]
    if v.base_best:
        lines.append("The base config has the best mean over its seeds: keep it"
                     + (" (the difference is beyond training and eval-image noise)."
                        if v.distinguishable else
                        f"; the best other config is not distinguishable from it at {n} seeds."))
    elif v.distinguishable:
        lines.append(f"The interval excludes 0: at {n} seeds {w.of}'s config beats the base "
                     "config beyond training and eval-image noise.")
    else:
        more = (f"; about {v.seeds_needed} seeds each would likely settle a difference this "
                f"size (`sweep confirm {experiment} --seeds {v.seeds_needed}`)"
                if v.seeds_needed else "")
        lines.append(f"Not distinguishable from the base config at {n} seeds: the interval "
                     f"includes 0{more}.")
    return lines


def _sd(c: ConfirmedConfig) -> str:
    return f"{c.sd:.2g}" if np.isfinite(c.sd) else "-"


def gather_configs(trials: dict[str, Any], params_of: Any, final_map: Any) -> list[ConfirmedConfig]:
    """Group confirmation trials by the search trial they retrain. ``params_of(name)`` gives a
    trial's params, ``final_map(name)`` its ``(step, mAP)`` at its final evaluation or None."""
    from sweep.search import marks

    groups: dict[str, ConfirmedConfig] = {}
    for name in trials:
        params = params_of(name)
        c = marks.confirm_of(params)
        if not c:
            continue
        g = groups.setdefault(str(c.get("of")), ConfirmedConfig(str(c.get("of")),
                                                                bool(c.get("base"))))
        final = final_map(name)
        if final is not None:
            g.step, g.runs[name] = final[0], final[1]
            g.seeds[name] = marks.seed_of(params)
    return list(groups.values())
