"""How the sweep searches: the Optuna sampler for a space and budget, and which known points
run. The one place samplers are built (``sweep run``, validation and the benchmarks' replay
all call ``make_sampler``). No Ray here (``sweep.run.tune_backend`` wires these into Ray Tune)."""

from __future__ import annotations

import sys
import warnings
from typing import Any

from sweep.core import errors

# TPE is random search until this many trials have finished; Optuna's default (10) would make
# a 16-trial sweep random search for most of its length.
MAX_STARTUP_TRIALS = 10
# Up to this many trials TPE stays random search: on the recorded table of real OD API curves
# (benchmarks/results/search_replay.md, 2026-12-02) TPE's model gained nothing over random
# search at 8 trials (true mAP of the recommended config 0.487 vs 0.487-0.489, 50 replayed
# sweeps each); from 16 trials its quarter-of-the-budget start-up was level with random or
# ahead (+0.006 at 16, within noise).
RANDOM_UP_TO = 8


def tpe_startup_trials(num_trials: int, num_points: int) -> int:
    """Trials before TPE models the results: the whole budget up to ``RANDOM_UP_TO`` trials
    (random search: the replay found TPE's model no better there), else a quarter of the
    budget (2 to 10), of which the known points are a part (they count as finished trials).

    >>> tpe_startup_trials(4, 1), tpe_startup_trials(8, 0), tpe_startup_trials(16, 1)
    (4, 8, 4)
    >>> tpe_startup_trials(20, 0), tpe_startup_trials(100, 0)
    (5, 10)
    >>> tpe_startup_trials(20, 8)  # the points alone are the start-up
    8
    """
    if num_trials <= RANDOM_UP_TO:
        return num_trials
    return max(min(num_points, num_trials), min(MAX_STARTUP_TRIALS, max(2, num_trials // 4)))


def make_sampler(name: str, *, seed: int | None = 0, num_trials: int = 4, max_concurrent: int = 1,
                 space: Any = None, num_points: int = 0,
                 startup: int | None = None):  # noqa: ANN201
    """The Optuna sampler named by ``--sampler``, configured for a sweep of ``num_trials`` with
    ``max_concurrent`` running at once and ``num_points`` known points. ``startup``: TPE's
    start-up trials instead of ``tpe_startup_trials`` (the replay benchmark's what-ifs)."""
    import optuna

    if name == "tpe":
        # constant_liar: trials running at once do not all get the same suggestion;
        # multivariate+group: parameters under a `choice` are modelled together per branch.
        with warnings.catch_warnings():  # "experimental" since Optuna 2.x, and long stable
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=(tpe_startup_trials(num_trials, num_points)
                                             if startup is None else startup),
                constant_liar=max_concurrent > 1, multivariate=True, group=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        # Scrambled: an unscrambled Sobol sequence ignores the seed, so every sweep drew the
        # same configs whatever --seed said. One driver samples, so scrambling is safe.
        with warnings.catch_warnings():  # "experimental" since Optuna 3.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, scramble=True,
                                              warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "grid":
        grid, continuous = space.grid()
        if continuous or not grid:
            raise errors.ConfigError(grid_problem(space, continuous))
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise errors.ConfigError(f"unknown sampler {name!r}")


def grid_problem(space: Any, continuous: list[str]) -> errors.Problem:
    where = str(space.path) if getattr(space, "path", None) else "search space"
    if not continuous:
        return errors.Problem(where, "parameters", "--sampler grid needs at least one searched "
                              "parameter", "add a choice, int or stepped parameter")
    return errors.Problem(
        where, ", ".join(continuous), "--sampler grid needs every searched parameter discrete, "
        "but these are continuous (uniform/loguniform, or bounds taken from another parameter)",
        "make them `categorical`, `int` or `stepped` with fixed bounds, or use --sampler tpe")


def known_points(points: list[dict[str, Any]], num_trials: int, *, space: Any = None,
                 sampler: str = "") -> list[dict[str, Any]]:
    """The known points that fit the budget (they run first); warns about the rest, which are
    left out of the study (an enqueued point never run would stay WAITING in it for ever).
    A grid runs only points that set every active parameter (Optuna's GridSampler cannot
    complete a partial one; the grid itself covers the rest)."""
    if sampler == "grid" and space is not None:
        complete = [p for p in points if _complete(space, p)]
        if len(complete) < len(points):
            print(f"sweep: warning: --sampler grid: leaving out {len(points) - len(complete)} "
                  "known point(s) that do not set every searched parameter (e.g. `base` when "
                  "the base config's values are not on the grid)", file=sys.stderr, flush=True)
        points = complete
    if len(points) <= num_trials:
        return points
    print(f"sweep: warning: the space has {len(points)} known points but --num-trials is "
          f"{num_trials}; running the first {num_trials}, leaving out {len(points) - num_trials}"
          f" (raise --num-trials to run them all)", file=sys.stderr, flush=True)
    return points[:num_trials]


def _complete(space: Any, point: dict[str, Any]) -> bool:
    """Whether ``point`` gives a value on the grid to every parameter active under its choices."""
    grid, _ = space.grid()
    for p, cond in space.walk():
        if p.sampled and all(point.get(k) == v for k, v in cond):
            if p.name not in point or not any(
                    point[p.name] == v and type(point[p.name]) is type(v)
                    for v in grid.get(p.name, [])):
                return False
    return True
