"""Best-config reports: the user's hand-kept results table, generated, and more.

``write_report(exp)`` writes ``reports/<experiment>/``:

    best/pipeline.config    the best trial's rendered config, trainable with model_main_tf2.py
    best/params.yaml|json   the best parameters; best/trial.json says where they come from
    leaderboard.csv|md      every trial: parameters, final and best metrics, steps, time, state
    report.md, report.html  the run table in the seed's form, plots, failures, best vs base
    plots/*.png             also embedded in report.html, which is self-contained

Every number comes from the trials' event files through ``sweep.metrics``; the Optuna study is
read only for what only it knows (parameter importances, the Pareto front). The report works
on a running experiment too: it is then marked partial.
"""

from __future__ import annotations

import base64
import html
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sweep import metrics as m
from sweep.errors import ConfigError
from sweep.experiment import (
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    STOPPED,
    Experiment,
    TrialDir,
    read_json,
)

REPORTS_DIR = Path("reports")
TOP_K = 5  # trials drawn in the curve plots

# Column names of the leaderboard; metric columns are "<kind>:<OD API tag>".
PARAM = "param:"
TRAIN = "train:"  # value at the last train step
EVAL = "eval:"  # value at the last eval step
BEST = "best:"  # value at the eval step that is best by the sweep's first metric
LAST_REPORTED = "reported:"  # an objective as the runner reported it at the last eval

# Short names the seed's table and the plots use for the OD API's tags.
LABELS = {
    m.CLASSIFICATION_LOSS: "classification loss", m.LOCALIZATION_LOSS: "localization loss",
    m.REGULARIZATION_LOSS: "regularization loss", m.TOTAL_LOSS: "total loss",
    m.LEARNING_RATE: "learning rate", m.MAP: "mAP", m.MAP50: "mAP@.50", m.MAP75: "mAP@.75",
    m.AR100: "AR@100", m.STEPS_PER_SEC: "steps/s",
}

# Files this module writes inside out_dir; stale ones (e.g. a plot that no longer applies)
# are removed, and nothing else there is ever touched.
PLOT_FILES = ("loss_curves.png", "map_curves.png", "params_vs_metric.png",
              "param_importances.png", "pareto.png", "parallel_coordinates.png")
BEST_FILES = ("pipeline.config", "params.yaml", "params.json", "trial.json")


def label(tag: str) -> str:
    return LABELS.get(tag, tag)


def fmt(value: Any, digits: int = 5) -> str:
    """A number as the report prints it (``digits`` significant digits); blank if missing.

    A NaN that an event file holds (a diverged loss) prints as "NaN"; callers pass None for a
    value that is absent.
    """
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, bool):
        return "true" if value else "false"  # as the proto and YAML spell it
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return str(value)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _fmt_date(epoch: float | None) -> str:
    # The seed's dd.mm.yyyy, with the time since a sweep runs many trials a day.
    return datetime.fromtimestamp(epoch).strftime("%d.%m.%Y %H:%M") if epoch else ""


# ---------------------------------------------------------------- gathering

@dataclass(frozen=True)
class Objective:
    tag: str
    mode: str  # "max" or "min"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


def objectives(settings: dict[str, Any]) -> list[Objective]:
    """The sweep's metrics and modes; mAP (max) when the settings name none."""
    tags = settings.get("metrics") or [m.MAP]
    modes = settings.get("modes") or ["max"] * len(tags)
    if len(modes) != len(tags):
        raise ValueError(f"experiment.json: 'metrics' and 'modes' must have the same length, "
                         f"but got metrics={tags} and modes={modes}")
    for mode in modes:
        if mode not in ("max", "min"):
            raise ValueError(f"experiment.json: each mode must be 'max' or 'min', but got {mode!r}")
    return [Objective(t, mo) for t, mo in zip(tags, modes, strict=True)]


