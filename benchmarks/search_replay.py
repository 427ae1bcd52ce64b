"""Which sampler and scheduler find the better detector for the same train steps: the sweep's
own sampler and scheduler replayed many times on a recorded table of real learning curves
(issue 24; ``replay.py`` is the simulator, ``record_table.py`` records the table).

    .venv/bin/python benchmarks/search_replay.py [--table benchmarks/data/demo_tiny_table]
        [--space benchmarks/data/demo_tiny_table.yaml | search_spaces/demo_tiny.yaml]
        [--samplers random,qmc,tpe,cmaes] [--schedulers fifo,asha,median]
        [--seeds 50] [--budgets 8,16,32] [--name search_replay] [--out DIR]

The table's space (its cells, exact draws) is the default; ``--space search_spaces/demo_tiny.
yaml`` samples the continuous demo space and plays each draw's nearest cell (for samplers that
need continuous parameters, such as CMA-ES). For every (sampler, scheduler, budget) and sweep
seeds 0..S-1, one replayed ``sweep run --num-trials N`` with the sweep's defaults otherwise
(2 trials at once); its known point (the base config) runs first, as in ``sweep run``. A
replayed trial reports where that ``sweep run`` would evaluate it (``--eval-every``, by default
sweep run's: a quarter of num_steps under asha and median, the end only under fifo), not at
every evaluation the table recorded.

Per pair and budget, over seeds:
(a) ``true``: the true quality of the config the sweep recommends (the trial with the best
    reported mAP, ``sweep.run.best``'s rule): the table's mean over repeats of that cell's final
    mAP, not the run the sweep saw; at the end of the sweep, i.e. at N x max_steps train steps
    (FIFO spends them all; a scheduler that stops trials has spent fewer by then and is not
    given more trials). Mean and a 95% bootstrap interval of the mean.
(b) ``steps_to_target``: train steps until the recommended config's true quality is within
    0.01 mAP of random+FIFO's median final true quality at the same budget (median over seeds;
    a seed that never gets there counts as never, and how many did is shown).
(c) ``curse``: reported best minus the true quality of what it recommends (winner's curse).
A plot of mean true quality against train steps per pair goes to ``<out>/<name>_<N>.png``.
A table with cells missing (a partial recording) is replayed on the cells it has (a draw of
a missing cell plays the nearest recorded one), and a table of one repeat takes each cell's
one run for its true quality; the output says so, and by default their results go to
``results/partial/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# This checkout's sweep package, not an installed one: the replay is of this code.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _bench import REPO, RESULTS, fmt, header, start_record, uptime, write_results  # noqa: E402
from replay import (  # noqa: E402
    CellIndex,
    Options,
    SweepTrace,
    Table,
    base_points,
    load_table,
    settings_for,
    simulate,
)

TABLE = REPO / "benchmarks" / "data" / "demo_tiny_table"
TABLE_SPACE = REPO / "benchmarks" / "data" / "demo_tiny_table.yaml"
SAMPLERS = ("random", "qmc", "tpe", "cmaes")
SCHEDULERS = ("fifo", "asha", "median")
BUDGETS = (8, 16, 32)
WITHIN = 0.01  # (b): "as good as" means within this much mAP of the target
HEADLINE_BUDGET = 16


def defaults() -> tuple[str, str]:
    """`sweep run`'s default sampler and scheduler (from SweepSettings, the one place)."""
    from sweep.run.settings import SweepSettings

    s = SweepSettings(name="-", space=Path("-"), pipeline=Path("-"))
    return s.sampler, s.scheduler


