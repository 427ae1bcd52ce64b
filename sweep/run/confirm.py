"""Confirmation trials: the search's top configs and the base config, retrained with new seeds.

A sweep's best trial is the luckiest of many single runs, picked on the same eval images it
is scored on. ``sweep confirm`` (and ``sweep run --confirm N``) retrains the top ``K`` configs
by the sweep's metric (the base config's trial not counted among them) and the base config, N
times each with new seeds, for the full ``num_steps``. Each run is a trial of the same
experiment, named ``c-<trial>-<i>`` and tagged ``_confirm`` (``sweep.search.marks``), so
``status``, TensorBoard and the report show it; it never feeds the sampler, and its folder is
its truth: confirming again runs only what is not COMPLETED (an interrupted run continues
from its checkpoint). The report scores each at its final evaluation
(``sweep.report.confirmation``).
"""

from __future__ import annotations

import zlib
from typing import Any

from sweep.core.experiment import COMPLETED, FAILED, Experiment
from sweep.run import best
from sweep.search import marks

PREFIX = "c-"


def confirm_seed(sweep_seed: int | None, of: str, index: int) -> int:
    """A confirmation run's seed: new (not a search trial's), a pure function of the sweep's
    seed, the trial it retrains and its index."""
    return marks.trial_seed(int(sweep_seed or 0) * 1_000_003 + zlib.crc32(of.encode()), 10_000 + index)


def is_confirmation(name: str, params: dict[str, Any]) -> bool:
    return name.startswith(PREFIX) or marks.confirm_of(params) is not None


def choose(exp: Experiment, top: int) -> tuple[list[str], str | None]:
    """(the top ``top`` search trials by the sweep's first metric, the base config's search
    trial). Failed trials and confirmation runs are not candidates."""
    s = exp.settings()
    tag, mode = (s.get("metrics") or ["DetectionBoxes_Precision/mAP"])[0], (s.get("modes") or ["max"])[0]
    bests, base = [], None
    for t in exp.trials():
        params = t.params()
        if is_confirmation(t.name, params) or t.status().get("state") == FAILED:
            continue
        if marks.is_base(params):
            base = base or t.name
            continue
        bests.append((t.name, best.trial_best(t, tag, mode)))
    return best.rank(bests)[:top], base


def plan(exp: Experiment, seeds: int, top: int) -> list[dict[str, Any]]:
    """Every confirmation run's config, base config first: the trial's own parameters, a new
    seed, and the ``_confirm`` tag (``of``: the trial retrained, ``base``, ``index``, ``name``).
    Raises ``ValueError`` when there is nothing to confirm against."""
    chosen, base = choose(exp, top)
    if base is None:
        raise ValueError(f"experiment {exp.root}: no trial ran the base config (the space's "
                         "`base` point), so there is nothing to confirm against")
    if not chosen:
        raise ValueError(f"experiment {exp.root}: no trial besides the base has an evaluation "
                         "of the sweep's metric yet")
    seed = exp.settings().get("seed")
    configs = []
    for of in [base, *chosen]:
        params = {k: v for k, v in exp.trial(of).params().items() if not k.startswith("_")}
        for i in range(seeds):
            name = f"{PREFIX}{of}-{i}"
            configs.append({**params, marks.SEED: confirm_seed(seed, of, i),
                            marks.CONFIRM: {"of": of, "base": of == base, "index": i,
                                            "name": name}})
    return configs


def pending(exp: Experiment, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The configs whose confirmation trial has not COMPLETED yet."""
    return [c for c in configs
            if exp.trial(c[marks.CONFIRM]["name"]).status().get("state") != COMPLETED]
