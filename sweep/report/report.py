"""Best-config reports: a verdict first, then the tables and figures behind it.

``write_report(exp)`` writes ``reports/<experiment>/``:

    best/pipeline.config    the best trial's rendered config, trainable with model_main_tf2.py
    best/params.yaml|json   the best parameters; best/trial.json says where they come from
    leaderboard.csv|md      every trial: parameters, final and best metrics, steps, time, state
    report.html             verdict, sortable leaderboard, Optuna's plotly figures: one file
    report.md               the same in Markdown (the seed's Runs table, PNG plots)
    plots/*.png             for report.md; detections_*.png are the eval's own pictures

The data comes from ``sweep.report.report_data`` (gathering and ranking), the figures from
``sweep.report.report_figures``, "is the win real" from ``sweep.report.bootstrap``; this module renders and
writes. The report works on a running experiment too: it is then marked partial.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.core.experiment import FAILED, RUNNING, STOPPED, Experiment, TrialDir
from sweep.odapi import metrics as m
from sweep.report import confirmation, short_names
from sweep.report.report_data import (  # noqa: F401 - re-exported: the report's public names
    BEST,
    DETECTION,
    EVAL,
    LABELS,
    LAST_REPORTED,
    MIN_TRIALS_FOR_IMPORTANCES,
    PARAM,
    TOP_K,
    TRAIN,
    Comparison,
    Gathered,
    Objective,
    _leaderboard,
    _load_study,
    best_trial,
    compare,
    eval_noise,
    fmt,
    gather,
    kept_detections,
    leaderboard,
    nearest_checkpoint,
    noise_vs_best,
    param_importances,
    pareto_front,
    public_params,
)

REPORTS_DIR = Path("reports")
NEAR_ZERO = 0.01  # a reference below this (an mAP of ~0) gets no percentage change


# Files this module writes inside out_dir; stale ones (e.g. a plot that no longer applies)
# are removed, and nothing else there is ever touched.
PLOT_FILES = ("confirmation.png", "lineage.png", "loss_curves.png", "map_curves.png", "params_vs_metric.png",
              "param_importances.png", "pareto.png", "parallel_coordinates.png")
BEST_FILES = ("pipeline.config", "params.yaml", "params.json", "trial.json")


def label(tag: str) -> str:
    return LABELS.get(tag, tag)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _fmt_date(epoch: float | None) -> str:
    # The seed's dd.mm.yyyy, with the time since a sweep runs many trials a day.
    return datetime.fromtimestamp(epoch).strftime("%d.%m.%Y %H:%M") if epoch else ""


# ---------------------------------------------------------------- tables

Cell = str | list[str]  # a list renders as lines within one cell


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    id: str = ""
    titles: list[str] | None = None  # HTML header tooltips (e.g. a parameter's full name)
    sortable: bool = False  # HTML: click a header to sort, type to filter (SORT_JS)

    def markdown(self) -> str:
        def cell(c: Cell) -> str:
            text = "<br/>".join(c) if isinstance(c, list) else c
            return text.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        def cell(c: Cell) -> str:
            return "<br>".join(html.escape(x) for x in c) if isinstance(c, list) else html.escape(c)

        titles = self.titles or [""] * len(self.header)
        head = "".join(f'<th title="{html.escape(t)}">{html.escape(h)}</th>' if t
                       else f"<th>{html.escape(h)}</th>"
                       for h, t in zip(self.header, titles, strict=True))
        body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        ident = f' id="{self.id}"' if self.id else ""
        if self.sortable:
            ident += ' class="sortable"'
        return f'<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _num(row: pd.Series, col: str) -> Any:
    v = row.get(col)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else v


def run_table(g: Gathered) -> Table:
    """The seed's table, one row per trial in creation order, plus mAP, AR and time."""
    ds = g.settings.get("dataset") or {}
    dataset = (f"{ds['train_examples']} + {ds['eval_examples']}"
               if "train_examples" in ds and "eval_examples" in ds else "")
    classes = str(ds.get("num_classes", ""))
    model = str(g.settings.get("model_name", ""))
    header = ["Trial", "State", "Date", "Model name", "Dataset (train + eval)", "Classes",
              "Steps", "Changed parameters", "Classification loss", "Localization loss",
              "Regularization loss", "Total loss", "Learning rate", "mAP", "mAP@.50", "AR@100",
              "Training time"]
    from sweep.search import pbt

    rows, base = [], g.base_name()
    for _, r in g.df.iterrows():
        train, last_eval = g.metrics[r["trial"]].last_train(), g.metrics[r["trial"]].last_eval()
        status = g.trials[r["trial"]].status()
        changes = (pbt.describe(status) if len(status.get("lineage") or []) > 1  # the seed's words
                   else short_names.line(g.short_changes(r["trial"])) or "default settings")
        state = r["state"] + (f" ({r['reason']})" if r["reason"] else "")
        rows.append([
            r["trial"] + (" (base)" if r["trial"] == base else ""), state,
            _fmt_date(_num(r, "started_at") or _num(r, "created_at")), model, dataset, classes,
            fmt(_num(r, "steps")), changes,
            # From the metrics, not the DataFrame, where a diverged NaN looks like "missing".
            *(fmt(train.get(t)) for t in (m.CLASSIFICATION_LOSS, m.LOCALIZATION_LOSS,
                                          m.REGULARIZATION_LOSS, m.TOTAL_LOSS, m.LEARNING_RATE)),
            *(fmt(last_eval.get(t)) for t in (m.MAP, m.MAP50, m.AR100)),
            fmt_duration(_num(r, "wall_time_s")),
        ])
    return Table(header, rows, id="run-table")