def reported(tm: m.TrialMetrics, tag: str, step: int) -> float | None:
    """The value of ``tag`` the runner reported to Ray (and so Optuna) for the eval at ``step``:
    losses and learning rate from the training job at that step, COCO metrics from the eval.

    The eval job writes its own ``Loss/*`` too; like the runner, reports never mix them in.
    """
    from sweep.trial import TRAIN_SOURCED  # the runner's rule, not a copy of it

    if tag in TRAIN_SOURCED:
        before = [s for s in tm.train if s <= step and tag in tm.train[s]]
        return tm.train[max(before)][tag] if before else None
    return tm.eval.get(step, {}).get(tag)


def _best_of(tm: m.TrialMetrics, obj: Objective) -> tuple[int, float] | None:
    """(eval step, value) best by ``obj`` among the trial's evaluations (NaN never wins)."""
    rows = [(s, v) for s in tm.eval if s > 0
            for v in [reported(tm, obj.tag, s)] if v is not None and math.isfinite(v)]
    if not rows:
        return None
    pick = max if obj.mode == "max" else min
    return pick(rows, key=lambda sv: sv[1])


def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """Sampled parameters without the runner's markers (``_base``)."""
    return {k: v for k, v in params.items() if not k.startswith("_")}


def checkpoint_steps(trial: TrialDir) -> dict[str, int]:
    """``{checkpoint name: global step}`` as the eval job recorded them (eval/evaluated.jsonl)."""
    from sweep.worker import read_evaluated  # stdlib-only module; no TensorFlow

    return {row["checkpoint"]: int(row["step"]) for row in read_evaluated(trial.path)
            if "checkpoint" in row and "step" in row}


def nearest_checkpoint(trial: TrialDir, step: int,
                       steps_of: Callable[[TrialDir], dict[str, int]] = checkpoint_steps
                       ) -> tuple[Path, int] | None:
    """The checkpoint on disk (prefix, its step) nearest ``step``.

    The OD API keeps no best checkpoint and the runner keeps only the last few plus a copy of
    the best one in ``best/`` (``best.json``); the best-evaluated checkpoint may be gone, so
    this is the closest one still there. On a tie the runner's best copy wins, then the later.
    """
    known = steps_of(trial)
    candidates = [(known[prefix.name], 0, prefix) for _, prefix in trial.checkpoints()
                  if prefix.name in known]
    kept = read_json(trial.path / "best" / "best.json") or {}
    if kept.get("checkpoint") and kept.get("step") is not None:
        prefix = trial.path / "best" / str(kept["checkpoint"])
        if prefix.with_name(prefix.name + ".index").exists():
            candidates.append((int(kept["step"]), -1, prefix))
    if not candidates:
        return None
    ck_step, _, prefix = min(candidates, key=lambda c: (abs(c[0] - step), c[1], -c[0]))
    return prefix, ck_step


@dataclass
class Gathered:
    """Everything a report needs, read once."""

    exp: Experiment
    settings: dict[str, Any]
    objectives: list[Objective]
    df: pd.DataFrame  # one row per trial, creation order
    trials: dict[str, TrialDir]
    metrics: dict[str, m.TrialMetrics]
    changed: dict[str, dict[str, str]]  # trial -> {proto path: value} differing from the base
    param_names: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return bool(self.settings.get("finished"))

    def ranked(self) -> pd.DataFrame:
        return self.df[self.df["rank"].notna()].sort_values("rank")

    def best_name(self) -> str | None:
        ranked = self.ranked()
        return None if ranked.empty else str(ranked.iloc[0]["trial"])

    def base_name(self) -> str | None:
        """The trial evaluated with the base config: marked ``_base``, else the first whose
        config does not differ from the base, else the first one."""
        marked = self.df[self.df["base"]]
        if not marked.empty:
            return str(marked.iloc[0]["trial"])
        for name in self.df["trial"]:
            if not self.changed.get(name) and self.trials[name].pipeline_path.exists():
                return str(name)
        return None if self.df.empty else str(self.df.iloc[0]["trial"])

    def varied_params(self) -> list[str]:
        """Parameter columns with more than one value (constants only clutter the plots)."""
        return [p for p in self.param_names
                if self.df[p].dropna().astype(str).nunique() > 1]


