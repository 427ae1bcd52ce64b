"""The report's data: every trial's folder and event files read once, ranked.

``gather(exp)`` is what every report renderer starts from (``sweep.report.report`` writes the files);
``leaderboard`` and ``best_trial`` are the same ranking for other commands (export, status).
Every number comes from the trials' event files through ``sweep.odapi.metrics``; the Optuna study is
read only for what only it knows (parameter importances, the Pareto front).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.core.errors import ConfigError
from sweep.core.experiment import (
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    Experiment,
    TrialDir,
)
from sweep.core.once import OnceMap
from sweep.odapi import metrics as m
from sweep.report import short_names
from sweep.report.short_names import num
from sweep.run.best import best_eval, checkpoint_steps, nearest_checkpoint, reported  # noqa: F401 - re-exported
from sweep.search import marks

# Column names of the leaderboard; metric columns are "<kind>:<OD API tag>".
# Short names the seed's table and the plots use for the OD API's tags.
LABELS = {
    m.CLASSIFICATION_LOSS: "classification loss", m.LOCALIZATION_LOSS: "localization loss",
    m.REGULARIZATION_LOSS: "regularization loss", m.TOTAL_LOSS: "total loss",
    m.LEARNING_RATE: "learning rate", m.MAP: "mAP", m.MAP50: "mAP@.50", m.MAP75: "mAP@.75",
    m.AR100: "AR@100", m.STEPS_PER_SEC: "steps/s",
}

TOP_K = 5  # trials drawn in the curve plots
# fANOVA on fewer completed trials ranks noise: importances are shown from this many on.
MIN_TRIALS_FOR_IMPORTANCES = 10
PARAM = "param:"
TRAIN = "train:"  # value at the last train step
EVAL = "eval:"  # value at the last eval step
BEST = "best:"  # value at the eval step that is best by the sweep's first metric
LAST_REPORTED = "reported:"  # an objective as the runner reported it at the last eval


def fmt(value: Any, digits: int = 4) -> str:
    """A number as the report prints it (``digits`` significant digits, short exponent);
    blank if missing. A NaN that an event file holds (a diverged loss) prints as "NaN";
    callers pass None for a value that is absent."""
    if value is pd.NA:
        return ""
    return num(value.item() if hasattr(value, "item") else value, digits)



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


def _best_of(tm: m.TrialMetrics, obj: Objective) -> tuple[int, float] | None:
    """(eval step, value) best by ``obj`` among the trial's evaluations: ``sweep.run.best``'s rule."""
    return best_eval(tm, obj.tag, obj.mode)


def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """Sampled parameters without the markers (``_base``, ``_seed``: sweep.search.marks)."""
    return marks.public(params)


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
    # trial -> its mAP minus the best trial's, with the bootstrap interval (sweep.report.bootstrap);
    # filled by ``noise_vs_best``; a trial without kept detections is absent.
    vs_best: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return bool(self.settings.get("finished"))

    def ranked(self) -> pd.DataFrame:
        return self.df[self.df["rank"].notna()].sort_values("rank")

    def best_name(self) -> str | None:
        """The recommended trial: the config that won its confirmation over seeds (its search
        trial), else the search's best trial."""
        confirmed = self.confirmed()
        if confirmed is not None:
            return confirmed.recommended.of
        ranked = self.ranked()
        return None if ranked.empty else str(ranked.iloc[0]["trial"])

    def confirmed(self) -> Any:
        """The confirmation verdict (``sweep.report.confirmation.Verdict``), or None when no
        config and the base were confirmed over seeds. Computed once."""
        if "verdict" not in self._cache:
            self._cache["verdict"] = _confirmed(self)
        return self._cache["verdict"]

    def base_name(self) -> str | None:
        """The search's trial of the base config: the one launched from the space's ``base``
        point (marked ``_base`` when it started: sweep.search.marks), else (an experiment from
        before the marker) one whose rendered config equals the base pipeline's; None when no
        trial ran the base config (then there is nothing to compare with)."""
        search = self.df[self.df["role"] == ""]
        marked = search[search["base"]]
        if not marked.empty:
            return str(marked.iloc[0]["trial"])
        for name in search["trial"]:
            if self.changed.get(name) == {} and self.trials[name].pipeline_path.exists():
                return str(name)
        return None

    def short_changes(self, name: str) -> dict[str, str]:
        """What ``name`` changed from the base trial, in the space's short names
        (``{"l2_weight": "1.2e-4"}``); empty for the base and for configs equal to the base."""
        base = self.base_name()
        if name == base or not self.changed.get(name):
            return {}
        mine = public_params(self.trials[name].params())
        theirs = public_params(self.trials[base].params()) if base else {}
        return short_names.changed(mine, theirs) if theirs else short_names.grouped(mine)

    def varied_params(self) -> list[str]:
        """Parameter columns with more than one value (constants only clutter the plots)."""
        return [p for p in self.param_names
                if self.df[p].dropna().astype(str).nunique() > 1]


