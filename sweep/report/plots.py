"""The report's figures, as PNG files (matplotlib, Agg backend: no display needed).

Each function draws one figure from plain data (curves, a leaderboard DataFrame, importances)
and returns the PNG's path, or ``None`` when there is nothing to draw, so the report can say
why a plot is missing instead of showing an empty one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports run on headless machines and in Ray workers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 96


def short_name(name: str) -> str:
    """A parameter's or metric's name on an axis: the report's short name (sweep.report.short_names)."""
    from sweep.report.short_names import leaf_name

    return leaf_name(name.removeprefix("param:").removeprefix("best:"))


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)  # a browser refreshing the report never sees half a PNG
    return path


def curves(series: Mapping[str, Mapping[int, float]], path: Path, *, title: str,
           ylabel: str, log_y: bool = False) -> Path | None:
    """One line per trial: ``{trial: {step: value}}`` (non-finite points are dropped)."""
    drawn = {name: sorted((s, v) for s, v in pts.items() if math.isfinite(v))
             for name, pts in series.items()}
    drawn = {name: pts for name, pts in drawn.items() if pts}
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, pts in drawn.items():
        steps, values = zip(*pts, strict=True)
        ax.plot(steps, values, marker="o" if len(pts) < 15 else None, markersize=3, label=name)
    values_ = [v for pts in drawn.values() for _, v in pts]
    if log_y and min(values_) > 0 and max(values_) / min(values_) > 20:
        ax.set_yscale("log")  # only when it spans decades (e.g. a diverging trial)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _log_scale(values: pd.Series) -> bool:
    """Log axis for positive parameters spanning more than a decade (learning rates, weights)."""
    v = values.dropna()
    return _is_numeric(v) and len(v) > 1 and (v > 0).all() and v.max() / v.min() > 10


def params_vs_metric(df: pd.DataFrame, params: Sequence[str], metric: str, path: Path, *,
                     label: str) -> Path | None:
    """A scatter per parameter: parameter value (x) against the metric (y), one dot per trial."""
    rows = df[df[metric].notna()] if metric in df else df.iloc[0:0]
    params = [p for p in params if p in rows and rows[p].notna().any()]
    if rows.empty or not params:
        return None
    cols = min(3, len(params))
    nrows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    for ax, param in zip(axes.flat, params, strict=False):
        x = rows[param]
        if _is_numeric(x):
            ax.scatter(x, rows[metric], s=25)
            if _log_scale(x):
                ax.set_xscale("log")
        else:
            cats = sorted(x.dropna().astype(str).unique())
            ax.scatter([cats.index(str(v)) for v in x], rows[metric], s=25)
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=8)
        ax.set_xlabel(short_name(param))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    fig.suptitle(f"{label} against each parameter")
    fig.tight_layout()
    return _save(fig, path)


def importances(values: Mapping[str, float], path: Path, *, label: str) -> Path | None:
    """Horizontal bars of Optuna's parameter importances (largest on top)."""
    if not values:
        return None
    items = sorted(values.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(items) + 1.2))
    ax.barh([short_name(k) for k, _ in items], [v for _, v in items])
    ax.set_xlabel(f"importance for {label}")
    ax.set_title("Parameter importances (Optuna)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def pareto(df: pd.DataFrame, x: str, y: str, front: Sequence[str], path: Path, *,
           x_label: str, y_label: str) -> Path | None:
    """All trials as dots, the Pareto-optimal ones (``front``, trial names) highlighted."""
    rows = df[df[x].notna() & df[y].notna()] if x in df and y in df else df.iloc[0:0]
    if rows.empty:
        return None
    on = rows["trial"].isin(list(front))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(rows.loc[~on, x], rows.loc[~on, y], s=25, color="0.6", label="trials")
    best = rows[on].sort_values(x)
    ax.plot(best[x], best[y], "o-", color="C3", label="Pareto front")
    for _, r in rows.iterrows():
        ax.annotate(str(r["trial"]), (r[x], r[y]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title("Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def parallel_coordinates(df: pd.DataFrame, params: Sequence[str], metric: str, path: Path, *,
                         label: str, higher_is_better: bool) -> Path | None:
    """One line per trial through a [0, 1] axis per parameter and the metric, coloured by it."""
    rows = df[df[metric].notna()] if metric in df else df.iloc[0:0]
    params = [p for p in params if p in rows and rows[p].notna().any()]
    if len(rows) < 2 or not params:
        return None
    axes_names = [*params, metric]
    table = np.full((len(rows), len(axes_names)), np.nan)
    ticks: list[tuple[str, str]] = []
    for j, name in enumerate(axes_names):
        col = rows[name]
        if _is_numeric(col):
            vals = col.astype(float).to_numpy()
            if _log_scale(col):
                vals = np.log10(vals)
            lo, hi = np.nanmin(vals), np.nanmax(vals)
            table[:, j] = 0.5 if hi == lo else (vals - lo) / (hi - lo)
            ticks.append((f"{col.min():.3g}", f"{col.max():.3g}"))
        else:
            cats = sorted(col.dropna().astype(str).unique())
            idx = np.array([cats.index(str(v)) if pd.notna(v) else np.nan for v in col])
            table[:, j] = 0.5 if len(cats) == 1 else idx / (len(cats) - 1)
            ticks.append((cats[0], cats[-1]))
    colour = table[:, -1] if higher_is_better else 1 - table[:, -1]
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(1.8 * len(axes_names) + 2, 4.5))
    xs = np.arange(len(axes_names))
    for i in np.argsort(colour):  # best drawn last, on top
        ax.plot(xs, table[i], color=cmap(colour[i]), alpha=0.8, marker="o", markersize=3)
    for j, (lo, hi) in enumerate(ticks):
        ax.axvline(j, color="0.7", linewidth=0.8)
        ax.annotate(lo, (j, -0.04), ha="center", va="top", fontsize=7)
        ax.annotate(hi, (j, 1.04), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, [short_name(n) for n in params] + [label], rotation=20, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    ax.set_title(f"Parallel coordinates (colour: {label}, brighter is better)")
    return _save(fig, path)


def seeds_strip(groups: Mapping[str, Sequence[float]], path: Path, *, label: str,
                title: str) -> Path | None:
    """Each confirmed config's per-seed values as dots on one row, with its mean as a bar:
    the spread a single run hides."""
    groups = {k: list(v) for k, v in groups.items() if v}
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.7 + 0.55 * len(groups)))
    rng = np.random.default_rng(0)
    for i, values in enumerate(groups.values()):
        y = i + rng.uniform(-0.12, 0.12, len(values))
        ax.scatter(values, y, s=30, alpha=0.8, color=f"C{i % 10}", zorder=3)
        mean = float(np.mean(values))
        ax.plot([mean, mean], [i - 0.3, i + 0.3], color="k", lw=2, zorder=4)
    ax.set_yticks(range(len(groups)), list(groups), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)

