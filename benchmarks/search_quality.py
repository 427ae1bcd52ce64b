"""Search: TPE vs random vs the base config on the demo task, at an equal train-step budget.

    flock /work/tf.lock .venv/bin/python benchmarks/search_quality.py [--seeds 3] [--trials 8]
        [--eval-every 10] [--fake] [--fresh]

For each seed, one TPE and one random sweep with FIFO (every trial trains its `num_steps`, so
both spend trials x num_steps train steps; the totals are checked and shown). The FIFO+TPE
sweeps are the ones ``asha_vs_fifo.py`` runs (reused when already there). The base config is
the `base` point every sweep runs first. Reported over seeds: best mAP reached, its median and
spread, and each sweep's median trial. Writes ``results/search_quality.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from _bench import fmt, header, start_record, uptime
from sweeps import ensure_sweep, main_of, spread, trace

SAMPLERS = ("tpe", "random")


def run(a: argparse.Namespace) -> dict[str, Any]:
    data = start_record()
    data.update(seeds=a.seeds, trials=a.trials, eval_every=a.eval_every, fake=a.fake,
                space=str(a.space), per_seed={})
    for seed in range(a.seeds):
        print(f"seed {seed}:", flush=True)
        row: dict[str, Any] = {}
        for sampler in SAMPLERS:
            tr = trace(ensure_sweep("fifo", sampler, seed, a))
            row[sampler] = {"sweep": tr.name, "best": tr.best, "total_steps": tr.total_steps,
                            "median_trial": (statistics.median(tr.trial_values)
                                             if tr.trial_values else None),
                            "base": tr.base_value, "wall_s": tr.wall_s}
        data["per_seed"][str(seed)] = row
    rows = data["per_seed"].values()
    for sampler in SAMPLERS:
        data[sampler] = spread([r[sampler]["best"] for r in rows if r[sampler]["best"] is not None])
    # The base config ran in every sweep: all its runs (training noise included).
    data["base"] = spread([r[s]["base"] for r in rows for s in SAMPLERS if r[s]["base"] is not None])
    steps = {s: sorted({r[s]["total_steps"] for r in rows}) for s in SAMPLERS}
    data["train_steps_per_sweep"] = steps
    data["equal_budget"] = len({x for v in steps.values() for x in v}) == 1
    t, r = data["tpe"]["median"], data["random"]["median"]
    data["tpe_minus_random"] = t - r if t is not None and r is not None else None
    data["uptime_after"] = uptime()
    return data


def verdict(data: dict[str, Any]) -> str:
    d = data.get("tpe_minus_random")
    if d is None:
        return "No comparison: a sweep had no evaluated trial."
    width = max(data["tpe"]["spread"] or 0.0, data["random"]["spread"] or 0.0)
    if d <= 0:
        return (f"**TPE does not beat random search at this budget** (median best mAP "
                f"{d:+.3f}).")
    if d <= width:
        return (f"TPE's median best mAP is {d:+.3f} above random's, within the spread across "
                f"seeds ({width:.3f}): **not a clear win for TPE at this budget**.")
    return f"TPE beats random search by {d:+.3f} median best mAP, more than the seed spread."


def markdown(data: dict[str, Any]) -> list[str]:
    md = header("Search quality: TPE vs random vs the base config", data)
    md += [f"{data['trials']} trials per sweep, FIFO, eval every {data['eval_every']} steps, "
           f"space `{data['space']}`; train steps per sweep: "
           + ", ".join(f"{s} {v}" for s, v in data["train_steps_per_sweep"].items())
           + (" (equal)" if data["equal_budget"] else " (**not equal**: a trial failed?)"), "",
           "| seed | TPE best | random best | TPE median trial | random median trial | base |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for seed, r in data["per_seed"].items():
        md.append(f"| {seed} | {fmt(r['tpe']['best'], 4)} | {fmt(r['random']['best'], 4)} | "
                  f"{fmt(r['tpe']['median_trial'], 4)} | {fmt(r['random']['median_trial'], 4)} | "
                  f"{fmt(r['tpe']['base'], 4)}, {fmt(r['random']['base'], 4)} |")
    md += ["", "| over seeds | median | min | max | spread |", "| --- | ---: | ---: | ---: | ---: |"]
    for key, label in (("tpe", "TPE best"), ("random", "random best"), ("base", "base config")):
        s = data[key]
        md.append(f"| {label} | {fmt(s['median'], 4)} | {fmt(s['min'], 4)} | {fmt(s['max'], 4)} | "
                  f"{fmt(s['spread'], 4)} |")
    md += ["", verdict(data)]
    return md


def main(argv: list[str] | None = None) -> int:
    return main_of("search_quality", __doc__, run, markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