def leaderboard_table(g: Gathered) -> Table:
    obj = g.objectives[0]
    header = ["Rank", "Trial", "State", f"Best {label(obj.tag)} ({obj.mode})", "at step",
              "mAP", "mAP@.50", "AR@100", "Final total loss", "Steps", "Wall time",
              *(short_names.leaf_name(p[len(PARAM):]) for p in g.param_names)]
    titles = [""] * (len(header) - len(g.param_names)) + [p[len(PARAM):] for p in g.param_names]
    if g.vs_best:  # after the metrics: how far behind the best, and whether that is noise
        header.insert(8, "mAP behind best (95%)")
        titles.insert(8, "the best's mAP minus this trial's, paired bootstrap over eval images; "
                         "'~' marks a gap within the noise")
    rows, base = [], g.base_name()
    for _, r in _leaderboard(g).iterrows():
        rows.append([
            fmt(_num(r, "rank")), r["trial"] + (" (base)" if r["trial"] == base else ""), r["state"],
            fmt(_num(r, "objective")), fmt(_num(r, "best_step")),
            *(fmt(_num(r, BEST + t)) for t in (m.MAP, m.MAP50, m.AR100)),
            fmt(g.metrics[r["trial"]].last_train().get(m.TOTAL_LOSS)), fmt(_num(r, "steps")),
            fmt_duration(_num(r, "wall_time_s")),
            *(short_names.option_name(v) if isinstance(v := _num(r, p), str)
              else fmt(v, short_names.DIGITS) for p in g.param_names),
        ])
        if g.vs_best:
            rows[-1].insert(8, _gap(g, str(r["trial"])))
    return Table(header, rows, id="leaderboard", titles=titles, sortable=True)


def _gap(g: Gathered, name: str) -> str:
    if name == g.best_name():
        return "best"
    iv = g.vs_best.get(name)
    if iv is None:
        return ""
    return (f"{iv.diff:+.3g} [{iv.low:+.3g}, {iv.high:+.3g}]"
            + ("" if iv.real else " ~"))


def _log_tail(path: Path, lines: int = 3) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [ln.strip()[:200] for ln in text.splitlines() if ln.strip()][-lines:]


def failures_table(g: Gathered) -> Table | None:
    bad = g.df[g.df["state"].isin([FAILED, STOPPED])]
    if bad.empty:
        return None
    rows = []
    for _, r in bad.iterrows():
        trial = g.trials[r["trial"]]
        tail = _log_tail(trial.train_log) if r["state"] == FAILED else []
        rows.append([r["trial"], r["state"], r["reason"] or "(no reason recorded)",
                     fmt(_num(r, "steps")), fmt(_num(r, "attempts")),
                     short_names.line(g.short_changes(r["trial"])),
                     tail or ""])
    return Table(["Trial", "State", "Reason", "Last step", "Attempts", "Changed parameters",
                  "End of train.log"], rows, id="failures")


def compare_table(g: Gathered, c: Comparison) -> Table:
    """Base trial vs best trial at the same training length (``report_data.compare``)."""
    chose = g.objectives[0].tag
    rows: list[tuple[str, Any, Any]] = [
        ("seed", _seed(g, c.base), _seed(g, c.best)),
        ("evaluation compared (step)", c.base_step, c.best_step),
        (f"{label(chose)} there", *c.objective)]
    rows += [(f"{label(tag)} there", a, b) for tag, (a, b) in c.scores.items()
             if tag != chose]
    rows.append((f"training time to step {c.step} (s)", *c.train_s))
    out = []
    for name, a, b in rows:
        change = ""
        if isinstance(a, int | float) and isinstance(b, int | float) and name != "seed" \
                and not name.startswith("evaluation"):
            change = _change(float(a), float(b))
        out.append([name, fmt(a), fmt(b), change])
    return Table(["", f"base ({c.base})", f"best ({c.best})", "change"], out, id="best-vs-base")


# ---------------------------------------------------------------- writing