def _changed_fields(base_cfg: Any, trial: TrialDir) -> dict[str, str] | None:
    if base_cfg is None or not trial.pipeline_path.exists():
        return None
    from sweep.render import changed_fields, load_pipeline

    return changed_fields(base_cfg, load_pipeline(trial.pipeline_path))


def _trial_row(trial: TrialDir, tm: m.TrialMetrics, objs: list[Objective],
               now: float) -> dict[str, Any]:
    status = trial.status()
    params = trial.params()
    state = status.get("state", PENDING)
    row: dict[str, Any] = {
        "trial": trial.name, "state": state, "reason": status.get("reason") or "",
        "base": bool(params.get("_base")), "attempts": status.get("attempts"),
        "created_at": status.get("created_at"), "started_at": status.get("started_at"),
        "ended_at": status.get("ended_at"),
        "steps": tm.last_train_step, "eval_step": tm.last_eval_step,
    }
    started = status.get("started_at")
    ended = status.get("ended_at") or (now if state == RUNNING else None)
    row["wall_time_s"] = float(ended - started) if started and ended else None
    row["train_time_s"] = (tm.train_wall[1] - tm.train_wall[0]) if tm.train_wall else None
    for k, v in public_params(params).items():
        row[PARAM + k] = v
    for tag, v in tm.last_train().items():
        row[TRAIN + tag] = v
    for tag, v in tm.last_eval().items():
        row[EVAL + tag] = v
    best = _best_of(tm, objs[0])
    row["best_step"] = best[0] if best else None
    row["objective"] = best[1] if best else None
    for tag, v in (tm.eval[best[0]] if best else {}).items():
        row[BEST + tag] = v
    # Each further objective at its own best step (for the multi-objective summary).
    for obj in objs[1:]:
        b = _best_of(tm, obj)
        row[f"objective:{obj.tag}"] = b[1] if b else None
    # What Optuna was told: each objective as reported at the last evaluation.
    last = max((s for s in tm.eval if s > 0), default=None)
    for obj in objs:
        row[LAST_REPORTED + obj.tag] = reported(tm, obj.tag, last) if last is not None else None
    return row


