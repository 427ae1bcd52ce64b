"""The HTML report's interactive figures, drawn by Optuna's visualization module (plotly).

Optuna draws them from a study; the report draws them from an in-memory copy of the trials as
the report reads them (``mirror_study``): each trial's value is its best evaluation (the
leaderboard's ``objective``), its intermediate values are its evaluations step by step, and its
parameters carry the space's short names. So the figures, the tables and the verdict agree, and
they work for an experiment whose study is busy, elsewhere or gone. Distributions (for log axes)
come from the sweep's own study when it is readable.

Each figure becomes a ``<div>`` (plotly.js itself is inlined once by the page, see
``plotly_js``); ``None`` with a reason when there is nothing to draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sweep.core.experiment import COMPLETED, FAILED, INTERRUPTED, RUNNING, STOPPED
from sweep.odapi import metrics as m
from sweep.report import short_names
from sweep.report.report_data import LABELS, MIN_TRIALS_FOR_IMPORTANCES, TOP_K, Gathered, public_params

CONTOUR_PARAMS = 3  # a contour matrix grows as n^2: only the most varied few


@dataclass
class Figure:
    key: str  # the <div>'s id is "fig-<key>"
    title: str
    html: str


def plotly_js() -> str:
    """plotly.js, from the installed plotly package (no network: the page works offline)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _infer_distribution(values: list[Any]) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return IntDistribution(min(values), max(values))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        lo, hi = float(min(values)), float(max(values))
        return FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 10)
    return CategoricalDistribution(sorted({v for v in values}, key=repr))


def _short_keys(names: list[str]) -> dict[str, str]:
    """Full parameter name -> short name, unique (a clash keeps the full names)."""
    short = {n: short_names.leaf_name(n) for n in names}
    clashes = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {n: (n if s in clashes else s) for n, s in short.items()}


def mirror_study(g: Gathered, real_study: Any | None = None) -> tuple[Any, dict[str, str]]:
    """An in-memory Optuna study with one trial per trial folder (creation order, so Optuna's
    trial number N is the Runs table's row N, from 0); returns it and {short: full name}."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize" if o.mode == "max" else "minimize" for o in g.objectives]
    study = optuna.create_study(directions=directions)
    params = {row["trial"]: public_params(g.trials[row["trial"]].params())
              for _, row in g.df.iterrows()}
    names = list(dict.fromkeys(k for p in params.values() for k in p))
    short = _short_keys(names)
    real: dict[str, Any] = {}
    if real_study is not None:
        for t in real_study.get_trials(deepcopy=False):
            real.update({k: d for k, d in t.distributions.items() if k not in real})
    dists = {}
    for n in names:
        seen = [p[n] for p in params.values() if n in p]
        d = real.get(n)
        dists[n] = d if d is not None and all(_contains(d, v) for v in seen) \
            else _infer_distribution(seen)
    states = {COMPLETED: TrialState.COMPLETE, STOPPED: TrialState.PRUNED,
              FAILED: TrialState.FAIL, RUNNING: TrialState.RUNNING,
              INTERRUPTED: TrialState.RUNNING}  # unfinished: resume continues it
    obj_cols = ["objective"] + [f"objective:{o.tag}" for o in g.objectives[1:]]
    for _, row in g.df.iterrows():
        state = states.get(row["state"])
        if state is None:  # PENDING: nothing to show yet
            continue
        values = [row.get(c) for c in obj_cols]
        finite = all(v is not None and not _isnan(v) for v in values)
        if state == TrialState.COMPLETE and not finite:
            state = TrialState.FAIL  # completed without an evaluation: nothing to plot
        tm = g.metrics[row["trial"]]
        inter = ({s: float(r[g.objectives[0].tag]) for s, r in tm.eval.items()
                  if s > 0 and g.objectives[0].tag in r
                  and math.isfinite(r[g.objectives[0].tag])} if len(directions) == 1 else None)
        p = params[row["trial"]]
        study.add_trial(create_trial(
            state=state, values=[float(v) for v in values] if state == TrialState.COMPLETE
            else None,
            params={short[k]: v for k, v in p.items()},
            distributions={short[k]: dists[k] for k in p},
            user_attrs={"trial": row["trial"]}, intermediate_values=inter or None))
    return study, {s: n for n, s in short.items()}


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def _contains(d: Any, v: Any) -> bool:
    try:
        return d._contains(d.to_internal_repr(v))
    except Exception:  # noqa: BLE001 - a value of another type: not this distribution
        return False


def completed(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _div(fig: Any, key: str) -> str:
    fig.update_layout(margin={"l": 60, "r": 20, "t": 40, "b": 50})
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{key}",
                       config={"displaylogo": False, "responsive": True})


def _varied(study: Any) -> list[str]:
    trials = [t for t in study.get_trials(deepcopy=False) if t.values]
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    return [n for n in names if len({repr(t.params.get(n)) for t in trials if n in t.params}) > 1]


def loss_figure(g: Gathered) -> Any | None:
    """Training total loss against step for the top trials (not an Optuna figure: Optuna
    knows only what was reported, not the training curve)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    drawn = 0
    for name in list(g.ranked()["trial"][:TOP_K]):
        pts = sorted((s, r[m.TOTAL_LOSS]) for s, r in g.metrics[name].train.items()
                     if m.TOTAL_LOSS in r and math.isfinite(r[m.TOTAL_LOSS]))
        if pts:
            fig.add_trace(go.Scatter(x=[s for s, _ in pts], y=[v for _, v in pts],
                                     mode="lines", name=name))
            drawn += 1
    if not drawn:
        return None
    fig.update_layout(xaxis_title="step", yaxis_title="total loss (train)")
    return fig