def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _as(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


def _write_replay(g: Gathered, trial: TrialDir, out: Path) -> None:
    """PBT: the best lineage's learning-rate history as one config that reproduces it from
    step 0 in a single run (best/replay_pipeline.config), and what else changed (replay.md)."""
    from sweep.report import lineage

    if not any(len(t.status().get("lineage") or []) > 1 for t in g.trials.values()):
        return
    from sweep.odapi.render import load_pipeline, render, write_pipeline

    try:
        params = lineage.replay_params(lineage.learning_rate_history(g.exp, trial.name))
    except ValueError as e:
        g.notes.append(f"no replay config for {trial.name}: {e}")
        return
    write_pipeline(render(load_pipeline(trial.pipeline_path), params),
                   out / "replay_pipeline.config")
    _write_text(out / "replay.md", f"# Replaying {trial.name}'s lineage in one run\n\n"
                f"`replay_pipeline.config` is {trial.name}'s config with a "
                f"manual_step_learning_rate of {len(params['manual_step_learning_rate.schedule'])}"
                " steps that follows the rate its lineage trained with from step 0. Other "
                "values in force, per stretch (the replay keeps the last ones):\n\n"
                + "\n".join(f"- {line}" for line in
                            lineage.replay_note(g.exp, trial.name).splitlines()) + "\n")


def _write_best(g: Gathered, best: str, out: Path, fine_tune_from_best: bool) -> dict[str, Any]:
    """best/: the trial's own pipeline.config (optionally fine-tuning from its checkpoint)."""
    import yaml

    trial = g.trials[best]
    row = g.df.set_index("trial").loc[best]
    out.mkdir(parents=True, exist_ok=True)
    params = public_params(trial.params())
    info: dict[str, Any] = {
        "experiment": g.exp.name, "trial": best, "metric": g.objectives[0].tag,
        "mode": g.objectives[0].mode, "value": _as(float, _num(row, "objective")),
        "step": _as(int, _num(row, "best_step")), "state": row["state"],
        "source_pipeline": str(trial.pipeline_path), "params": params,
        "fine_tune_checkpoint": None,
    }
    ck = None
    if _num(row, "best_step") is not None:
        ck = nearest_checkpoint(trial, int(row["best_step"]))
    if ck:
        info["checkpoint"], info["checkpoint_step"] = str(ck[0]), ck[1]
    if fine_tune_from_best and ck:
        from sweep.odapi.render import load_pipeline, write_pipeline

        cfg = load_pipeline(trial.pipeline_path)
        cfg.train_config.fine_tune_checkpoint = str(ck[0].resolve())
        # "full" restores the whole detector, box predictor included: right for continuing
        # the chain with the same classes (use "detection" if num_classes changes).
        cfg.train_config.fine_tune_checkpoint_type = "full"
        write_pipeline(cfg, out / "pipeline.config")
        info["fine_tune_checkpoint"] = str(ck[0].resolve())
    else:
        if fine_tune_from_best:
            g.notes.append(f"{best} has no kept checkpoint with a known step: "
                           "best/pipeline.config does not fine-tune from it.")
        shutil.copyfile(trial.pipeline_path, out / ".pipeline.config.tmp")
        (out / ".pipeline.config.tmp").replace(out / "pipeline.config")
    _write_replay(g, trial, out)
    _write_text(out / "params.json", json.dumps(params, indent=2, sort_keys=True) + "\n")
    _write_text(out / "params.yaml", yaml.safe_dump(params, sort_keys=True))
    _write_text(out / "trial.json", json.dumps(info, indent=2, default=str) + "\n")
    return info


def _plots(g: Gathered, study: Any | None, mirror: Any, plot_dir: Path
           ) -> tuple[dict[str, Path], list[str]]:
    """Draw every PNG that applies (for report.md); returns the files and a sentence per
    missing one. Importances come from ``mirror`` (as the HTML's), the Pareto front from the
    sweep's ``study`` when it has one."""
    from sweep.report import plots

    made: dict[str, Path | None] = {}
    why: list[str] = []
    obj = g.objectives[0]
    top = list(g.ranked()["trial"][:TOP_K])
    made["loss_curves.png"] = plots.curves(
        {t: {s: r[m.TOTAL_LOSS] for s, r in g.metrics[t].train.items() if m.TOTAL_LOSS in r}
         for t in top}, plot_dir / "loss_curves.png", title=f"Total loss, top {len(top)} trials",
        ylabel="total loss (train)", log_y=True)
    made["map_curves.png"] = plots.curves(
        {t: {s: r[m.MAP] for s, r in g.metrics[t].eval.items() if m.MAP in r} for t in top},
        plot_dir / "map_curves.png", title=f"mAP, top {len(top)} trials", ylabel="mAP (eval)")
    made["params_vs_metric.png"] = plots.params_vs_metric(
        g.df[g.df["state"] != FAILED], g.varied_params(), "objective",
        plot_dir / "params_vs_metric.png", label=f"best {label(obj.tag)}")
    values, note = param_importances(g, mirror)
    g.notes.append(f"Parameter importances: {note}.")
    made["param_importances.png"] = plots.importances(
        {k: v for k, v in values.items()}, plot_dir / "param_importances.png",
        label=label(obj.tag))
    if len(g.objectives) >= 2:
        front, how = pareto_front(g, study)
        g.df["pareto"] = g.df["trial"].isin(front)
        a, b = g.objectives[:2]
        made["pareto.png"] = plots.pareto(
            g.df[g.df["state"] != FAILED], LAST_REPORTED + a.tag, LAST_REPORTED + b.tag, front,
            plot_dir / "pareto.png", x_label=f"{label(a.tag)} ({a.mode})",
            y_label=f"{label(b.tag)} ({b.mode})")
        g.notes.append(f"Pareto front: {how}: {', '.join(front) or 'none yet'}.")
    made["parallel_coordinates.png"] = plots.parallel_coordinates(
        g.df[g.df["state"] != FAILED], g.varied_params(), "objective",
        plot_dir / "parallel_coordinates.png", label=f"best {label(obj.tag)}",
        higher_is_better=obj.mode == "max")
    confirmed = g.confirmed()
    if confirmed is not None:
        runs = {("base " if c.base else "") + f"{c.of} ({len(c.runs)} seeds)": list(c.runs.values())
                for c in (confirmed.base, confirmed.winner)}
        made["confirmation.png"] = plots.seeds_strip(
            runs, plot_dir / "confirmation.png", label=f"{label(m.MAP)} at the final evaluation",
            title="Confirmation runs: one dot per seed, bar = mean")
    from sweep.report import lineage

    lineage_png = lineage.lineage_figure(g.exp, g.best_name(), plot_dir / "lineage.png", m.MAP)
    if lineage_png is not None:
        made["lineage.png"] = lineage_png
    for name, path in made.items():
        if path is None and name != "param_importances.png":  # its note says why already
            why.append(f"{name}: nothing to draw yet (no trial has the data it needs)")
    return {k: v for k, v in made.items() if v is not None}, why


PLOT_TITLES = {
    "confirmation.png": "Confirmation: each confirmed config's final mAP per seed (bar: mean)",
    "lineage.png": "Population-based training: every trial's mAP with its clones (dashed), "
                   "and the best lineage's learning rate",
    "loss_curves.png": "Total loss against step (top trials)",
    "map_curves.png": "mAP against step (top trials)",
    "params_vs_metric.png": "Each parameter against the metric",
    "param_importances.png": "Parameter importances",
    "pareto.png": "Pareto front",
    "parallel_coordinates.png": "Parallel coordinates",
}


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)  # paragraphs (plain text)
    table: Table | None = None
    images: list[tuple[str, Path]] = field(default_factory=list)  # (caption, png): report.md
    figures: list[Any] = field(default_factory=list)  # report_figures.Figure: report.html
    details: list[tuple[str, list[str]]] = field(default_factory=list)  # collapsed: (summary, lines)
    id: str = ""