def gather(exp: Experiment) -> Gathered:
    """Read settings, every trial's folder and event files into one DataFrame."""
    settings = exp.settings()
    objs = objectives(settings)
    now = time.time()
    base_cfg = None
    notes: list[str] = []
    if exp.base_pipeline.exists():
        from sweep.render import load_pipeline

        base_cfg = load_pipeline(exp.base_pipeline)
    else:
        notes.append(f"{exp.base_pipeline} is missing: changed parameters are the sampled ones.")
    trials = exp.trials()
    rows, tms, changed = [], {}, {}
    for trial in trials:
        tm = m.read_trial(trial.path)
        tms[trial.name] = tm
        rows.append(_trial_row(trial, tm, objs, now))
        try:
            diff = _changed_fields(base_cfg, trial)
        except ConfigError as e:  # one unreadable config must not cost the whole report
            notes.append(f"{trial.name}: {e}")
            diff = None
        if diff is None:  # not rendered yet (or unreadable): show what was sampled
            diff = {k: fmt(v) for k, v in public_params(trial.params()).items()}
        changed[trial.name] = diff
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=["trial", "state", "reason", "base", "objective", "best_step"])
    for col in ("steps", "eval_step", "best_step", "attempts"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["changed"] = [
        "; ".join(f"{k}: {v}" for k, v in changed[t].items()) for t in df["trial"]]
    # Rank: failed trials (e.g. diverged) and trials with no objective yet are not candidates.
    obj = pd.to_numeric(df["objective"], errors="coerce")
    eligible = (df["state"] != FAILED) & obj.notna()
    order = obj[eligible].rank(method="first", ascending=objs[0].mode == "min")
    df["rank"] = pd.array([None] * len(df), dtype="Int64")
    df.loc[eligible, "rank"] = order.astype("int64")
    param_names = [c for c in df.columns if c.startswith(PARAM)]
    return Gathered(exp, settings, objs, df, {t.name: t for t in trials}, tms, changed,
                    param_names, notes)


def leaderboard(exp: Experiment) -> pd.DataFrame:
    """All trials, best first; unranked ones (failed, not evaluated) after, in creation order.

    Columns: rank, trial, state, reason, base, objective (the trial's best value of the sweep's
    first metric) and best_step, ``param:<name>``, ``train:<tag>`` (last train step),
    ``eval:<tag>`` (last eval), ``best:<tag>`` (the eval at best_step), ``reported:<tag>`` (each
    objective as last reported to Ray/Optuna), steps, eval_step,
    wall_time_s (status times), train_time_s (first to last train summary), changed (vs base).
    """
    return _leaderboard(gather(exp))


def _leaderboard(g: Gathered) -> pd.DataFrame:
    df = g.df.copy()
    df["_order"] = range(len(df))
    df = df.sort_values(["rank", "_order"], na_position="last").drop(columns="_order")
    first = ["rank", "trial", "state", "reason", "base", "objective", "best_step"]
    rest = [c for c in df.columns if c not in first]
    groups = [[c for c in rest if c.startswith(p)]
              for p in (PARAM, BEST, EVAL, TRAIN, LAST_REPORTED)]
    grouped = {c for grp in groups for c in grp}
    other = [c for c in rest if c not in grouped]
    return df[first + [c for grp in groups for c in grp] + other].reset_index(drop=True)


def best_trial(exp: Experiment) -> TrialDir | None:
    """The trial with the best value of the sweep's first metric (failed trials excluded)."""
    g = gather(exp)
    name = g.best_name()
    return g.trials[name] if name else None


# ---------------------------------------------------------------- Optuna

def _load_study(g: Gathered) -> Any | None:
    """The sweep's Optuna study, or None (with a note) if it is not there yet."""
    import optuna

    from sweep.study import masked, scrub

    url = g.exp.storage_url()
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):])
        if not db.exists():  # loading would create an empty database
            g.notes.append(f"No Optuna study yet ({db} does not exist).")
            return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = g.settings.get("study_name")
    try:
        if not name:
            names = optuna.get_all_study_names(storage=url)
            if len(names) != 1:
                g.notes.append(f"experiment.json names no study_name and {masked(url)} holds "
                               f"{len(names)} studies: {names}.")
                return None
            name = names[0]
        return optuna.load_study(study_name=name, storage=url)
    except Exception as e:  # noqa: BLE001 - a report must not die on a busy or odd database
        g.notes.append(f"Could not load the Optuna study {name!r} from {masked(url)}: "
                       + scrub(str(e), url))
        return None


def param_importances(g: Gathered, study: Any | None) -> tuple[dict[str, float], str]:
    """Optuna's importances of the first objective, or ``({}, why there are none)``."""
    if study is None:
        return {}, "not available: no Optuna study"
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values]
    varied = [p for p in {k for t in done for k in t.params}
              if len({repr(t.params.get(p)) for t in done}) > 1]
    if len(done) < 2 or not varied:
        return {}, (f"not enough trials: {len(done)} completed in the study with "
                    f"{len(varied)} varied parameters (need at least 2 trials and 1 parameter)")
    target = None if len(study.directions) == 1 else (lambda t: t.values[0])
    try:
        values = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                       target=target)
    except Exception as e:  # noqa: BLE001 - e.g. too few distinct values for the forest
        return {}, f"not available: Optuna could not compute them ({e})"
    return dict(values), f"from {len(done)} completed trials (fANOVA, Optuna)"


def _same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = set(a) & set(b)
    return bool(keys) and all(a[k] == b[k] for k in keys)