def _changed_fields(base_cfg: Any, trial: TrialDir) -> dict[str, str] | None:
    if base_cfg is None or not trial.pipeline_path.exists():
        return None
    from sweep.odapi.render import changed_fields, load_pipeline

    return changed_fields(base_cfg, load_pipeline(trial.pipeline_path))


def _trial_row(trial: TrialDir, tm: m.TrialMetrics, objs: list[Objective],
               now: float) -> dict[str, Any]:
    status = trial.status()
    params = trial.params()
    state = status.get("state", PENDING)
    row: dict[str, Any] = {
        "trial": trial.name, "state": state, "reason": status.get("reason") or "",
        "base": marks.is_base(params), "seed": marks.seed_of(params),
        "role": _role(params), "attempts": status.get("attempts"),
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


def _confirmed(g: Gathered) -> Any:
    from sweep.report import confirmation

    def final(name: str) -> tuple[int, float] | None:
        tm = g.metrics[name]
        if tm.last_eval_step is None or g.df.set_index("trial").loc[name, "state"] == FAILED:
            return None
        value = tm.eval[tm.last_eval_step].get(m.MAP)
        return None if value is None else (tm.last_eval_step, value)

    configs = confirmation.gather_configs(g.trials, lambda n: g.trials[n].params(), final)
    if not configs:
        return None
    kept = {}
    for c in configs:
        for run in c.runs:
            k = kept_detections(g, run, c.step)
            if not isinstance(k, str):
                kept[run] = k
    return confirmation.decide(configs, "max", kept)


def _role(params: dict[str, Any]) -> str:
    """"" for a search trial; "confirm:<trial>" for a confirmation of that trial's config."""
    c = marks.confirm_of(params)
    return f"confirm:{c.get('of', '?')}" if c else ""


def gather(exp: Experiment) -> Gathered:
    """Read settings, every trial's folder and event files into one DataFrame."""
    settings = exp.settings()
    objs = objectives(settings)
    now = time.time()
    base_cfg = None
    notes: list[str] = []
    if exp.base_pipeline.exists():
        from sweep.odapi.render import load_pipeline

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
        df = pd.DataFrame(columns=["trial", "state", "reason", "base", "seed", "role", "objective",
                                   "best_step"])
    for col in ("steps", "eval_step", "best_step", "attempts"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["changed"] = [
        "; ".join(f"{k}: {v}" for k, v in changed[t].items()) for t in df["trial"]]
    # Rank: failed trials (e.g. diverged), trials with no objective yet and confirmation runs
    # (judged by their mean over seeds, not one lucky run) are not candidates.
    obj = pd.to_numeric(df["objective"], errors="coerce")
    eligible = (df["state"] != FAILED) & obj.notna() & (df["role"] == "")
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
    first = ["rank", "trial", "state", "reason", "base", "seed", "role", "objective", "best_step"]
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

    from sweep.core.study_url import masked, scrub

    url = g.exp.storage_url()
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):])
        if not db.exists():  # loading would create an empty database
            g.notes.append(f"No Optuna study yet ({db} does not exist).")
            return None
        from sweep.core.experiment import study_file_problem

        problem = study_file_problem(db)
        if problem:  # loading could write Optuna's tables into it
            g.notes.append(f"The Optuna study {db} {problem}: restore it from a copy (this "
                           "report is from the trials' folders only).")
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
    if len(done) < MIN_TRIALS_FOR_IMPORTANCES or not varied:
        return {}, (f"not enough trials: {len(done)} completed with {len(varied)} varied "
                    f"parameters; importances mean something from {MIN_TRIALS_FOR_IMPORTANCES} "
                    "completed trials and 1 varied parameter on")
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