def steps_saved(exp: Experiment) -> int:
    """Train steps early stopping saved: each stopped trial's num_steps minus what it trained."""
    total = 0
    for t in exp.trials():
        st = t.status()
        if st.get("state") == STOPPED and st.get("num_steps") and "trained_steps" in st:
            total += max(0, int(st["num_steps"]) - int(st["trained_steps"]))
    return total


def _verdict(g: Gathered, best_info: dict[str, Any] | None) -> Section:
    """The page's first answer: which config, how it compares with the base config at the
    same training length, what changed, and how sure that is (one run per config, or
    confirmed over seeds)."""
    obj = g.objectives[0]
    best, base = g.best_name(), g.base_name()
    if not best_info or not best:
        return Section("Verdict", ["No trial has been evaluated yet: there is no best config."],
                       id="verdict")
    chose = label(obj.tag)
    how = "lowest" if obj.mode == "min" else "highest"
    confirmed = g.confirmed()
    keep_base = bool(confirmed) and base is not None and confirmed.recommended.of == base
    use = ((f"Keep the base config ({best}): best/pipeline.config is it (" if keep_base else
            f"Use {best}'s config: best/pipeline.config (")
           + (f"the best mean {label(m.MAP)} over {len(confirmed.recommended.runs)} "
              f"confirmation seeds; the search chose it by {chose}" if confirmed else
              f"chosen by {chose}: {how} {fmt(best_info['value'])} at step "
              f"{fmt(best_info['step'])}, seed {_seed(g, best)}")
           + (f", fine-tuning from {best_info['fine_tune_checkpoint']}"
              if best_info.get("fine_tune_checkpoint") else "") + ").")
    if base is None:
        return Section("Verdict", [use, "No trial ran the base config (the space has no `base` "
                                        "point, or the sampler left it out, e.g. a grid the "
                                        "base's values are not on): there is no baseline to "
                                        "compare with."], id="verdict")
    if confirmed:
        text = [use, *confirmation.describe(confirmed, label(m.MAP), g.exp.name)]
        if confirmed.recommended.of != base:
            changes = short_names.line(g.short_changes(confirmed.recommended.of))
            text.append(f"What changed: {changes or 'nothing in the space parameters'}.")
        return Section("Verdict", text, id="verdict")
    if best == base:
        rs = g.df.set_index("trial").loc[best]
        scores = ", ".join(f"{label(t)} {fmt(_num(rs, BEST + t))}" for t in DETECTION
                           if _num(rs, BEST + t) is not None)
        return Section("Verdict", [use, f"The base config ({best}, seed {_seed(g, best)}) is the "
                                        "best trial so far" + (f" ({scores})" if scores else "")
                                        + ": no sampled config beat it. " + _one_run(g)],
                       id="verdict")
    c = compare(g, base, best)
    if c is None:
        return Section("Verdict", [use, f"The base config ({base}) has no evaluation of {chose} "
                                        "to compare with."], id="verdict")
    text = [use, _compared(g, c), f"What changed: "
            f"{short_names.line(g.short_changes(best)) or 'nothing in the space parameters'}.",
            "How sure: " + _one_run(g, c)]
    full = _best_vs_base_diff(g, base, best)
    return Section("Verdict", text, compare_table(g, c), id="verdict",
                   details=[("Changed fields, as full pipeline.config paths",
                             [f"{k}: {v}" for k, v in full.items()] or ["none"])])