def pareto_front(g: Gathered, study: Any | None) -> tuple[list[str], str]:
    """Trials on the Pareto front of the first two objectives: Optuna's ``best_trials`` mapped
    to trial folders by their parameters, else computed from the last reported values.

    Either way the dots are the values each trial last reported (what Optuna ranks).
    """
    if study is not None and len(study.directions) >= 2:
        names = []
        for ft in study.best_trials:
            for t in g.df.itertuples():
                params = public_params(g.trials[t.trial].params())
                if _same_params(ft.params, params) and t.trial not in names:
                    names.append(t.trial)
        if names:
            return names, "Pareto-optimal trials from the Optuna study (study.best_trials)"
    a, b = g.objectives[:2]
    xa, xb = LAST_REPORTED + a.tag, LAST_REPORTED + b.tag
    if xa not in g.df or xb not in g.df:
        return [], "no trial has both objectives yet"
    # As Optuna: only completed trials (stopped ones are PRUNED there).
    pts = g.df[(g.df["state"] == COMPLETED) & g.df[xa].notna() & g.df[xb].notna()]

    def dominates(p: Any, q: Any) -> bool:
        ge = all(not o.better(q[c], p[c]) for o, c in ((a, xa), (b, xb)))
        return ge and any(o.better(p[c], q[c]) for o, c in ((a, xa), (b, xb)))

    front = [str(p["trial"]) for _, p in pts.iterrows()
             if not any(dominates(q, p) for _, q in pts.iterrows())]
    return front, "Pareto-optimal trials computed from the last reported values"


# ---------------------------------------------------------------- tables

Cell = str | list[str]  # a list renders as lines within one cell


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    id: str = ""

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

        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        ident = f' id="{self.id}"' if self.id else ""
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
    rows, base = [], g.base_name()
    for _, r in g.df.iterrows():
        changed = g.changed.get(r["trial"], {})
        train, last_eval = g.metrics[r["trial"]].last_train(), g.metrics[r["trial"]].last_eval()
        changes = [f"{k}: {v}" for k, v in changed.items()] or ["default settings"]
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
              *(p[len(PARAM):] for p in g.param_names)]
    rows, base = [], g.base_name()
    for _, r in _leaderboard(g).iterrows():
        rows.append([
            fmt(_num(r, "rank")), r["trial"] + (" (base)" if r["trial"] == base else ""), r["state"],
            fmt(_num(r, "objective")), fmt(_num(r, "best_step")),
            *(fmt(_num(r, BEST + t)) for t in (m.MAP, m.MAP50, m.AR100)),
            fmt(g.metrics[r["trial"]].last_train().get(m.TOTAL_LOSS)), fmt(_num(r, "steps")),
            fmt_duration(_num(r, "wall_time_s")),
            *(fmt(_num(r, p)) for p in g.param_names),
        ])
    return Table(header, rows, id="leaderboard")


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
                     g.changed.get(r["trial"]) and
                     [f"{k}: {v}" for k, v in g.changed[r["trial"]].items()] or "",
                     tail or ""])
    return Table(["Trial", "State", "Reason", "Last step", "Attempts", "Changed parameters",
                  "End of train.log"], rows, id="failures")


def compare_table(g: Gathered, base: str, best: str) -> Table:
    """Base trial vs best trial, metric by metric, with the change."""
    rb = g.df.set_index("trial").loc[base]
    rs = g.df.set_index("trial").loc[best]
    items: list[tuple[str, str]] = [(f"best {label(o.tag)}",
                                     "objective" if i == 0 else f"objective:{o.tag}")
                                    for i, o in enumerate(g.objectives)]
    items += [(f"{label(t)} at best step", BEST + t) for t in (m.MAP, m.MAP50, m.AR100)]
    items += [(f"final {label(t)}", TRAIN + t) for t in (m.TOTAL_LOSS, m.CLASSIFICATION_LOSS,
                                                        m.LOCALIZATION_LOSS)]
    items += [("steps", "steps"), ("wall time (s)", "wall_time_s")]
    rows = []
    for name, col in items:
        a, b = _num(rb, col), _num(rs, col)
        if a is None and b is None:
            continue
        if isinstance(a, int | float) and isinstance(b, int | float):
            delta = b - a
            rel = f" ({delta / abs(a):+.1%})" if a else ""
            change = f"{delta:+.4g}{rel}"
        else:
            change = ""
        rows.append([name, fmt(a), fmt(b), change])
    return Table(["", f"base ({base})", f"best ({best})", "change"], rows, id="best-vs-base")