# ---------------------------------------------------------------- best vs base, like for like

DETECTION = (m.MAP, m.MAP50, m.AR100)  # what a verdict compares, whichever metric chose


@dataclass(frozen=True)
class Comparison:
    """Best vs base at the same training length: each at its best evaluation (by the sweep's
    first metric) at or before ``step``, the last step both trials reached."""

    base: str
    best: str
    step: int  # the last eval step both reached
    at_end: bool  # both trained to their num_steps: the comparison is at the end of training
    stopped: str | None  # the trial whose stop set ``step`` (when not at the end)
    base_step: int
    best_step: int
    scores: dict[str, tuple[float | None, float | None]]  # tag -> (base, best) at those steps
    objective: tuple[float, float]  # the first metric at those steps (base, best)
    train_s: tuple[float | None, float | None]  # training time to ``step``


def compare(g: Gathered, base: str, best: str) -> Comparison | None:
    """The like-for-like comparison of ``best`` with ``base``; None when either has no
    evaluation of the sweep's first metric."""
    tb, ts = g.metrics[base], g.metrics[best]
    if tb.last_eval_step is None or ts.last_eval_step is None:
        return None
    step = min(tb.last_eval_step, ts.last_eval_step)
    obj = g.objectives[0]
    fb = best_eval(tb, obj.tag, obj.mode, up_to=step)
    fs = best_eval(ts, obj.tag, obj.mode, up_to=step)
    if fb is None or fs is None:
        return None
    nb = g.trials[base].status().get("num_steps")
    ns = g.trials[best].status().get("num_steps")
    at_end = (tb.last_eval_step >= (nb or 0) > 0) and (ts.last_eval_step >= (ns or 0) > 0)
    stopped = None if at_end else (base if tb.last_eval_step <= ts.last_eval_step else best)
    scores = {tag: (tb.eval.get(fb[0], {}).get(tag), ts.eval.get(fs[0], {}).get(tag))
              for tag in DETECTION}
    return Comparison(base, best, step, at_end, stopped, fb[0], fs[0], scores,
                      (fb[1], fs[1]), (tb.train_seconds(step), ts.train_seconds(step)))


# ---------------------------------------------------------------- noise

def kept_detections(g: Gathered, name: str, step: int | None = None
                    ) -> tuple[dict, list[dict]] | str:
    """(ground truth, detections) the eval job kept for the checkpoint of ``name``'s
    evaluation at ``step`` (default: its best step), or why there are none."""
    from sweep.odapi import detections

    if step is None:
        step = g.df.set_index("trial").loc[name, "best_step"]
    if step is None or step is pd.NA:
        return f"{name} has no evaluation"
    ck = {s: c for c, s in checkpoint_steps(g.trials[name]).items()}.get(int(step))
    kept = detections.read(g.trials[name].path, ck) if ck else None
    if kept is None:
        return (f"the eval job kept no per-image detections for {name} at step {int(step)} "
                "(a sweep run before they were kept)")
    return kept