def _seed(g: Gathered, name: str) -> str:
    seed = g.df.set_index("trial").loc[name, "seed"] if "seed" in g.df else None
    return "-" if seed is None or pd.isna(seed) else str(int(seed))


def _where(c: Comparison) -> str:
    """At which step a like-for-like comparison stands, in words."""
    if c.at_end:
        return f"up to the end of training (step {c.step})"
    return f"up to step {c.step}, the last both reached ({c.stopped} stopped there)"


def _compared(g: Gathered, c: Comparison) -> str:
    chose = label(g.objectives[0].tag)
    gains = []
    for tag, (a, b) in c.scores.items():
        if a is not None and b is not None:
            gains.append(f"{label(tag)} {fmt(b)} vs {fmt(a)} ({_change(a, b)})")
    ta, tb = c.train_s
    if ta is not None and tb is not None:
        gains.append(f"training time to step {c.step} {fmt_duration(tb)} vs {fmt_duration(ta)}")
    steps = ("" if c.base_step == c.best_step else
             f"; best at step {c.best_step}, base at step {c.base_step}")
    by = "" if g.objectives[0].tag in DETECTION else (
        f" (chosen by {chose}, compared in detection metrics)")
    return (f"Against the base config ({c.base}, seed {_seed(g, c.base)}), each at its best "
            f"{chose} evaluation {_where(c)}{steps}{by}: " + "; ".join(gains) + ".")


def _one_run(g: Gathered, c: Comparison | None = None) -> str:
    """How sure an unconfirmed verdict is: one run per config; the eval-image noise alone when
    it can be measured; the command that confirms it."""
    n = int(g.df["rank"].notna().sum())
    words = (f"this rests on one run per config. Training noise (data order, initialisation) "
             f"is not measured, and the best of {n} trials was picked on the same eval images, "
             "so its lead is biased upward.")
    if c is not None:
        noise = eval_noise(g, c)
        if isinstance(noise, str):
            words += f" Eval-image noise: not measured ({noise})."
        else:
            words += (f" Eval-image noise alone: {label(m.MAP)} {c.best} - {c.base} = "
                      f"{noise.diff:+.3g}, {noise.level:.0%} interval [{noise.low:+.3g}, "
                      f"{noise.high:+.3g}] (paired bootstrap over the {noise.n_images} eval "
                      "images; docs/report.md: Is the win real?).")
    return (words + f" Confirm it over seeds: `sweep confirm {g.exp.name} --seeds 3` "
            "(docs/report.md: Confirming a verdict).")


def _change(a: float, b: float) -> str:
    delta = b - a
    if abs(a) < NEAR_ZERO:  # a percentage of almost nothing says nothing
        return f"{delta:+.3g}, from ~0"
    return f"{delta:+.3g}, {delta / abs(a):+.1%}"


