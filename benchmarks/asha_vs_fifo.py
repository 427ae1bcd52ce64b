"""Early stopping: ASHA vs FIFO on the demo task, same space, seeds, trial count and sampler (TPE).

    flock /work/tf.lock .venv/bin/python benchmarks/asha_vs_fifo.py [--seeds 3] [--trials 8]
        [--eval-every 10] [--fake] [--fresh]

For each seed, one FIFO and one ASHA sweep (`sweep run --scheduler fifo|asha --sampler tpe
--seed S`, reused by ``search_quality.py``). Measured per seed: train steps and wall time each
spent until its best mAP so far was within 0.01 of FIFO's final best, and the ratio FIFO/ASHA
of those train steps (goal: >= 3x). Writes ``results/asha_vs_fifo.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from _bench import fmt, header, start_record, uptime
from sweeps import ensure_sweep, main_of, trace, until

TOLERANCE = 0.01


def compare(fifo: Any, asha: Any) -> dict[str, Any]:
    """One seed: each sweep's cost to come within TOLERANCE of FIFO's final best."""
    row: dict[str, Any] = {"fifo_best": fifo.best, "asha_best": asha.best,
                           "fifo_total_steps": fifo.total_steps, "asha_total_steps": asha.total_steps,
                           "fifo_wall_s": fifo.wall_s, "asha_wall_s": asha.wall_s}
    if fifo.best is None:
        return {**row, "note": "FIFO has no evaluated trial"}
    f, a = until(fifo, fifo.best, TOLERANCE), until(asha, fifo.best, TOLERANCE)
    row.update(fifo_to_target=f, asha_to_target=a)
    if f and a and a["steps"]:
        row["steps_ratio"] = f["steps"] / a["steps"]
        row["wall_ratio"] = f["wall_s"] / a["wall_s"] if a["wall_s"] > 0 else None
    return row


def run(a: argparse.Namespace) -> dict[str, Any]:
    data = start_record()
    data.update(seeds=a.seeds, trials=a.trials, eval_every=a.eval_every, fake=a.fake,
                space=str(a.space), tolerance=TOLERANCE, per_seed={})
    for seed in range(a.seeds):
        print(f"seed {seed}:", flush=True)
        fifo = trace(ensure_sweep("fifo", "tpe", seed, a))
        asha = trace(ensure_sweep("asha", "tpe", seed, a))
        data["per_seed"][str(seed)] = {**compare(fifo, asha), "fifo": fifo.name, "asha": asha.name}
    ratios = [r["steps_ratio"] for r in data["per_seed"].values() if r.get("steps_ratio")]
    walls = [r["wall_ratio"] for r in data["per_seed"].values() if r.get("wall_ratio")]
    data["steps_ratio_median"] = statistics.median(ratios) if ratios else None
    data["wall_ratio_median"] = statistics.median(walls) if walls else None
    data["seeds_reached"] = len(ratios)
    data["uptime_after"] = uptime()
    return data


def markdown(data: dict[str, Any]) -> list[str]:
    md = header("ASHA vs FIFO (early stopping)", data)
    md += [f"{data['trials']} trials per sweep, TPE, eval every {data['eval_every']} steps, "
           f"space `{data['space']}`. Cost = train steps (all trials) and wall time until the "
           f"sweep's best mAP so far is within {data['tolerance']} of FIFO's final best.", "",
           "| seed | FIFO best | ASHA best | FIFO steps to target | ASHA steps to target | "
           "ratio | FIFO wall to target s | ASHA wall to target s | total steps FIFO / ASHA |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for seed, r in data["per_seed"].items():
        f, a = r.get("fifo_to_target") or {}, r.get("asha_to_target") or {}
        md.append(f"| {seed} | {fmt(r['fifo_best'], 4)} | {fmt(r['asha_best'], 4)} | "
                  f"{fmt(f.get('steps'))} | {fmt(a.get('steps'), 0) if a else 'not reached'} | "
                  f"{fmt(r.get('steps_ratio'))} | {fmt(f.get('wall_s'), 0)} | "
                  f"{fmt(a.get('wall_s'), 0)} | {r['fifo_total_steps']} / {r['asha_total_steps']} |")
    ratio = data.get("steps_ratio_median")
    md += ["", f"Median FIFO/ASHA train steps to target: **{fmt(ratio)}x** over "
               f"{data['seeds_reached']} of {data['seeds']} seeds where ASHA reached it "
               f"(goal >= 3x: {'met' if ratio and ratio >= 3 else 'not met'}); wall time "
               f"ratio {fmt(data.get('wall_ratio_median'))}x."]
    return md


def main(argv: list[str] | None = None) -> int:
    return main_of("asha_vs_fifo", __doc__, run, markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