def matched(g: Gathered, name: str, step: int | None = None) -> tuple[frozenset, Any] | str:
    """(eval image ids, ``bootstrap.PerImage``) of ``name``'s kept detections at ``step``
    (default: its best step), matched by COCOeval once per report however many comparisons
    use them; or why there are none."""
    from sweep.report import bootstrap

    if step is None:
        step = g.df.set_index("trial").loc[name, "best_step"]
    key = ("matched", name, None if step is None or step is pd.NA else int(step))

    def match() -> tuple[frozenset, Any] | str:
        kept = kept_detections(g, name, step)
        return kept if isinstance(kept, str) else (
            frozenset(i["id"] for i in kept[0]["images"]), bootstrap.evaluate(*kept))

    return _once(g, key, match)


_CACHE_LOCK = threading.Lock()


def _once(g: Gathered, key: tuple, make: Any) -> Any:
    """``make()`` once per report for ``key``, whichever thread asks first."""
    with _CACHE_LOCK:
        once = g._cache.setdefault("once", OnceMap())
    return once.get(key, make)


def _paired(g: Gathered, a: Any, b: Any, resamples: int | None) -> Any:
    """``bootstrap`` interval of b - a on the report's one set of draws over these images."""
    from sweep.report import bootstrap

    n, resamples = len(a.image_ids), resamples or bootstrap.RESAMPLES
    return _once(g, ("resampler", n, resamples),
                 lambda: bootstrap.Resampler(n, resamples)).interval(a, b)


GAP_TOP = 10  # ranked trials whose gap to the best gets an interval (one COCOeval each)


def noise_vs_best(g: Gathered, resamples: int | None = None, top: int = GAP_TOP) -> str | None:
    """Fill ``g.vs_best``: the mAP of each of the ``top`` ranked trials after the best minus
    the best's, paired bootstrap over the eval images (the best's detections matched and
    resampled once; one COCOeval and one bootstrap per other trial, so a 200-trial sweep on
    5,000 eval images does not rerun it 200 times). Two trials at a time: the bootstrap's
    array work releases the GIL, so one trial's resampling runs beside another's COCOeval.
    Returns why it could not be measured for the best, or None."""
    from concurrent.futures import ThreadPoolExecutor

    best = g.best_name()
    if best is None:
        return "no trial has been evaluated"
    ref = matched(g, best)
    if isinstance(ref, str):
        return ref

    def gap(name: str) -> Any:
        other = matched(g, name)
        if isinstance(other, str):
            return None
        if other[0] != ref[0]:
            return f"{name} was evaluated on other images than {best}: no interval."
        return _paired(g, other[1], ref[1], resamples)

    def warm(key: tuple[str, int]) -> None:  # what the verdict's eval-image noise will read
        got = matched(g, *key)
        if not isinstance(got, str) and got[0] == ref[0]:
            _paired(g, got[1], got[1], resamples)

    names = [str(n) for n in g.ranked()["trial"] if n != best][:top]
    base = g.base_name()
    c = compare(g, base, best) if base and base != best else None
    with ThreadPoolExecutor(max_workers=2) as pool:
        if c is not None:
            pool.map(warm, [(c.base, c.base_step), (c.best, c.best_step)])
        for name, got in zip(names, pool.map(gap, names), strict=True):
            if isinstance(got, str):
                g.notes.append(got)
            elif got is not None:
                g.vs_best[name] = got
    return None


def eval_noise(g: Gathered, c: Comparison, resamples: int | None = None) -> Any | str:
    """The eval-image noise of a like-for-like comparison: best - base mAP at the compared
    steps with a paired-bootstrap interval over the eval images, or why it cannot be had."""
    a, b = matched(g, c.base, c.base_step), matched(g, c.best, c.best_step)
    for k in (a, b):
        if isinstance(k, str):
            return k
    if a[0] != b[0]:  # type: ignore[index]
        return f"{c.base} and {c.best} were evaluated on different images"
    return _paired(g, a[1], b[1], resamples)  # type: ignore[index]