# ---------------------------------------------------------------- writing

def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _as(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


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
        from sweep.render import load_pipeline, write_pipeline

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
    _write_text(out / "params.json", json.dumps(params, indent=2, sort_keys=True) + "\n")
    _write_text(out / "params.yaml", yaml.safe_dump(params, sort_keys=True))
    _write_text(out / "trial.json", json.dumps(info, indent=2, default=str) + "\n")
    return info


def _plots(g: Gathered, study: Any | None, plot_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Draw every plot that applies; returns the files and a sentence per missing one."""
    from sweep import plots

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
    values, note = param_importances(g, study)
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
    for name, path in made.items():
        if path is None and name != "param_importances.png":  # its note says why already
            why.append(f"{name}: nothing to draw yet (no trial has the data it needs)")
    return {k: v for k, v in made.items() if v is not None}, why


PLOT_TITLES = {
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
    images: list[tuple[str, Path]] = field(default_factory=list)  # (caption, png)


def steps_saved(exp: Experiment) -> int:
    """Train steps early stopping saved: each stopped trial's num_steps minus what it trained."""
    total = 0
    for t in exp.trials():
        st = t.status()
        if st.get("state") == STOPPED and st.get("num_steps") and "trained_steps" in st:
            total += max(0, int(st["num_steps"]) - int(st["trained_steps"]))
    return total


def _sections(g: Gathered, plots_made: dict[str, Path], best_info: dict[str, Any] | None
              ) -> list[Section]:
    obj = g.objectives[0]
    best, base = g.best_name(), g.base_name()
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
    if best_info:
        summary.append(
            f"Best trial: {best} with {label(obj.tag)} {fmt(best_info['value'])} at step "
            f"{fmt(best_info['step'])}. best/pipeline.config is its config"
            + (f", fine-tuning from {best_info['fine_tune_checkpoint']}"
               if best_info.get("fine_tune_checkpoint") else "")
            + (f"; its checkpoint nearest that step is {best_info['checkpoint']} "
               f"(step {best_info['checkpoint_step']})" if best_info.get("checkpoint") else "")
            + ".")
    else:
        summary.append("No trial has been evaluated yet: there is no best config.")
    sections = [Section("Summary", summary)]
    sections.append(Section("Runs", ["One row per trial in the order they started. Losses and "
                                      "learning rate at the last train step, mAP and AR@100 at "
                                      "the last evaluation; changed parameters are what differs "
                                      "from the base config."], run_table(g)))
    sections.append(Section("Leaderboard", [
        f"Ranked by each trial's best {obj.tag} ({obj.mode}) over its evaluations, the value "
        "the runner reported to Ray (a loss is the training job's at that step); failed "
        "trials are not ranked. mAP, mAP@.50 and AR@100 are at that best step."],
                            leaderboard_table(g)))
    if best and base:
        if best == base:
            sections.append(Section("Best vs base config", [
                f"The base config ({base}) is the best trial so far."]))
        else:
            diff = _best_vs_base_diff(g, base, best)
            sections.append(Section("Best vs base config", [
                f"Base: {base} (the trial evaluated with the base config's values). "
                f"Best: {best}.",
                "Parameters of the best that differ from the base: "
                + ("; ".join(f"{k}: {v}" for k, v in diff.items()) or "none") + "."],
                compare_table(g, base, best)))
    fails = failures_table(g)
    sections.append(Section("Failed and stopped trials",
                            [] if fails else ["No trial failed or was stopped."], fails))
    images = [(PLOT_TITLES[n], plots_made[n]) for n in PLOT_FILES if n in plots_made]
    sections.append(Section("Plots", [] if images else ["No plots yet: no trial has been "
                                                        "trained and evaluated."], None, images))
    if g.notes:
        sections.append(Section("Notes", list(g.notes)))
    return sections


def _best_vs_base_diff(g: Gathered, base: str, best: str) -> dict[str, str]:
    tb, ts = g.trials[base], g.trials[best]
    if tb.pipeline_path.exists() and ts.pipeline_path.exists():
        from sweep.render import changed_fields, load_pipeline

        return changed_fields(load_pipeline(tb.pipeline_path), load_pipeline(ts.pipeline_path))
    pb, ps = public_params(tb.params()), public_params(ts.params())
    return {k: fmt(v) for k, v in ps.items() if pb.get(k) != v}


def _banner(g: Gathered) -> str:
    if g.finished:
        return ""
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
        for caption, path in s.images:
            parts += [f"### {caption}", "", f"![{caption}]({path.relative_to(out_dir)})", ""]
    return "\n".join(parts)


CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em;
       color: #222; max-width: 100%; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; text-align: left;
         max-width: 32em; overflow-wrap: anywhere; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafafa; }
.scroll { overflow-x: auto; }
.banner { background: #fff3cd; border: 1px solid #e0c36c; padding: .8em 1em; font-weight: bold; }
figure { margin: 1em 0; } figcaption { font-weight: bold; margin-bottom: .3em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.meta { color: #666; }
"""

# Marks the page once every image has decoded (the browser test reads these with --dump-dom).
CHECK_JS = """
window.addEventListener('error', function (e) {
  document.body.setAttribute('data-js-error', String(e.message || e));
});
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  document.body.setAttribute('data-report-ok', ok === imgs.length ? 'yes' : 'no');
});
"""


def render_html(g: Gathered, sections: Sequence[Section], generated: str) -> str:
    title = html.escape(_title(g))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{title}</title><style>{CSS}</style></head>",
             f'<body data-finished="{"yes" if g.finished else "no"}">', f"<h1>{title}</h1>",
             f'<p class="meta">Generated {html.escape(generated)}.</p>']
    if banner := _banner(g):
        parts.append(f'<div class="banner" id="partial-banner">{html.escape(banner)}</div>')
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in s.text]
        if s.table:
            parts.append(f'<div class="scroll">{s.table.html()}</div>')
        for caption, path in s.images:
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<figure><figcaption>{html.escape(caption)}</figcaption>"
                         f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                         "</figure>")
    parts.append(f"<script>{CHECK_JS}</script></body></html>")
    return "\n".join(parts)


def write_report(exp: Experiment, out_dir: Path | None = None, *,
                 fine_tune_from_best: bool = False) -> Path:
    """Write the report of ``exp`` into ``out_dir`` (default ``reports/<experiment>/``).

    Only this module's own files inside ``out_dir`` are written or replaced; nothing else is
    deleted. With ``fine_tune_from_best``, best/pipeline.config fine-tunes from the best trial's
    checkpoint nearest its best eval step, to continue the chain.
    """
    out_dir = Path(out_dir) if out_dir is not None else REPORTS_DIR / exp.name
    out_dir.mkdir(parents=True, exist_ok=True)
    g = gather(exp)
    generated = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    best = g.best_name()
    best_info = None
    if best:
        best_info = _write_best(g, best, out_dir / "best", fine_tune_from_best)
    else:
        for name in BEST_FILES:  # a stale best from an earlier report would mislead
            (out_dir / "best" / name).unlink(missing_ok=True)
    study = _load_study(g)
    plot_dir = out_dir / "plots"
    made, missing = _plots(g, study, plot_dir)
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
    sections = _sections(g, made, best_info)
    _write_text(out_dir / "report.md", render_markdown(g, sections, out_dir, generated))
    _write_text(out_dir / "report.html", render_html(g, sections, generated))
    return out_dir
