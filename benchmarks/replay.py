"""Replay a sweep against a recorded table (issue 24): an in-process simulator in the manner of
Syne Tune's simulator backend. No Ray cluster, no OD API: the recorded curves stand in for the
trials, a simulated clock for the wall clock.

What is the sweep's own, so that replay and ``sweep run`` cannot drift apart:
- the sampler and scheduler come from ``sweep.run.tune_backend.make_sampler/make_scheduler``
  on a ``SweepSettings`` (what ``sweep run`` calls with its options);
- the searcher is the sweep's ``OptunaSearch`` subclass (``tune_backend._searcher_class``) on
  the space's define-by-run, with the known points first (``samplers.known_points``);
- the scheduler's and searcher's hooks are called as Ray Tune's controller calls them
  (``TuneController._process_trial_result`` and ``stop_trial`` in Ray 2.x): on a STOP the
  searcher gets no ``on_trial_result`` for that result, then both get ``on_trial_complete``
  with the last result;
- ``--max-concurrent`` trials run at once; a trial's results arrive at its recorded seconds.

What is the replay's: which table cell a config plays (``CellIndex``: exact for a table draw,
else nearest in the space's own scale) and which recorded repeat (``repeat_of``).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import heapq
import io
import json
import math
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.search.space import (
    BasePoint,
    Categorical,
    Choice,
    IntRange,
    LogUniform,
    SearchSpace,
    Stepped,
    Uniform,
)

METRICS = ("mAP", "mAP_50", "AR_100", "total_loss")


# -------------------------------------------------------------------------------------- table


@dataclass
class Curve:
    """One recorded trial: its evaluations in step order."""

    steps: list[int]
    values: dict[str, list[float | None]]
    seconds: list[float]

    def at(self, steps: list[int]) -> Curve:
        """The evaluations a sweep evaluating at ``steps`` sees: for each, the first recorded
        step at or past it (the recorded one itself when the table has it), in order, once."""
        keep: list[int] = []
        for want in steps:
            i = next((i for i, s in enumerate(self.steps) if s >= want), None)
            if i is not None and i not in keep:
                keep.append(i)
        return Curve([self.steps[i] for i in keep],
                     {mt: [v[i] for i in keep] for mt, v in self.values.items()},
                     [self.seconds[i] for i in keep])


@dataclass
class Table:
    curves: dict[tuple[str, int], Curve]  # (config id, repeat) -> curve
    configs: dict[str, dict[str, Any]]  # config id -> params (only those with a curve)
    max_steps: int
    base_pipeline: str = ""  # the pipeline.config text the table was recorded with
    missing: list[str] = field(default_factory=list)  # config ids of the space with no curve

    def repeats(self, cid: str) -> list[int]:
        return sorted(k for c, k in self.curves if c == cid)

    def true_quality(self, cid: str, metric: str = "mAP") -> float:
        """The cell's quality: the mean over its repeats of the final evaluation's value
        (what retraining that config gives on average, not one lucky run)."""
        vals = [self.curves[(cid, k)].values[metric][-1] for k in self.repeats(cid)]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else float("nan")


def load_table(path: Path | str) -> Table:
    """``<path>.csv.gz`` (or .csv) and its ``<path>.json`` sidecar (``record_table.py``)."""
    path = Path(path)
    stem = path.name.removesuffix(".gz").removesuffix(".csv").removesuffix(".json")
    base = path.with_name(stem)
    side = json.loads(base.with_name(stem + ".json").read_text())
    gz = base.with_name(stem + ".csv.gz")
    text = (gzip.decompress(gz.read_bytes()).decode() if gz.exists()
            else base.with_name(stem + ".csv").read_text())
    rows: dict[tuple[str, int], list[dict[str, str]]] = {}
    for r in csv.DictReader(io.StringIO(text)):
        rows.setdefault((r["config"], int(r["seed"])), []).append(r)
    curves = {}
    for key, rs in rows.items():
        rs.sort(key=lambda r: int(r["step"]))
        curves[key] = Curve(
            steps=[int(r["step"]) for r in rs],
            values={mt: [float(r[mt]) if r.get(mt) not in (None, "") else None for r in rs]
                    for mt in METRICS},
            seconds=[float(r["seconds"]) if r.get("seconds") else math.nan for r in rs])
    _fill_seconds(curves)
    configs = {c: side["configs"][c] for c, _ in curves}
    max_steps = max(c.steps[-1] for c in curves.values())
    return Table(curves, configs, max_steps, side.get("base_pipeline", ""),
                 missing=list(side.get("missing", [])))


def _fill_seconds(curves: dict[tuple[str, int], Curve]) -> None:
    """A row without seconds gets the table's median seconds per step (synthetic tables)."""
    rates = [s / st for c in curves.values() for s, st in zip(c.seconds, c.steps, strict=True)
             if not math.isnan(s) and st > 0]
    rate = sorted(rates)[len(rates) // 2] if rates else 1.0
    for c in curves.values():
        c.seconds = [st * rate if math.isnan(s) else s for s, st in zip(c.seconds, c.steps,
                                                                          strict=True)]


# ------------------------------------------------------------------------- config -> cell


class CellIndex:
    """Which recorded cell a sampled config plays: the one nearest in the searched space's own
    scale. A parameter counts if it varies among the cells and the space searches it: numbers
    are placed on [0, 1] of the space's range (log for log parameters; for a categorical of
    numbers spanning >= 10x, log over its values, else linear), anything else differs by 1 if
    unequal, and a parameter present on one side only (another schedule) by 1. Squared
    distances add; ties go to the first cell id. A table draw finds its own cell (distance 0)."""

    def __init__(self, table: Table, space: SearchSpace) -> None:
        self.ids = sorted(table.configs)
        cells = [table.configs[c] for c in self.ids]
        dists = {p.name: p.dist for p, _ in space.walk() if p.sampled}
        keys = sorted({k for c in cells for k in c})
        self.keys = [k for k in keys if k in dists
                     and len({json.dumps(c.get(k)) for c in cells}) > 1]
        values = {k: [c[k] for c in cells if k in c] for k in self.keys}
        self.scale = {k: _scale(dists.get(k), values[k]) for k in self.keys}
        self.coords = [self._coords(c) for c in cells]
        self._memo: dict[str, str] = {}

    def _coords(self, config: Mapping[str, Any]) -> list[Any]:
        return [self.scale[k](config[k]) if k in config else None for k in self.keys]

    def nearest(self, config: Mapping[str, Any]) -> str:
        memo = json.dumps({k: config.get(k) for k in self.keys}, sort_keys=True, default=str)
        if memo not in self._memo:
            q = self._coords(config)
            self._memo[memo] = min(zip(self.ids, self.coords, strict=True),
                                   key=lambda ic: _distance(q, ic[1]))[0]
        return self._memo[memo]


def _distance(a: list[Any], b: list[Any]) -> float:
    d = 0.0
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            d += 0.0 if x is y else 1.0
        elif isinstance(x, float) and isinstance(y, float):
            d += (x - y) ** 2
        else:
            d += 0.0 if x == y else 1.0
    return d


def _scale(dist: Any, values: list[Any]):  # noqa: ANN202 - value -> coordinate
    def fixed(d: Any) -> bool:
        return not isinstance(d.low, str) and not isinstance(d.high, str)

    if isinstance(dist, LogUniform) or (isinstance(dist, IntRange) and dist.log):
        if fixed(dist):
            lo, hi = math.log(dist.low), math.log(dist.high)
            return lambda v: (math.log(v) - lo) / (hi - lo)
    if isinstance(dist, Uniform | Stepped | IntRange) and fixed(dist):
        lo, hi = float(dist.low), float(dist.high)
        return lambda v: (float(v) - lo) / (hi - lo)
    if dist is None or isinstance(dist, Categorical | Choice):
        nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if nums and len(nums) == len(values):
            lo, hi = min(nums), max(nums)
            if lo > 0 and hi / lo >= 10:
                return lambda v: (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
            if hi > lo:
                return lambda v: (float(v) - lo) / (hi - lo)
    return lambda v: json.dumps(v)  # compared for equality only


# --------------------------------------------------------------------------- the simulator


def repeat_of(sweep_seed: int, trial_number: int, repeats: list[int]) -> int:
    """Which recorded repeat trial ``trial_number`` of a sweep seeded ``sweep_seed`` plays: a
    function of the seed `sweep run` gives that trial (sweep.search.marks.trial_seed)."""
    from sweep.search.marks import trial_seed

    return repeats[trial_seed(sweep_seed, trial_number) % len(repeats)]


@dataclass
class SimTrial:
    """What Ray's schedulers touch of a ``Trial``: its id, status and last result (and it is
    hashable: the median rule keys its results by trial)."""

    trial_id: str
    config: dict[str, Any]
    status: str = "RUNNING"
    last_result: dict[str, Any] = field(default_factory=dict)

    __hash__ = object.__hash__
    __eq__ = object.__eq__


class SimController:
    """What Ray's schedulers touch of the ``TuneController``."""

    def __init__(self) -> None:
        self.trials: list[SimTrial] = []

    def get_trials(self) -> list[SimTrial]:
        return list(self.trials)

    def get_live_trials(self) -> list[SimTrial]:
        return [t for t in self.trials if t.status in ("RUNNING", "PENDING", "PAUSED")]


@dataclass
class TrialRecord:
    trial_id: str
    cell: str
    repeat: int
    steps: int = 0  # train steps it ran (its last evaluated step)
    best: float | None = None  # best reported value (sweep.run.best's rule)
    stopped: bool = False


@dataclass
class SweepTrace:
    """One replayed sweep: its trials, and after every result the train steps spent so far
    with the recommendation then (the trial with the best reported value)."""

    trials: list[TrialRecord]
    timeline: list[tuple[int, float, str | None, float | None]]  # (steps, clock s, cell, best)
    clock_s: float

    @property
    def total_steps(self) -> int:
        return sum(t.steps for t in self.trials)

    @property
    def recommended(self) -> TrialRecord | None:
        from sweep.run.best import better

        found = None
        for t in self.trials:  # creation order: on a tie the earlier trial stays
            if better(t.best, None if found is None else found.best, "max"):
                found = t
        return found


@dataclass(frozen=True)
class Options:
    """The `sweep run` options a replay takes (the rest are sweep run's defaults)."""

    sampler: str
    scheduler: str
    num_trials: int
    seed: int = 0
    max_concurrent: int = 2
    eval_every: int = 0  # 0: as `sweep run` decides (schedulers.eval_points)
    metric: str = "mAP"
    step_budget: int = 0  # `sweep run --step-budget` (0: none): the sweep stops once spent
    # What-ifs that `sweep run` does not offer (the defaults are sweep run's):
    grace_period: int = 0  # ASHA's first rung / the median rule's grace (0: the first eval)
    reduction_factor: int = 2  # ASHA's
    brackets: int = 1  # ASHA's (more than 1: Hyperband-style brackets of the same rungs)
    tpe_startup: int | None = None  # TPE's start-up trials (None: sweep run's rule)


def settings_for(opts: Options, space_path: Path | None = None, max_steps: int = 0) -> Any:
    """The ``SweepSettings`` that ``sweep run`` would hold for these options, its
    ``--eval-every`` resolved as ``sweep run`` resolves it for trials of ``max_steps``."""
    from sweep.odapi import metrics
    from sweep.run import schedulers
    from sweep.run.settings import SweepSettings

    tag = {"mAP": metrics.MAP, "mAP_50": metrics.MAP50, "AR_100": metrics.AR100}[opts.metric]
    eval_every = opts.eval_every
    if max_steps:
        eval_every, _ = schedulers.eval_points(opts.scheduler, eval_every, max_steps)
    return SweepSettings(name="replay", space=space_path or Path("space.yaml"),
                         pipeline=Path("pipeline.config"), num_trials=opts.num_trials,
                         max_concurrent=opts.max_concurrent, sampler=opts.sampler,
                         scheduler=opts.scheduler, metrics=[tag], modes=["max"],
                         seed=opts.seed, eval_every=eval_every, dashboard=False,
                         step_budget=opts.step_budget or None)


def eval_steps(opts: Options, max_steps: int) -> list[int]:
    """The steps at which `sweep run` with these options evaluates a trial (its results):
    the resolved --eval-every, as the runner plans it (sweep.run.trial.plan_steps), and the
    last step."""
    from sweep.run.trial import plan_steps

    every, _ = plan_steps(max_steps, settings_for(opts, max_steps=max_steps).eval_every)
    return list(range(every, max_steps + 1, every))


def build(opts: Options, space: SearchSpace, points: list[dict[str, Any]], max_steps: int
          ) -> tuple[Any, Any, list[dict[str, Any]]]:
    """(searcher, scheduler, known points) exactly as ``sweep run`` builds them."""
    import optuna

    from sweep.core.experiment import Experiment
    from sweep.odapi.metrics import result_key
    from sweep.run import tune_backend
    from sweep.search import samplers

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = settings_for(opts, space.path, max_steps)
    points = samplers.known_points(points, settings.num_trials, space=space,
                                   sampler=settings.sampler)
    scheduler = tune_backend.make_scheduler(settings, max_steps, space,
                                            grace_period=opts.grace_period,
                                            reduction_factor=opts.reduction_factor,
                                            brackets=opts.brackets)
    searcher = tune_backend._searcher_class(Experiment(Path(tempfile.gettempdir())))(
        space=space.define_by_run, metric=result_key(settings.metrics[0]),
        mode=settings.modes[0],
        points_to_evaluate=points or None,
        sampler=tune_backend.make_sampler(settings, space, len(points),
                                          startup=opts.tpe_startup),
        study_name=f"replay-{opts.seed}")
    return searcher, scheduler, points


def base_points(space: SearchSpace, table: Table) -> list[dict[str, Any]]:
    """The demo's known point, ``base`` (the table's pipeline), in this space: what `sweep run`
    runs first. The table space's own ``points:`` are the recording's cells, not replayed."""
    if not table.base_pipeline:
        return []
    from sweep.odapi import render

    with tempfile.NamedTemporaryFile("w", suffix=".config") as f:
        f.write(table.base_pipeline)
        f.flush()
        base = render.load_pipeline(f.name)
    return dataclasses.replace(space, points=(BasePoint({}),)).points_to_evaluate(base)


def simulate(table: Table, space: SearchSpace, opts: Options, *,
             index: CellIndex | None = None, points: list[dict[str, Any]] | None = None
             ) -> SweepTrace:
    """Replay one sweep of ``opts`` on ``table``."""
    from ray.tune.schedulers import TrialScheduler

    from sweep.run.best import better
    from sweep.run.tune_backend import step_budget_spent

    # Ray warns when the define-by-run takes > 1 s (the first QMC draw imports SciPy): noise.
    warnings.filterwarnings("ignore", message="Define-by-run function passed")
    index = index or CellIndex(table, space)
    points = base_points(space, table) if points is None else points
    searcher, scheduler, _ = build(opts, space, points, table.max_steps)
    # A trial reports where `sweep run` would evaluate it, not at every recorded evaluation:
    # the scheduler's decisions, and each trial's best, see what a real sweep's would.
    at = eval_steps(opts, table.max_steps)
    views: dict[tuple[str, int], Curve] = {}
    ctrl = SimController()
    records: dict[str, TrialRecord] = {}
    events: list[tuple[float, int, str, int]] = []  # (clock, order, trial id, result index)
    curves: dict[str, Curve] = {}
    timeline: list[tuple[int, float, str | None, float | None]] = []
    clock, order, launched, running = 0.0, 0, 0, 0
    best_id: str | None = None

    def launch() -> None:
        nonlocal launched, running, order
        while running < opts.max_concurrent and launched < opts.num_trials:
            tid = f"t{launched:04d}"
            config = searcher.suggest(tid)
            if config is None:
                return
            cell = index.nearest(config)
            rec = TrialRecord(tid, cell, repeat_of(opts.seed, launched, table.repeats(cell)))
            records[tid] = rec
            key = (cell, rec.repeat)
            if key not in views:
                views[key] = table.curves[key].at(at)
            curves[tid] = views[key]
            trial = SimTrial(tid, config)
            ctrl.trials.append(trial)
            scheduler.on_trial_add(ctrl, trial)
            heapq.heappush(events, (clock + curves[tid].seconds[0], order, tid, 0))
            order += 1
            launched += 1
            running += 1

    def finish(trial: SimTrial) -> None:
        nonlocal running
        scheduler.on_trial_complete(ctrl, trial, trial.last_result)
        searcher.on_trial_complete(trial.trial_id, result=trial.last_result)
        trial.status = "TERMINATED"
        running -= 1

    launch()
    trials = {t.trial_id: t for t in ctrl.trials}
    while events:
        clock, _, tid, i = heapq.heappop(events)
        trial, rec, curve = trials[tid], records[tid], curves[tid]
        step = curve.steps[i]
        last = i == len(curve.steps) - 1
        result = {mt: curve.values[mt][i] for mt in METRICS}
        result.update(step=step, training_iteration=i + 1, trial_id=tid,
                      trained_to_end=last and step >= table.max_steps, done=last)
        rec.steps = step
        value = result.get(opts.metric)
        if better(value, rec.best, "max"):
            rec.best = value
        if best_id is None or better(rec.best, records[best_id].best, "max"):
            best_id = tid
        decision = scheduler.on_trial_result(ctrl, trial, result)
        if decision != TrialScheduler.STOP:
            searcher.on_trial_result(tid, result)
        trial.last_result = result
        sum_steps = sum(r.steps for r in records.values())
        timeline.append((sum_steps, clock, records[best_id].cell, records[best_id].best))
        if step_budget_spent({r.trial_id: r.steps for r in records.values()},
                             opts.step_budget):
            # `sweep run --step-budget`: the whole sweep stops; running trials end where they are.
            for other in records.values():
                if trials[other.trial_id].status == "RUNNING" and other is not rec:
                    other.stopped = True
            rec.stopped = not last
            break
        if last or decision == TrialScheduler.STOP:
            rec.stopped = not last
            finish(trial)
            launch()
            trials.update({t.trial_id: t for t in ctrl.trials})
        else:
            heapq.heappush(events, (clock + curve.seconds[i + 1] - curve.seconds[i], order,
                                    tid, i + 1))
            order += 1
    return SweepTrace(list(records.values()), timeline, clock)