def _sections(g: Gathered, plots_made: dict[str, Path], best_info: dict[str, Any] | None,
              figs: Sequence[Any], figure_notes: Sequence[str],
              pictures: tuple[list[tuple[str, Path]], str]) -> list[Section]:
    obj = g.objectives[0]
    counts = g.df["state"].value_counts().to_dict()
    summary = [
        f"Experiment {g.exp.name}: model {g.settings.get('model_name', '?')}, "
        f"{len(g.df)} of {g.settings.get('num_trials', '?')} trials "
        f"({', '.join(f'{n} {s.lower()}' for s, n in counts.items())}); sampler "
        f"{g.settings.get('sampler', '?')}, scheduler {g.settings.get('scheduler', '?')}.",
        "Objectives: " + ", ".join(f"{o.tag} ({o.mode})" for o in g.objectives) + ".",
    ]
    saved = steps_saved(g.exp)
    if saved:
        summary.append(f"Early stopping saved {saved} train steps (num_steps minus the steps "
                       "each stopped trial trained).")
    if best_info and best_info.get("checkpoint"):
        summary.append(f"The best trial's checkpoint nearest its best step is "
                       f"{best_info['checkpoint']} (step {best_info['checkpoint_step']}).")
    sections = [_verdict(g, best_info)]
    if "confirmation.png" in plots_made:
        sections[0].images.append((PLOT_TITLES["confirmation.png"], plots_made["confirmation.png"]))
    sections.append(Section("Leaderboard", [
        f"Ranked by each trial's best {obj.tag} ({obj.mode}) over its evaluations, the value "
        "the runner reported to Ray (a loss is the training job's at that step); failed "
        "trials are not ranked. mAP, mAP@.50 and AR@100 are at that best step. Parameters "
        "by the space's short names (hover a header for the full name)."],
                            leaderboard_table(g)))
    if pictures[0]:
        sections.append(Section("Detections: best and base", [pictures[1]], None, pictures[0],
                                id="detections"))
    elif best_info:
        g.notes.append(pictures[1])
    sections.append(Section("Summary", summary))
    sections.append(Section("Runs", ["One row per trial in the order they started. Losses and "
                                      "learning rate at the last train step, mAP and AR@100 at "
                                      "the last evaluation; changed parameters are what differs "
                                      "from the base trial, by the space's names."],
                            run_table(g)))
    fails = failures_table(g)
    sections.append(Section("Failed and stopped trials",
                            [] if fails else ["No trial failed or was stopped."], fails))
    images = [(PLOT_TITLES[n], plots_made[n]) for n in PLOT_FILES if n in plots_made]
    plot_text = list(figure_notes)
    if not images and not figs:
        plot_text.insert(0, "No plots yet: no trial has been trained and evaluated.")
    elif figs:
        plot_text.insert(0, "Drawn by Optuna's visualization module from the trials as this "
                            "report reads them (each trial's value is its best evaluation); "
                            "Optuna's trial number N is the Runs table's row N, from 0.")
    sections.append(Section("Plots", plot_text, None, images, list(figs)))
    if g.notes:
        sections.append(Section("Notes", list(g.notes)))
    return sections


def _best_vs_base_diff(g: Gathered, base: str, best: str) -> dict[str, str]:
    tb, ts = g.trials[base], g.trials[best]
    if tb.pipeline_path.exists() and ts.pipeline_path.exists():
        from sweep.odapi.render import changed_fields, load_pipeline

        return changed_fields(load_pipeline(tb.pipeline_path), load_pipeline(ts.pipeline_path))
    pb, ps = public_params(tb.params()), public_params(ts.params())
    return {k: fmt(v) for k, v in ps.items() if pb.get(k) != v}


def _banner(g: Gathered) -> str:
    if g.finished:
        return ""
    if g.settings.get("interrupted"):
        return (f"PARTIAL REPORT: the sweep was interrupted ({g.settings['interrupted']}) with "
                f"{len(g.df)} of {g.settings.get('num_trials', '?')} trials started; "
                f"`sweep resume {g.exp.name}` finishes it. Numbers will change.")
    running = int((g.df["state"] == RUNNING).sum()) if not g.df.empty else 0
    return (f"PARTIAL REPORT: the experiment is still running ({running} trial(s) running, "
            f"{len(g.df)} of {g.settings.get('num_trials', '?')} started). Numbers will change; "
            "run `sweep report` again when it has finished.")


def _title(g: Gathered) -> str:
    return f"Sweep report: {g.exp.name}"


def render_markdown(g: Gathered, sections: Sequence[Section], out_dir: Path,
                    generated: str) -> str:
    parts = [f"# {_title(g)}", "", f"Generated {generated}.", ""]
    if banner := _banner(g):
        parts += [f"> **{banner}**", ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        for p in s.text:
            parts += [p, ""]
        if s.table:
            parts += [s.table.markdown(), ""]
        for summary, lines in s.details:
            parts += [f"<details><summary>{html.escape(summary)}</summary>", "",
                      *(f"- `{ln}`" for ln in lines), "", "</details>", ""]
        for caption, path in s.images:
            parts += [f"### {caption}", "", f"![{caption}]({path.relative_to(out_dir)})", ""]
    return "\n".join(parts)


CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em;
       color: #222; max-width: 100%; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; text-align: left;
         white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafafa; }
