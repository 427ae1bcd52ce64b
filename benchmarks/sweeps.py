"""The demo-task sweeps that ``asha_vs_fifo.py`` and ``search_quality.py`` share, and what they
read from a finished sweep.

One sweep per (scheduler, sampler, seed, trials, eval-every): it is run once with `sweep run`
and reused by name afterwards (``benchmarks/work/{real,fake}/experiments/<name>``; the name
holds a fingerprint of the demo, so a changed demo gets new sweeps), so FIFO+TPE
serves both benchmarks. ``--fresh`` runs them again. Values are read through the project's own
rules: a trial's best and the objective from ``sweep.run.best``, trial folders through
``sweep.core.experiment``, event files through ``sweep.odapi.metrics``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _bench import DEMO_SPACE, WORK, demo_fingerprint, demo_pipeline, out_dir, run_sweep_cli, write_results

from sweep.core.experiment import FAILED, Experiment
from sweep.odapi import metrics
from sweep.report import report_data
from sweep.run import best


def add_options(p: argparse.ArgumentParser, *, trials: int = 6) -> None:
    p.add_argument("--seeds", type=int, default=3, help="sampler seeds 0..N-1 [%(default)s]")
    p.add_argument("--trials", type=int, default=trials, help="trials per sweep [%(default)s]")
    p.add_argument("--eval-every", type=int, default=50,
                   help="train steps between evaluations (ASHA's rungs; the same for every "
                        "sweep): 50 puts ASHA's rungs at 50, 100, 200, 400 of the demo's 600 "
                        "steps [%(default)s]")
    p.add_argument("--space", type=Path, default=DEMO_SPACE, help="search space [%(default)s]")
    p.add_argument("--fake", action="store_true",
                   help="run the sweeps with the stand-in worker (tests/fake_worker.py): "
                        "seconds, not hours; to test this script, its numbers mean nothing")
    p.add_argument("--work", type=Path, default=WORK,
                   help="where the sweeps' experiments are kept and reused [%(default)s]")
    p.add_argument("--fresh", action="store_true",
                   help="run the sweeps again even if a finished one of the same name exists")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder [benchmarks/results]")


def main_of(name: str, doc: str | None, run: Callable[[argparse.Namespace], dict[str, Any]],
            markdown: Callable[[dict[str, Any]], list[str]], argv: list[str] | None) -> int:
    """The command line both scripts share: options, run, ``results/<name>.{json,md}``."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p)
    a = p.parse_args(argv)
    if a.seeds < 1 or a.trials < 1 or a.eval_every < 0:
        p.error("--seeds and --trials must be >= 1, --eval-every >= 0")
    data = run(a)
    write_results(name, data, markdown(data), out_dir(a))
    return 0


def sweep_name(scheduler: str, sampler: str, seed: int, a: argparse.Namespace) -> str:
    """Names a sweep by what makes it: scheduler, sampler, trials, eval interval, the space and
    a fingerprint of the demo (a changed demo gets new sweeps), seed."""
    return (f"{scheduler}-{sampler}-n{a.trials}-e{a.eval_every}-{Path(a.space).stem}-"
            f"{demo_fingerprint(Path(a.space))}-s{seed}")


def ensure_sweep(scheduler: str, sampler: str, seed: int, a: argparse.Namespace) -> Experiment:
    """The finished sweep of that kind: reused when there, else run now with `sweep run`."""
    root = Path(a.work).resolve() / ("fake" if a.fake else "real")
    storage = root / "experiments"
    name = sweep_name(scheduler, sampler, seed, a)
    exp = Experiment(storage / name)
    if exp.exists() and exp.settings().get("finished") and not a.fresh:
        print(f"  reusing {exp.root}", flush=True)
        return exp
    pipeline = demo_pipeline(root / f"workspace-{demo_fingerprint(Path(a.space))}", fake=a.fake)
    print(f"  sweep {name} ({a.trials} trials) ...", flush=True)
    code, wall = run_sweep_cli(
        ["--space", str(Path(a.space).resolve()), "--pipeline", str(pipeline), "--name", name,
         "--storage", str(storage), "--num-trials", str(a.trials), "--scheduler", scheduler,
         "--sampler", sampler, "--seed", str(seed), "--eval-every", str(a.eval_every),
         "--no-dashboard", "--no-report", "--overwrite"],
        cwd=root, fake=a.fake, log=root / "logs" / f"{name}.log")
    if code not in (0, 1):  # 1: finished with some failed trials, which the numbers show
        raise SystemExit(f"sweep {name} ended with exit code {code}; see {root / 'logs'}")
    print(f"  sweep {name}: {wall / 60:.1f} min", flush=True)
    return exp