def figures(g: Gathered, study: Any, metric_label: str) -> tuple[list[Figure], list[str]]:
    """Every figure that applies to ``study`` (``mirror_study(g)``), and a sentence for each
    one that does not."""
    import optuna.visualization as vis
    from optuna.importance import FanovaImportanceEvaluator

    done = completed(study)
    varied = _varied(study)
    single = len(g.objectives) == 1
    target = None if single else (lambda t: t.values[0])
    out: list[Figure] = []
    why: list[str] = []

    def add(key: str, title: str, make: Any, missing: str) -> None:
        try:
            fig = make()
        except (ValueError, RuntimeError) as e:  # e.g. too few distinct values
            why.append(f"{title}: not drawn ({e})")
            return
        if fig is None:
            why.append(f"{title}: {missing}")
        else:
            out.append(Figure(key, title, _div(fig, key)))

    if done == 0:
        why.append("Interactive figures: no trial has completed with an evaluation yet.")
    else:
        add("history", f"Best {metric_label} of each trial, in trial order",
            lambda: vis.plot_optimization_history(study, target=target,
                                                  target_name=metric_label), "")
    if single:
        add("intermediate", f"{metric_label} at each evaluation, per trial",
            lambda: vis.plot_intermediate_values(study)
            if any(t.intermediate_values for t in study.trials) else None,
            "no evaluations yet")
    add("loss", f"Total loss against step (top {TOP_K} trials)", lambda: loss_figure(g),
        "no training curves yet")
    if done and varied:
        add("slice", f"Each parameter against the best {metric_label}",
            lambda: vis.plot_slice(study, params=varied, target=target,
                                   target_name=metric_label), "")
        add("parallel", "Parallel coordinates",
            lambda: vis.plot_parallel_coordinate(study, params=varied, target=target,
                                                 target_name=metric_label), "")
    numeric = [p for p in varied if _numeric(study, p)][:CONTOUR_PARAMS]
    if done >= 3 and len(numeric) >= 2:
        add("contour", f"Contour of the best {metric_label} over pairs of parameters",
            lambda: vis.plot_contour(study, params=numeric, target=target,
                                     target_name=metric_label), "")
    if done >= MIN_TRIALS_FOR_IMPORTANCES and varied:  # else the report's note says why
        add("importances", "Parameter importances (fANOVA)",
            lambda: vis.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                               target=target, target_name=metric_label), "")
    if not single:
        names = [f"{LABELS.get(o.tag, o.tag)} ({o.mode})" for o in g.objectives[:2]]
        add("pareto", "Pareto front",
            lambda: vis.plot_pareto_front(study, target_names=names,
                                          targets=lambda t: t.values[:2])
            if done else None, "no completed trial yet")
    return out, why


def _numeric(study: Any, name: str) -> bool:
    from optuna.distributions import FloatDistribution, IntDistribution

    return any(isinstance(t.distributions.get(name), FloatDistribution | IntDistribution)
               for t in study.get_trials(deepcopy=False))