table.sortable th { cursor: pointer; user-select: none; }
th[data-dir="asc"]::after { content: " \25B2"; } th[data-dir="desc"]::after { content: " \25BC"; }
.scroll { overflow-x: auto; max-height: 70vh; }
.banner { background: #fff3cd; border: 1px solid #e0c36c; padding: .8em 1em; font-weight: bold; }
#verdict + p { font-size: 1.15em; font-weight: bold; }
.verdict { background: #eef6ee; border: 1px solid #9c9; padding: .2em 1em; }
figure { margin: 1em 0; } figcaption { font-weight: bold; margin-bottom: .3em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.pics { display: grid; grid-template-columns: repeat(3, max-content); gap: 0 1.5em; }
.pics img { width: 360px; image-rendering: pixelated; }
.meta { color: #666; } .filter { margin: .5em 0; padding: 3px 6px; width: 20em; }
details { margin: .5em 0; } details li { font-family: monospace; font-size: 12px; }
"""

# Marks the page once every image has decoded and every figure has drawn its SVG (the browser
# test reads these with --dump-dom).
CHECK_JS = """
window.addEventListener('error', function (e) {
  document.body.setAttribute('data-js-error', String(e.message || e));
});
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var figs = document.querySelectorAll('.plotly-graph-div');
  var drawn = Array.prototype.filter.call(figs, function (f) {
    return f.querySelector('svg.main-svg') !== null; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  document.body.setAttribute('data-figures', drawn + '/' + figs.length);
  document.body.setAttribute('data-report-ok',
                             ok === imgs.length && drawn === figs.length ? 'yes' : 'no');
});
"""

# Leaderboard: a click on a header sorts by that column (numbers as numbers, blanks last),
# a second click reverses; the box above filters rows by any text in them.
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var body = table.tBodies[0];
  var box = document.getElementById(table.id + '-filter');
  if (box) box.addEventListener('input', function () {
    var q = box.value.toLowerCase();
    Array.prototype.forEach.call(body.rows, function (r) {
      r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none'; });
  });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
    th.addEventListener('click', function () {
      var dir = th.getAttribute('data-dir') === 'asc' ? 'desc' : 'asc';
      Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', dir);
      var rows = Array.prototype.slice.call(body.rows);
      function key(r) { var t = r.cells[col].textContent.trim();
        var n = parseFloat(t); return t === '' ? null : (isNaN(n) || !/^[-+.\\d]/.test(t) ? t : n); }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);
        var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                         : (typeof x === 'number' ? -1 : 1);
        return dir === 'asc' ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def render_html(g: Gathered, sections: Sequence[Section], generated: str) -> str:
    title = html.escape(_title(g))
    has_figures = any(s.figures for s in sections)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{title}</title><style>{CSS}</style>"]
    if has_figures:  # once, inline: the file works offline and alone
        from sweep.report.report_figures import plotly_js

        parts.append(f'<script type="text/javascript">{plotly_js()}</script>')
    parts += ["</head>", f'<body data-finished="{"yes" if g.finished else "no"}">',
              f"<h1>{title}</h1>", f'<p class="meta">Generated {html.escape(generated)}.</p>']
    if banner := _banner(g):
        parts.append(f'<div class="banner" id="partial-banner">{html.escape(banner)}</div>')
    for s in sections:
        ident = f' id="{s.id}"' if s.id else ""
        parts.append(f"<h2{ident}>{html.escape(s.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in s.text]
        if s.table:
            if s.table.sortable:
                parts.append(f'<input class="filter" id="{s.table.id}-filter" type="search" '
                             'placeholder="filter rows (any text)">')
            parts.append(f'<div class="scroll">{s.table.html()}</div>')
        for summary, lines in s.details:
            parts.append(f"<details><summary>{html.escape(summary)}</summary><ul>"
                         + "".join(f"<li>{html.escape(ln)}</li>" for ln in lines)
                         + "</ul></details>")
        if s.figures:
            parts += [f"<figure><figcaption>{html.escape(f.title)}</figcaption>{f.html}</figure>"
                      for f in s.figures]
        elif s.images:  # no interactive figure for this section: its PNGs
            parts.append('<div class="pics">' if s.id == "detections" else "<div>")
            for caption, path in s.images:
                data = base64.b64encode(path.read_bytes()).decode()
                parts.append(f"<figure><figcaption>{html.escape(caption)}</figcaption>"
                             f'<img alt="{html.escape(caption)}" '
                             f'src="data:image/png;base64,{data}"></figure>')
            parts.append("</div>")
    parts.append(f"<script>{SORT_JS}</script><script>{CHECK_JS}</script></body></html>")
    return "\n".join(parts)


PICTURES = 3  # eval images shown per trial
_PICTURE = re.compile(r"detections_(best|base)_\d+\.png")  # ours, in plots/


def _pictures(g: Gathered, plot_dir: Path) -> tuple[list[tuple[str, Path]], str]:
    """The OD API eval's side-by-side pictures (detections left, ground truth right) of the
    best and base trials at their best steps, as PNGs in plots/; and a sentence."""
    for old in plot_dir.glob("detections_*.png"):
        if _PICTURE.fullmatch(old.name):
            old.unlink()
    best, base = g.best_name(), g.base_name()
    shown: list[tuple[str, Path]] = []
    missing = []
    for role, name in (("best", best), ("base", base)):
        if not name or (role == "base" and name == best):
            continue
        step = _num(g.df.set_index("trial").loc[name], "best_step")
        # Only the pictures shown are read: the best step's, else the nearest evaluation's.
        found = None if step is None else m.read_images_near(g.trials[name].path / "eval",
                                                             int(step))
        if found is None:
            missing.append(name)
            continue
        at, images = found
        tags = sorted(images, key=lambda t: [int(x) if x.isdigit() else x
                                             for x in re.split(r"(\d+)", t)])[:PICTURES]
        for i, tag in enumerate(tags):
            path = plot_dir / f"detections_{role}_{i}.png"
            _write_bytes(path, images[tag])
            shown.append((f"{role} ({name}), step {at}, eval image {i + 1}", path))
    text = ("The OD API eval's own pictures (eval_config.num_visualizations): each trial's "
            "predicted boxes and scores on the left, the ground truth on the right.")
    if missing:
        text += (f" No pictures in the eval event files of {', '.join(missing)} "
                 "(num_visualizations 0, or the eval input keeps no original images).")
    return shown, text


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _gaps_to_best(g: Gathered) -> None:
    """leaderboard.csv: each trial's mAP gap to the best and its eval-image interval
    (sweep.report.bootstrap); a note when it cannot be measured."""
    why = noise_vs_best(g)
    if why:
        g.notes.append(f"mAP gaps to the best: not measured: {why}.")
        return
    for name, gap in g.vs_best.items():
        for col, v in (("map_behind_best", gap.diff), ("map_behind_best_low", gap.low),
                       ("map_behind_best_high", gap.high)):
            g.df.loc[g.df["trial"] == name, col] = v


VERDICT_FILE = "verdict.txt"


def write_report(exp: Experiment, out_dir: Path | None = None, *,
                 fine_tune_from_best: bool = False) -> Path:
    """Write the report of ``exp`` into ``out_dir`` (default ``reports/<experiment>/``).

    Only this module's own files inside ``out_dir`` are written or replaced; nothing else is
    deleted. With ``fine_tune_from_best``, best/pipeline.config fine-tunes from the best trial's
    checkpoint nearest its best eval step, to continue the chain.
    """
    out_dir = Path(out_dir) if out_dir is not None else REPORTS_DIR / exp.name
    g = gather(exp)  # first: an experiment that cannot be read leaves no empty report folder
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    best = g.best_name()
    best_info = None
    if best:
        best_info = _write_best(g, best, out_dir / "best", fine_tune_from_best)
    else:
        for name in BEST_FILES:  # a stale best from an earlier report would mislead
            (out_dir / "best" / name).unlink(missing_ok=True)
    from sweep.report import report_figures

    study = _load_study(g)
    mirror, _ = report_figures.mirror_study(g, study)
    plot_dir = out_dir / "plots"
    made, missing = _plots(g, study, mirror, plot_dir)
    figs, figure_notes = report_figures.figures(g, mirror, label(g.objectives[0].tag))
    _gaps_to_best(g)
    pictures = _pictures(g, plot_dir)
    for name in PLOT_FILES:
        if name not in made:
            (plot_dir / name).unlink(missing_ok=True)
    g.notes.extend(missing)
    board = _leaderboard(g)
    _write_text(out_dir / "leaderboard.csv", board.to_csv(index=False))
    banner = _banner(g)
    _write_text(out_dir / "leaderboard.md",
                f"# Leaderboard: {exp.name}\n\n" + (f"> **{banner}**\n\n" if banner else "")
                + leaderboard_table(g).markdown() + "\n")
    sections = _sections(g, made, best_info, figs, figure_notes, pictures)
    # The verdict alone, in plain text: what `sweep run` prints at its end, for scripts too.
    verdict = next(s for s in sections if s.id == "verdict")
    _write_text(out_dir / VERDICT_FILE, "\n".join(verdict.text) + "\n")
    _write_text(out_dir / "report.md", render_markdown(g, sections, out_dir, generated))
    _write_text(out_dir / "report.html", render_html(g, sections, generated))
    return out_dir
