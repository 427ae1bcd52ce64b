"""What a trial's config carries besides the sampled parameters, decided in one place.

- ``_seed``: the trial's seed, drawn from the sweep's ``--seed`` and the trial's number in the
  study (so the same sweep seed gives the same trial seeds, and every trial its own). The train
  job seeds Python, NumPy and TensorFlow from it.
- ``_base``: the trial was launched with the base config's own values (the space's ``base``
  point): the reference every verdict is measured against, never stopped early.
- ``_confirm``: a confirmation trial (``sweep confirm``): the trial whose config it retrains,
  and its role. It does not feed the sampler.

The markers start with ``_`` so they are never taken for pipeline.config parameters
(``sweep.report.report_data.public_params`` drops them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SEED = "_seed"
BASE = "_base"
CONFIRM = "_confirm"
MAX_SEED = 2**31 - 1  # what TensorFlow and NumPy take


def trial_seed(sweep_seed: int | None, number: int) -> int:
    """The seed of the sweep's ``number``-th trial (0-based), a pure function of both."""
    import numpy as np

    state = np.random.SeedSequence([int(sweep_seed or 0), int(number), 0x5EED])
    return int(state.generate_state(1)[0]) % MAX_SEED


def public(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a pipeline.config is rendered from: ``params`` without the markers."""
    return {k: v for k, v in params.items() if not k.startswith("_")}


def seed_of(params: Mapping[str, Any]) -> int | None:
    value = params.get(SEED)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def is_base(params: Mapping[str, Any]) -> bool:
    return bool(params.get(BASE))


def confirm_of(params: Mapping[str, Any]) -> dict[str, Any] | None:
    value = params.get(CONFIRM)
    return dict(value) if isinstance(value, Mapping) else None


@dataclass
class MarkedDefineByRun:
    """The define-by-run function Ray's ``OptunaSearch`` calls for each new trial: the space's
    own, plus the trial's seed and, for the base point, the base marker. Both are also
    recorded as the Optuna trial's user attributes. Picklable (Ray saves the searcher)."""

    space: Any
    sweep_seed: int | None = 0
    base_point: dict[str, Any] | None = None

    def __call__(self, trial: Any) -> dict[str, Any]:
        fixed = self.space.define_by_run(trial)
        ot = getattr(trial, "ot_trial", trial)  # Ray wraps the Optuna trial in a suggest captor
        seed = trial_seed(self.sweep_seed, ot.number)
        fixed[SEED] = seed
        ot.set_user_attr("seed", seed)
        # An enqueued known point's values (Optuna keeps them as the trial's "fixed_params").
        enqueued = ot.storage.get_trial_system_attrs(ot._trial_id).get("fixed_params")
        if self.base_point is not None and enqueued is not None and _same(enqueued,
                                                                          self.base_point):
            fixed[BASE] = True
            ot.set_user_attr("base", True)
        return fixed


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    for k, v in a.items():
        w = b[k]
        if isinstance(v, float) or isinstance(w, float):
            if not isinstance(w, int | float) or abs(float(v) - float(w)) > 1e-12 * max(
                    1.0, abs(float(v))):
                return False
        elif v != w:
            return False
    return True