def mean_ci(xs: list[float], *, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean of ``xs`` and the 2.5th-97.5th percentiles of its bootstrap resamples."""
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(xs, k=len(xs))) for _ in range(resamples))
    return {"mean": statistics.fmean(xs), "lo": means[int(0.025 * resamples)],
            "hi": means[int(0.975 * resamples) - 1], "n": len(xs)}


def diff_ci(a: list[float], b: list[float], *, resamples: int = 2000, seed: int = 0
            ) -> dict[str, Any]:
    """mean(a) - mean(b) with a 95% bootstrap interval (a and b resampled independently)."""
    rng = random.Random(seed)
    if not a or not b:
        return {"mean": None, "lo": None, "hi": None}
    d = sorted(statistics.fmean(rng.choices(a, k=len(a))) - statistics.fmean(rng.choices(b, k=len(b)))
               for _ in range(resamples))
    return {"mean": statistics.fmean(a) - statistics.fmean(b), "lo": d[int(0.025 * resamples)],
            "hi": d[int(0.975 * resamples) - 1]}


def steps_to(trace: SweepTrace, table: Table, target: float) -> int | None:
    """Train steps spent when the recommendation's true quality first reaches ``target``."""
    for steps, _, cell, _ in trace.timeline:
        if cell is not None and table.true_quality(cell) >= target:
            return steps
    return None


def quality_at(trace: SweepTrace, table: Table, grid: list[int]) -> list[float | None]:
    """The recommendation's true quality once ``s`` train steps are spent, for s in ``grid``
    (after the sweep ends, its final recommendation)."""
    out: list[float | None] = []
    i, current = 0, None
    for s in grid:
        while i < len(trace.timeline) and trace.timeline[i][0] <= s:
            cell = trace.timeline[i][2]
            current = table.true_quality(cell) if cell else None
            i += 1
        out.append(current)
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    from sweep.search.space import load_space

    data = start_record()
    table = load_table(a.table)
    space = load_space(a.space)
    index = CellIndex(table, space)
    points = base_points(space, table)
    repeats = sorted({k for _, k in table.curves})
    default_sampler, default_scheduler = defaults()
    qualities = {c: table.true_quality(c) for c in table.configs}
    base_cell = index.nearest(points[0]) if points else None
    data.update(
        table=str(a.table), space=str(a.space), seeds=a.seeds, budgets=a.budgets,
        samplers=a.samplers, schedulers=a.schedulers, max_concurrent=a.max_concurrent,
        eval_every=a.eval_every, default=[default_sampler, default_scheduler],
        equal_steps=a.equal_steps,
        table_configs=len(table.configs), table_repeats=len(repeats),
        table_curves=len(table.curves), table_missing=len(table.missing),
        partial=is_partial(table), max_steps=table.max_steps,
        table_line=(f"{len(table.configs)} configs x {len(repeats)} seeds, {table.max_steps} "
                    f"steps, eval every {_eval_every(table)}"
                    + (f" (PARTIAL: {len(table.missing)} cells missing)" if table.missing else "")),
        cells={"best": _cell(table, max(qualities, key=qualities.get)),
               "worst": _cell(table, min(qualities, key=qualities.get)),
               "base": _cell(table, base_cell) if base_cell else None,
               "seed_spread_median": _seed_spread(table)},
        pairs={}, timing={}, early_vs_final=early_vs_final(table))
    # One sweep first, untimed: the imports (Ray's scheduler classes, Optuna, SciPy for QMC)
    # are paid once per process, not by the first pair timed.
    t0 = time.time()
    for sampler_spec in a.samplers:
        sampler, sampler_kw = variant(sampler_spec)
        simulate(table, space, Options(sampler, "fifo", 2, eval_every=a.eval_every,
                                       **sampler_kw), index=index, points=points)
    data["warmup_s"] = time.time() - t0
    grid_step = max(a.eval_every, table.max_steps // 4)
    for n in a.budgets:
        grid = list(range(0, n * table.max_steps + 1, grid_step))
        traces: dict[str, list[SweepTrace]] = {}
        for sampler_spec in a.samplers:
            for sched_spec in a.schedulers:
                key = f"{sampler_spec}+{sched_spec}"
                sampler, sampler_kw = variant(sampler_spec)
                sched, sched_kw = variant(sched_spec)
                opts = Options(sampler, sched, n, max_concurrent=a.max_concurrent,
                               eval_every=a.eval_every, **sampler_kw, **sched_kw)
                if a.equal_steps:
                    opts = equal_steps(opts, table.max_steps)
                t0 = time.time()
                traces[key] = [simulate(table, space, dataclasses.replace(opts, seed=s),
                                        index=index, points=points) for s in range(a.seeds)]
                secs = time.time() - t0
                data["timing"][f"{key}@{n}"] = secs
                print(f"  {n} trials {key}: {a.seeds} sweeps in {secs:.1f} s", flush=True)
        finals = {k: [table.true_quality(tr.recommended.cell) for tr in ts if tr.recommended]
                  for k, ts in traces.items()}
        ref = finals.get("random+fifo") or next(iter(finals.values()))
        target = statistics.median(ref) - WITHIN
        rows = {}
        for key, ts in traces.items():
            reach = [steps_to(tr, table, target) for tr in ts]
            got = sorted(r for r in reach if r is not None)
            med = (sorted(r if r is not None else math.inf for r in reach)[len(reach) // 2]
                   if reach else math.inf)
            curse = [tr.recommended.best - table.true_quality(tr.recommended.cell)
                     for tr in ts if tr.recommended and tr.recommended.best is not None]
            curve = [quality_at(tr, table, grid) for tr in ts]
            rows[key] = {
                "true": mean_ci(finals[key]),
                "steps": statistics.fmean(tr.total_steps for tr in ts),
                "steps_to_target_median": None if math.isinf(med) else med,
                "reached": len(got), "curse": mean_ci(curse),
                "curve": [statistics.fmean(v) if (v := [c[i] for c in curve if c[i] is not None])
                          else None for i in range(len(grid))],
                "trials_stopped": statistics.fmean(sum(t.stopped for t in tr.trials) for tr in ts),
                "trials": statistics.fmean(len(tr.trials) for tr in ts),
                "finals": finals[key]}
        data["pairs"][str(n)] = {"target": target + WITHIN, "grid": grid, "rows": rows}
        _plot(rows, grid, n, a)
    _headlines(data, default_sampler, default_scheduler)
    data["uptime_after"] = uptime()
    return data


def equal_steps(opts: Options, max_steps: int) -> Options:
    """``--equal-steps``: the budget of N trials as train steps, `sweep run --step-budget
    N*max_steps --num-trials M`, with M as many trials as fit if each ran only to the
    scheduler's first decision. FIFO runs its N trials as before; a scheduler that stops
    trials early spends the steps it saved on more trials (the same GPU hours, not the same
    trial count)."""
    from sweep.run.schedulers import decision_steps

    every = settings_for(opts, max_steps=max_steps).eval_every
    first = (decision_steps(opts.scheduler, max_steps, every) or [max_steps])[0]
    if opts.grace_period:
        first = max(first, min(opts.grace_period, max_steps))
    budget = opts.num_trials * max_steps
    return dataclasses.replace(opts, num_trials=-(-budget // first), step_budget=budget)


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def early_vs_final(table: Table) -> dict[str, float | None]:
    """Spearman correlation, over the recorded curves, of the mAP a curve shows at step s with
    its cell's true quality: how much a rung at s can know (ASHA's first rung is at
    --eval-every). Near 0 or below at a step means a rung there stops future winners."""
    steps = sorted({s for c in table.curves.values() for s in c.steps})
    out: dict[str, float | None] = {}
    for s in steps:
        pairs = [(c.values["mAP"][c.steps.index(s)], table.true_quality(cid))
                 for (cid, _), c in table.curves.items()
                 if s in c.steps and c.values["mAP"][c.steps.index(s)] is not None]
        if len(pairs) < 3:
            out[str(s)] = None
            continue
        ra, rb = _ranks([p[0] for p in pairs]), _ranks([p[1] for p in pairs])
        out[str(s)] = (statistics.correlation(ra, rb)
                       if len(set(ra)) > 1 and len(set(rb)) > 1 else None)
    return out


VARIANT_KEYS = {"g": "grace_period", "r": "reduction_factor", "b": "brackets",
                "s": "tpe_startup"}


def variant(spec: str) -> tuple[str, dict[str, int]]:
    """A sampler or scheduler with what-ifs that `sweep run` does not offer: ``asha@g150``
    (first rung at step 150), ``asha@r3`` (reduction factor 3), ``asha@b2`` (2 brackets),
    ``tpe@s8`` (8 start-up trials), combined as ``asha@g150r3``; ``asha@150`` is ``asha@g150``.

    >>> variant("asha@g150r3")
    ('asha', {'grace_period': 150, 'reduction_factor': 3})
    >>> variant("tpe@s8"), variant("asha@200"), variant("random")
    (('tpe', {'tpe_startup': 8}), ('asha', {'grace_period': 200}), ('random', {}))
    """
    import re

    name, _, rest = spec.partition("@")
    if rest.isdigit():
        rest = f"g{rest}"
    parts = re.findall(r"([a-z])(\d+)", rest)
    if "".join(k + v for k, v in parts) != rest or any(k not in VARIANT_KEYS for k, _ in parts):
        raise SystemExit(f"{spec!r}: a what-if is name@ followed by g<steps>, r<factor>, "
                         "b<brackets> or s<start-up trials>, e.g. asha@g150r3 or tpe@s8")
    return name, {VARIANT_KEYS[k]: int(v) for k, v in parts}


def is_partial(table: Table) -> bool:
    """Cells missing, or one repeat only (a cell's mean over repeats is then its one run)."""
    return bool(table.missing) or len({k for _, k in table.curves}) < 2


def _evaluations(eval_every: int) -> str:
    return (f"trials evaluated every {eval_every} steps" if eval_every else
            "trials evaluated as `sweep run` does by default (a quarter of num_steps under "
            "asha and median, the end only under fifo)")


def _eval_every(table: Table) -> int:
    steps = next(iter(table.curves.values())).steps
    return min((b - a for a, b in zip(steps, steps[1:], strict=False)), default=steps[0])


def _cell(table: Table, cid: str) -> dict[str, Any]:
    finals = [table.curves[(cid, k)].values["mAP"][-1] for k in table.repeats(cid)]
    return {"config": cid, "params": table.configs[cid], "true_mAP": table.true_quality(cid),
            "finals": finals}


def _seed_spread(table: Table) -> float | None:
    spreads = []
    for cid in table.configs:
        finals = [table.curves[(cid, k)].values["mAP"][-1] for k in table.repeats(cid)]
        finals = [f for f in finals if f is not None]
        if len(finals) > 1:
            spreads.append(max(finals) - min(finals))
    return statistics.median(spreads) if spreads else None


def _headlines(data: dict[str, Any], sampler: str, scheduler: str) -> None:
    """The summary's numbers, at 16 trials (or the nearest budget run)."""
    budgets = sorted(int(b) for b in data["pairs"])
    n = min(budgets, key=lambda b: abs(b - HEADLINE_BUDGET))
    rows = data["pairs"][str(n)]["rows"]
    data["headline_budget"] = n
    fifo, asha = rows.get(f"{sampler}+fifo"), rows.get(f"{sampler}+asha")
    ratio = None
    if fifo and asha and fifo["steps_to_target_median"] and asha["steps_to_target_median"]:
        ratio = fifo["steps_to_target_median"] / asha["steps_to_target_median"]
    data["asha_vs_fifo_train_steps"] = ratio
    dflt, rnd = rows.get(f"{sampler}+{scheduler}"), rows.get("random+fifo")
    d = diff_ci(dflt["finals"], rnd["finals"]) if dflt and rnd else {"mean": None}
    data["default_vs_random"] = d
    data["default_vs_random_best_map"] = d["mean"]
    data["replay_seeds"] = data["seeds"]


def _plot(rows: dict[str, Any], grid: list[int], n: int, a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless, as the report's plots
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"fifo": "-", "asha": "--", "median": ":"}
    for key, r in rows.items():
        sched = key.split("+")[1].split("@")[0]
        ax.plot(grid, [math.nan if v is None else v for v in r["curve"]],
                styles.get(sched, "-."), label=key)
    ax.set_xlabel("train steps spent by the sweep")
    ax.set_ylabel("true mAP of the recommended config (table mean)")
    ax.set_title(f"{n} trials, mean over {a.seeds} replayed sweeps")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    out = _out(a)
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / f"{a.name}_{n}.png", dpi=90)
    plt.close(fig)


def _out(a: argparse.Namespace) -> Path:
    return a.out or (RESULTS / "partial" if a.partial else RESULTS)


def verdict(data: dict[str, Any]) -> list[str]:
    out = []
    r = data.get("asha_vs_fifo_train_steps")
    out.append(f"- ASHA vs FIFO, {data['default'][0]} sampler, {data['headline_budget']} trials: "
               + (f"{r:.2f}x fewer train steps to reach random+FIFO's median" if r
                  else "no ratio (a side never reached the target in most seeds)")
               + (" (goal >= 3x: met)" if r and r >= 3 else " (goal >= 3x: **missed**)"))
    d = data.get("default_vs_random") or {}
    if d.get("mean") is not None:
        above = d["lo"] > 0
        out.append(f"- default ({'+'.join(data['default'])}) minus random+FIFO, true mAP: "
                   f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] "
                   + ("(goal: interval above 0: met)" if above
                      else "(goal: interval above 0: **missed**)"))
    return out


def markdown(data: dict[str, Any]) -> list[str]:
    md = header("Search replay: samplers x schedulers on a recorded table", data)
    if data["partial"]:
        why = (f"{data['table_missing']} of the space's cells have no recorded curve; draws of "
               "those play the nearest recorded cell" if data["table_missing"] else
               f"{data['table_repeats']} repeat: a cell's true quality is its one run, so a "
               "lucky run counts as the truth")
        md += [f"**PARTIAL TABLE: {why}. These numbers try the benchmark; they do not rank "
               "samplers.**", ""]
    c = data["cells"]
    md += [f"- table: {data['table_line']} (`{data['table']}`); space `{data['space']}`",
           f"- cells (true mAP = mean over repeats of the final mAP): best "
           f"{fmt(c['best']['true_mAP'], 3)} ({c['best']['config']}), base config's "
           f"{'nearest recorded ' if data['partial'] else ''}cell "
           f"{fmt(c['base']['true_mAP'], 3) if c['base'] else '-'}, worst "
           f"{fmt(c['worst']['true_mAP'], 3)}; median seed-to-seed spread of a cell's final "
           f"mAP {fmt(c['seed_spread_median'], 3)}",
           f"- {data['seeds']} seeds per pair, {data['max_concurrent']} trials at once, "
           f"{_evaluations(data['eval_every'])}; default pair {'+'.join(data['default'])}", ""]
    order = [f"{sa}+{sc}" for sa in data["samplers"] for sc in data["schedulers"]]
    for n in sorted(data["pairs"], key=int):  # a JSON round trip sorts keys as strings
        p = data["pairs"][n]
        title = (f"{n} trials' train steps ({int(n) * data['max_steps']}: `--step-budget`; "
                 "early stopping runs more trials)" if data.get("equal_steps") else f"{n} trials")
        md += [f"## {title} (target for (b): {p['target']:.3f} - {WITHIN})", "",
               "| pair | (a) true mAP [95%] | train steps | (b) steps to target (reached) | "
               "(c) curse [95%] | trials/sweep | stopped/sweep |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for key in sorted(p["rows"], key=lambda k: order.index(k) if k in order else len(order)):
            r = p["rows"][key]
            t, cu = r["true"], r["curse"]
            md.append(f"| {key} | {fmt(t['mean'], 3)} [{fmt(t['lo'], 3)}, {fmt(t['hi'], 3)}] | "
                      f"{r['steps']:.0f} | {fmt(r['steps_to_target_median'])} "
                      f"({r['reached']}/{data['seeds']}) | {fmt(cu['mean'], 3)} "
                      f"[{fmt(cu['lo'], 3)}, {fmt(cu['hi'], 3)}] | "
                      f"{r.get('trials', float(n)):.1f} | {r['trials_stopped']:.1f} |")
        md += ["", f"![true quality vs train steps, {n} trials]({data.get('name', 'search_replay')}"
                   f"_{n}.png)", ""]
    ev = {k: v for k, v in sorted((data.get("early_vs_final") or {}).items(),
                                  key=lambda kv: int(kv[0]))}
    if ev:
        md += ["How well a curve's mAP at step s ranks its cell's true quality (Spearman over the "
               "recorded curves; ASHA's rungs sit at --eval-every x 1, 2, 4, 8):", "",
               "| step | " + " | ".join(ev) + " |", "| --- |" + " ---: |" * len(ev),
               "| rank corr. | " + " | ".join(fmt(v, 2) for v in ev.values()) + " |", ""]
    slowest = max(data["timing"].items(), key=lambda kv: kv[1]) if data["timing"] else None
    if slowest:
        md += [f"- replay time: slowest pair {slowest[0]}: {data['seeds']} sweeps in "
               f"{slowest[1]:.1f} s", ""]
    md += verdict(data)
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=TABLE, help="[%(default)s]")
    p.add_argument("--space", type=Path, default=TABLE_SPACE, help="[%(default)s]")
    p.add_argument("--samplers", default=",".join(SAMPLERS),
                   help="`tpe@s8` tries 8 TPE start-up trials [%(default)s]")
    p.add_argument("--schedulers", default=",".join(SCHEDULERS),
                   help="what-ifs that `sweep run` does not offer: `asha@g150` ASHA's first "
                        "rung (or the median rule's start) at step 150, `asha@r3` reduction "
                        "factor 3, `asha@b2` 2 brackets, combined as `asha@g150r3` "
                        "[%(default)s]")
    p.add_argument("--seeds", type=int, default=50, help="[%(default)s]")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="[%(default)s]")
    p.add_argument("--max-concurrent", type=int, default=2, help="[%(default)s]")
    p.add_argument("--eval-every", type=int, default=0,
                   help="evaluate every N steps, as `sweep run --eval-every N`; 0 is sweep "
                        "run's default (a quarter of num_steps under asha and median, the end "
                        "only under fifo); a step the table lacks plays the next recorded one "
                        "[%(default)s]")
    p.add_argument("--equal-steps", action="store_true",
                   help="give every pair the same train steps (N x num_steps, `sweep run "
                        "--step-budget`) instead of N trials: early stopping then buys more "
                        "trials, not an earlier end")
    p.add_argument("--name", default="search_replay", help="results file name [%(default)s]")
    p.add_argument("--out", type=Path, default=None,
                   help="[benchmarks/results, or results/partial for a partial table]")
    a = p.parse_args(argv)
    a.samplers = [s for s in a.samplers.split(",") if s]
    a.schedulers = [s for s in a.schedulers.split(",") if s]
    a.budgets = [int(b) for b in a.budgets.split(",") if b]
    if a.seeds < 1 or not a.budgets or min(a.budgets) < 1:
        p.error("--seeds and every budget must be >= 1")
    if a.eval_every < 0:
        p.error("--eval-every must be >= 0 (0: sweep run's default)")
    a.partial = is_partial(load_table(a.table))
    data = run(a)
    data["name"] = a.name
    write_results(a.name, data, markdown(data), _out(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
