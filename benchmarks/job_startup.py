"""What a trial's jobs cost before they train: the train job and the eval job of this checkout
beside another's (``--code DIR``, e.g. a ``git worktree`` of an older commit), alternating, in
one run.

Each round runs, one after the other, for each code: the train job (``sweep.odapi.worker
train``) for ``--steps`` steps of the demo's base config from scratch, then its eval job on
the checkpoints it wrote (the step-0 warm-up and the last step). Short jobs on purpose: what
is left is the fixed cost every trial pays (import, input pipeline, model build, tracing),
which on 2 CPU cores is most of a demo trial. Also reported: each job's total_loss at its last
step and mAP, so a cut that changes what is computed shows.

    .venv/bin/python benchmarks/job_startup.py --code /tmp/before          # 2 rounds
    .venv/bin/python benchmarks/job_startup.py --code /tmp/before --rounds 3 --out /tmp/x
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import REPO, demo_pipeline, fmt, header, out_dir, start_record, uptime, write_results


def _pipeline(work: Path, steps: int) -> Path:
    """The demo's base config with ``steps`` steps (its schedule's length too)."""
    text = demo_pipeline(work / "ws").read_text()
    text = re.sub(r"num_steps: \d+", f"num_steps: {steps}", text)
    text = re.sub(r"total_steps: \d+", f"total_steps: {steps}", text)
    out = work / f"pipeline_{steps}.config"
    out.write_text(text)
    return out


def _job(code: Path, job: str, pipeline: Path, model_dir: Path, steps: int,
         log: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "sweep.odapi.worker", job, "--pipeline", str(pipeline),
           "--model-dir", str(model_dir), "--threads", "1"]
    if job == "train":
        cmd += ["--checkpoint-every", str(steps), "--steps-per-iteration", "10", "--seed", "5"]
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=code).returncode
    if rc != 0:
        raise SystemExit(f"{job} job of {code} failed (exit {rc}): see {log}")
    return time.time() - t0


def _last(model_dir: Path) -> dict[str, Any]:
    """total_loss at the last step and the last evaluation's mAP, from the jobs' files."""
    sys.path.insert(0, str(REPO))
    from sweep.odapi import metrics

    m = metrics.read_trial(model_dir)
    train = m.train[max(m.train)] if m.train else {}
    ev = m.eval[max(m.eval)] if m.eval else {}
    warm = re.search(r"warm-up on \S+ in ([0-9.]+)s", (model_dir / "eval.log").read_text())
    return {"total_loss": train.get("Loss/total_loss"), "map": ev.get(metrics.MAP),
            "eval_warmup_s": float(warm.group(1)) if warm else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--code", type=Path, required=True, help="the other checkout (before)")
    p.add_argument("--steps", type=int, default=20, help="train steps per job [%(default)s]")
    p.add_argument("--rounds", type=int, default=2, help="[%(default)s]")
    p.add_argument("--out", type=Path, default=None, help="results folder [benchmarks/results]")
    a = p.parse_args(argv)
    if a.steps < 10 or a.steps % 10:
        p.error(f"--steps must be a positive multiple of 10, got {a.steps}")
    if a.rounds < 1:
        p.error(f"--rounds must be >= 1, got {a.rounds}")
    if not (a.code / "sweep" / "odapi" / "worker.py").is_file():
        p.error(f"--code {a.code}: no sweep/odapi/worker.py there (a checkout of this repo)")
    data = start_record(argv)
    codes = {"before": a.code.resolve(), "now": REPO}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in codes}
    with tempfile.TemporaryDirectory(prefix="job_startup-") as tmp:
        work = Path(tmp)
        pipeline = _pipeline(work, a.steps)
        for r in range(a.rounds):
            for name, code in codes.items():
                d = work / f"{name}{r}"
                d.mkdir()
                row = {"train_s": _job(code, "train", pipeline, d, a.steps, d / "train.log"),
                       "eval_s": _job(code, "eval", pipeline, d, a.steps, d / "eval.log")}
                row.update(_last(d))
                runs[name].append(row)
                print(f"round {r} {name}: train {row['train_s']:.1f} s, eval "
                      f"{row['eval_s']:.1f} s (warm-up {row['eval_warmup_s']} s)", flush=True)
    data.update(uptime_after=uptime(), steps=a.steps, rounds=a.rounds, runs=runs,
                codes={k: str(v) for k, v in codes.items()})
    med = {n: {k: statistics.median(r[k] for r in rows) for k in ("train_s", "eval_s")}
           for n, rows in runs.items()}
    data["median"] = med
    data["train_ratio"] = med["now"]["train_s"] / med["before"]["train_s"]
    data["eval_ratio"] = med["now"]["eval_s"] / med["before"]["eval_s"]
    md = header("Trial jobs' start-up: this code beside another", data)
    md += [f"{a.steps} train steps of the demo's base config (seed 5), then its eval job on "
           f"those checkpoints; {a.rounds} rounds, alternating; medians.", "",
           "| job | before s | now s | now / before |", "| --- | ---: | ---: | ---: |"]
    for k, label in (("train_s", "train job"), ("eval_s", "eval job")):
        md.append(f"| {label} | {med['before'][k]:.1f} | {med['now'][k]:.1f} | "
                  f"{med['now'][k] / med['before'][k]:.2f}x |")
    md += ["", "| run | train s | eval s | eval warm-up s | total_loss at the last step | mAP |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, rows in runs.items():
        for i, r in enumerate(rows):
            md.append(f"| {name} {i} | {r['train_s']:.1f} | {r['eval_s']:.1f} | "
                      f"{fmt(r['eval_warmup_s'], 1)} | {fmt(r['total_loss'], 4)} | "
                      f"{fmt(r['map'], 4)} |")
    write_results("job_startup", data, md, out_dir(a))
    print(json.dumps(med))
    return 0


if __name__ == "__main__":
    sys.exit(main())