@dataclass
class Trace:
    """A finished sweep as a timeline: every evaluation of a non-failed trial, and every
    trial's train progress, on one clock."""

    name: str
    tag: str
    mode: str
    t0: float  # the first trial's start
    evals: list[tuple[float, str, int, float]] = field(default_factory=list)  # time, trial, step, value
    train: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # trial -> (time, step)
    total_steps: int = 0  # train steps of all trials (status.json's trained_steps)
    wall_s: float | None = None  # the sweep's tuning time (experiment.json)
    best: float | None = None  # sweep.run.best.experiment_best
    trial_values: list[float] = field(default_factory=list)  # each non-failed trial's best
    base_value: float | None = None  # the base config's trial (report_data's base_name)


def trace(exp: Experiment) -> Trace:
    settings = exp.settings()
    tag, mode = best.objective(settings)
    trials = exp.trials()
    starts = [float(t.status()["started_at"]) for t in trials if t.status().get("started_at")]
    tr = Trace(exp.name, tag, mode, min(starts) if starts else 0.0,
               wall_s=settings.get("wall_time_s"))
    for t in trials:
        st = t.status()
        tm = metrics.read_trial(t.path)
        tr.train[t.name] = sorted((s.wall_time, s.step) for s in metrics.read_scalars(
            t.path / "train", [metrics.TOTAL_LOSS]))
        tr.total_steps += int(st.get("trained_steps") or tm.last_train_step or 0)
        if st.get("state") == FAILED:
            continue  # never a candidate (sweep.run.best)
        when = {int(r["step"]): float(r["time"]) for r in t.evaluated() if "time" in r}
        for step in sorted(tm.eval):
            value = best.reported(tm, tag, step)
            if step > 0 and value is not None and step in when:
                tr.evals.append((when[step], t.name, step, value))
    tr.evals.sort()
    # Each trial's best and which trial ran the base config: the report's reading of them.
    g = report_data.gather(exp)
    ok = g.df[(g.df["state"] != FAILED) & g.df["objective"].notna()]
    tr.trial_values = [float(v) for v in ok["objective"]]
    base = ok[ok["trial"] == g.base_name()]
    tr.base_value = float(base["objective"].iloc[0]) if not base.empty else None
    eb = best.experiment_best(exp)
    tr.best = eb.value if eb else None
    return tr


def steps_at(tr: Trace, when: float) -> int:
    """Train steps all trials had done by ``when``."""
    return sum(max((s for w, s in rows if w <= when), default=0) for rows in tr.train.values())


def until(tr: Trace, target: float, tolerance: float = 0.01) -> dict[str, Any] | None:
    """Train steps and wall time spent until the sweep's best so far is within ``tolerance`` of
    ``target`` (None if it never got there)."""
    slack = tolerance + 1e-9  # 0.4 - 0.1 is 0.30000000000000004 in floats
    so_far: float | None = None
    for when, trial, step, value in tr.evals:
        if best.better(value, so_far, tr.mode):
            so_far = value
        if so_far is not None and (so_far >= target - slack if tr.mode == "max"
                                   else so_far <= target + slack):
            return {"steps": steps_at(tr, when), "wall_s": when - tr.t0, "trial": trial,
                    "step": step, "value": so_far}
    return None


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None, "spread": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "spread": max(values) - min(values)}
