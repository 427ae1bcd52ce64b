"""Control-plane overhead: the sweep's own path vs plain Ray Tune + OptunaSearch, per trial.

    .venv/bin/python benchmarks/control_plane.py [--trials 100 1000] [--concurrency 2]
        [--steps 10] [--out DIR]

Side by side on one local Ray (started once, ``--concurrency`` CPUs, one CPU per trial):

- sweep: ``sweep run --scheduler fifo --sampler tpe --no-report`` in this process (space ->
  Optuna via Ray Tune -> the trial's two worker processes -> results -> the SQLite study), with
  the fast stand-in worker (tests/fake_worker.py: no TensorFlow; it sleeps 0.05 s per train
  iteration, which is subtracted), on the demo space with ``num_steps`` fixed to ``--steps``;
- plain: ``tune.Tuner`` of a no-op function trainable (one ``tune.report``) with
  ``ray.tune.search.optuna.OptunaSearch`` on the same define-by-run space and the same TPE
  sampler settings (``sweep.search.make_sampler``), the same concurrency and trial count.

Per-trial overhead = wall x concurrency / trials - the stand-in's own sleep: the time a trial
holds its slot beyond the worker's work. Each size runs plain then sweep. Goal: sweep/plain
<= 1.1 at 1000 trials. Not a TF run (no lock needed), but it keeps 2 cores busy for
~1.5 h at the default sizes (plain Ray Tune holds a slot ~4 s a trial here); writes
``results/control_plane.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _bench import (
    DEMO_SPACE,
    FAKE_ENV,
    REPO,
    demo_pipeline,
    fmt,
    header,
    out_dir,
    start_record,
    uptime,
    write_results,
)

STAND_IN_SLEEP_S = 0.05  # tests/fake_worker.py: time.sleep(0.05) after each train iteration


def pinned_space(steps: int, out: Path, space: Path = DEMO_SPACE) -> Path:
    """The demo space with ``num_steps`` fixed and no known points (both sides sample); a
    warm-up range the short run can hold (the demo's goes to 50 of its 600 steps)."""
    import yaml

    raw = yaml.safe_load(space.read_text())
    raw["parameters"]["num_steps"] = steps
    lr = raw["parameters"].get("learning_rate", {}).get("choice", {})
    cosine = lr.get("cosine_decay_learning_rate") or {}
    if "cosine_decay_learning_rate.warmup_steps" in cosine:
        cosine["cosine_decay_learning_rate.warmup_steps"] = {"int": [0, max(0, steps // 2)]}
    raw.pop("points", None)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def stand_in_sleep_s(steps: int) -> float:
    """What the stand-in sleeps per trial: one pause per train iteration (sweep.trial's plan)."""
    from sweep.trial import plan_steps

    _, per_iter = plan_steps(steps, 0)
    return STAND_IN_SLEEP_S * (steps // per_iter)


@contextlib.contextmanager
def local_ray(concurrency: int) -> Iterator[None]:
    """One local Ray for both sides; its workers (and the trials' jobs) see the stand-in."""
    import ray

    saved = dict(os.environ)
    path = os.pathsep.join([str(REPO), str(REPO / "benchmarks")])  # the no-op trainable's module
    os.environ.update(FAKE_ENV, PYTHONPATH=path)
    ray.init(address="local", num_cpus=concurrency, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        yield
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def run_sweep_side(n: int, concurrency: int, space: Path, pipeline: Path, root: Path,
                   reuse_actors: bool = True) -> float:
    """Wall seconds of `sweep run` (in this process, on the Ray already up); ``reuse_actors``
    False: a new Ray actor per trial, as the sweep ran before it reused them."""
    from sweep import cli, tune_backend

    cwd = os.getcwd()
    os.chdir(root)
    tune_backend.REUSE_ACTORS = reuse_actors
    t0 = time.time()
    try:
        code = cli.main(["run", "--space", str(space), "--pipeline", str(pipeline),
                         "--name", f"cp-{n}-{reuse_actors}", "--storage", str(root / "experiments"),
                         "--num-trials", str(n), "--max-concurrent", str(concurrency),
                         "--cpus-per-trial", "1", "--scheduler", "fifo", "--sampler", "tpe",
                         "--eval-every", "0", "--no-report", "--no-dashboard", "--overwrite"])
    finally:
        os.chdir(cwd)
        tune_backend.REUSE_ACTORS = True
    wall = time.time() - t0
    if code != 0:
        raise SystemExit(f"sweep run of {n} trials exited with {code}")
    return wall


def _noop(config: dict[str, Any]) -> None:
    from ray import tune

    l2 = config.get("l2_weight")  # an objective that varies, as the stand-in's does
    tune.report({"mAP": 1.0 / (1.0 + 1000.0 * l2) if isinstance(l2, float) else 1.0})


def run_plain_side(n: int, concurrency: int, space: Path, root: Path,
                   reuse_actors: bool | None = None) -> float:
    """Wall seconds of plain Ray Tune + OptunaSearch with a no-op trainable (Ray's default
    reuses a function trainable's actor for the next trial; ``False``: a new one per trial)."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from sweep import search
    from sweep.space import load_space

    sp = load_space(space)
    sampler = search.make_sampler(SimpleNamespace(sampler="tpe", seed=0, num_trials=n,
                                                  max_concurrent=concurrency), sp, 0)
    t0 = time.time()
    tuner = tune.Tuner(
        tune.with_resources(_noop, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(space=sp.define_by_run, metric="mAP", mode="max",
                                    sampler=sampler),
            num_samples=n, max_concurrent_trials=concurrency, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=f"plain-{n}-{reuse_actors}", storage_path=str(root / "plain"),
                                  verbose=0))
    grid = tuner.fit()
    wall = time.time() - t0
    if grid.errors:
        raise SystemExit(f"plain Ray Tune: {len(grid.errors)} trials errored")
    return wall


def per_trial_ms(wall: float, n: int, concurrency: int, sleep: float) -> float:
    return (wall * concurrency / n - sleep) * 1000.0


def totals(sizes: dict[str, dict[str, float]], concurrency: int, sleep: float) -> dict[str, Any]:
    """The headline ratio (at the largest size) and, with two sizes or more, each side's
    marginal cost of one more trial between the smallest and largest, where fixed costs cancel."""
    out: dict[str, Any] = {"ratio": None, "ratio_at": None}
    ns = sorted(sizes, key=int)
    if not ns:
        return out
    out.update(ratio=sizes[ns[-1]]["ratio"], ratio_at=int(ns[-1]))
    if len(ns) >= 2:
        lo, hi, dn = sizes[ns[0]], sizes[ns[-1]], int(ns[-1]) - int(ns[0])
        out["marginal_ms"] = {
            side: ((hi[f"{side}_wall_s"] - lo[f"{side}_wall_s"]) * concurrency / dn
                   - (sleep if side == "sweep" else 0.0)) * 1000.0 for side in ("plain", "sweep")}
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    data = start_record()
    sleep = stand_in_sleep_s(a.steps)
    data.update(trials=a.trials, concurrency=a.concurrency, steps=a.steps,
                stand_in_sleep_s=sleep, sizes={})
    root = Path(tempfile.mkdtemp(prefix="control_plane-"))
    pipeline = demo_pipeline(root / "workspace", fake=True)
    space = pinned_space(a.steps, root / "space.yaml")
    with local_ray(a.concurrency):
        for n in a.trials:
            print(f"{n} trials: plain Ray Tune ...", flush=True)
            plain = run_plain_side(n, a.concurrency, space, root)
            print(f"  plain {plain:.1f} s; sweep ...", flush=True)
            swept = run_sweep_side(n, a.concurrency, space, pipeline, root)
            print(f"  sweep {swept:.1f} s", flush=True)
            row = {"plain_wall_s": plain, "sweep_wall_s": swept,
                   "plain_ms": per_trial_ms(plain, n, a.concurrency, 0.0),
                   "sweep_ms": per_trial_ms(swept, n, a.concurrency, sleep)}
            row["ratio"] = row["sweep_ms"] / row["plain_ms"] if row["plain_ms"] > 0 else None
            if a.also_no_reuse and n == min(a.trials):  # what a Ray actor per trial costs
                wall = run_plain_side(n, a.concurrency, space, root, reuse_actors=False)
                row.update(plain_no_reuse_wall_s=wall,
                           plain_no_reuse_ms=per_trial_ms(wall, n, a.concurrency, 0.0))
                print(f"  plain without actor reuse {wall:.1f} s", flush=True)
                wall = run_sweep_side(n, a.concurrency, space, pipeline, root, reuse_actors=False)
                row.update(sweep_no_reuse_wall_s=wall,
                           sweep_no_reuse_ms=per_trial_ms(wall, n, a.concurrency, sleep))
                print(f"  sweep without actor reuse {wall:.1f} s", flush=True)
            data["sizes"][str(n)] = row
    data.update(totals(data["sizes"], a.concurrency, sleep))
    data["uptime_after"] = uptime()
    shutil.rmtree(root, ignore_errors=True)  # thousands of stand-in trial folders
    return data


def markdown(data: dict[str, Any]) -> list[str]:
    md = header("Control plane: sweep vs plain Ray Tune + OptunaSearch", data)
    md += [f"Concurrency {data['concurrency']}, one CPU per trial, TPE, FIFO; the sweep's trials "
           f"run the stand-in worker ({data['steps']} steps; its own sleep, "
           f"{data['stand_in_sleep_s']:.2f} s a trial, is subtracted). Per-trial overhead = wall"
           " x concurrency / trials - stand-in sleep.", "",
           "| trials | plain wall s | sweep wall s | plain ms/trial | sweep ms/trial | sweep/plain |",
           "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n, r in sorted(data["sizes"].items(), key=lambda kv: int(kv[0])):
        md.append(f"| {n} | {fmt(r['plain_wall_s'], 1)} | {fmt(r['sweep_wall_s'], 1)} | "
                  f"{fmt(r['plain_ms'], 0)} | {fmt(r['sweep_ms'], 0)} | {fmt(r['ratio'])} |")
    no_reuse = [(n, r) for n, r in data["sizes"].items() if "plain_no_reuse_ms" in r]
    if no_reuse:
        md += ["", "With a new Ray actor per trial (`reuse_actors=False`; the sweep ran so "
                   "before it reused actors): " + ", ".join(
                       f"plain {fmt(r['plain_no_reuse_ms'], 0)} ms/trial, sweep "
                       f"{fmt(r.get('sweep_no_reuse_ms'), 0)} ms/trial at {n}"
                       for n, r in no_reuse) + "."]
    if data.get("marginal_ms"):
        m = data["marginal_ms"]
        md += ["", f"Marginal cost of one more trial (between the sizes, fixed costs cancel): "
                   f"plain {m['plain']:.0f} ms, sweep {m['sweep']:.0f} ms."]
    r = data.get("ratio")
    md += ["", f"sweep/plain at {data.get('ratio_at')} trials: **{fmt(r)}x** (goal <= 1.1: "
               f"{'met' if r is not None and r <= 1.1 else 'not met'})."]
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, nargs="+", default=[100, 1000],
                   help="trial counts to measure [%(default)s]")
    p.add_argument("--concurrency", type=int, default=2, help="trials at once [%(default)s]")
    p.add_argument("--steps", type=int, default=10, help="stand-in train steps [%(default)s]")
    p.add_argument("--also-no-reuse", action="store_true",
                   help="at the smallest size, also run both sides with a new Ray actor per "
                        "trial (reuse_actors=False), to show what actor reuse saves")
    p.add_argument("--out", type=Path, help="results folder [benchmarks/results]")
    a = p.parse_args(argv)
    if min(a.trials) < 1 or a.concurrency < 1 or a.steps < 1:
        p.error("--trials, --concurrency and --steps must be >= 1")
    data = run(a)
    write_results("control_plane", data, markdown(data), out_dir(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
