"""Control-plane overhead: the sweep's own path vs plain Ray Tune + OptunaSearch, per trial.

    .venv/bin/python benchmarks/control_plane.py [--trials 100 1000] [--concurrency 2]
        [--steps 10] [--also-no-reuse] [--out DIR]

Three sides on one local Ray (started once and warmed up, ``--concurrency`` CPUs, one CPU per
trial, each trial's Ray actor reused for the next trial on every side):

- sweep: ``sweep run --scheduler fifo --sampler tpe --no-report`` in this process (space ->
  Optuna via Ray Tune -> the trial's two worker processes -> results -> the SQLite study), with
  the fast stand-in worker (tests/fake_worker.py: no TensorFlow; it sleeps 0.05 s per train
  iteration, which is subtracted), on the demo space with ``num_steps`` fixed to ``--steps``;
- plain: ``tune.Tuner`` of a no-op function trainable (one ``tune.report``) with
  ``ray.tune.search.optuna.OptunaSearch`` on the same define-by-run space and the same TPE
  sampler settings (``sweep.search.samplers.make_sampler``), the same concurrency and trial count;
- plain + jobs: the same Tuner, its trainable running the same two stand-in jobs the way a
  user's own trainable would (start both, wait for both, report the evaluation): the work a
  sweep trial does, without the sweep. sweep minus this is what the sweep's own machinery costs.

Per-trial overhead = wall x concurrency / trials - the stand-in's own sleep: the time a trial
holds its slot beyond the worker's sleep. Each size runs plain, plain + jobs, then sweep. Goal:
sweep/plain <= 1.1 at 1000 trials. Not a TF run (no lock needed); ~10 min at the default sizes
on 2 cores; writes ``results/control_plane.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
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


def pinned_pipeline(pipeline: Path, steps: int, out: Path) -> Path:
    """The demo's pipeline.config with ``num_steps`` set (what plain + jobs hands its jobs)."""
    from sweep.odapi import render

    cfg = render.load_pipeline(pipeline)
    cfg.train_config.num_steps = steps
    render.write_pipeline(cfg, out)
    return out


def stand_in_sleep_s(steps: int) -> float:
    """What the stand-in sleeps per trial: one pause per train iteration (sweep.run.trial's plan)."""
    from sweep.run.trial import plan_steps

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
                   reuse_actors: bool = True) -> tuple[float, int]:
    """(wall seconds, Ray actors used) of `sweep run` (in this process, on the Ray already
    up); ``reuse_actors`` False: a new Ray actor per trial, as the sweep ran before."""
    from sweep import cli
    from sweep.core.experiment import Experiment
    from sweep.run import tune_backend

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
    exp = Experiment(root / "experiments" / f"cp-{n}-{reuse_actors}")
    return wall, len({t.status().get("pid") for t in exp.trials()})


def _mark_actor(actors: str, slots: int) -> None:
    """Leave this Ray actor's pid in ``actors`` (a folder): the side counts the actors it used
    (its results are not read back: the sweep's Ray settings write no result files).

    An actor's first trial waits (up to 30 s) until ``slots`` actors are up. With reuse, Ray
    hands a finished trial's actor to the next trial and drops the actor it was starting for
    it; a new worker takes ~3.5 s here, so sub-second trials would keep one actor busy and the
    other slot idle for the whole run. The sweep's first trial on an actor takes seconds (its
    imports) and fills both slots anyway; this makes the plain sides start as full."""
    if not actors:
        return
    mark = Path(actors) / str(os.getpid())
    if mark.exists():
        return
    mark.touch()
    deadline = time.time() + 30.0
    while len(list(Path(actors).iterdir())) < slots and time.time() < deadline:
        time.sleep(0.05)


def _noop(config: dict[str, Any], actors: str = "", slots: int = 1) -> None:
    from ray import tune

    _mark_actor(actors, slots)
    l2 = config.get("l2_weight")  # an objective that varies, as the stand-in's does
    tune.report({"mAP": 1.0 / (1.0 + 1000.0 * l2) if isinstance(l2, float) else 1.0})


def run_plain_side(n: int, concurrency: int, space: Path, root: Path,
                   reuse_actors: bool = True, trainable: Any = None,
                   name: str | None = None) -> tuple[float, int]:
    """Wall seconds of plain Ray Tune + OptunaSearch with a no-op trainable, its actor reused
    for the next trial as the sweep reuses its own (``TuneConfig.reuse_actors`` is False by
    default in Ray 2.60: a new worker process per trial, ~4 s here); ``False``: Ray's default."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from sweep.search import samplers
    from sweep.search.space import load_space

    # With the sweep's Ray settings no result files exist: Ray's ResultGrid warns per trial.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    name = name or f"plain-{n}-{reuse_actors}"
    actors = root / "actors" / name
    actors.mkdir(parents=True)
    make = trainable or functools.partial(tune.with_parameters, _noop)

    sp = load_space(space)
    sampler = samplers.make_sampler("tpe", seed=0, num_trials=n, max_concurrent=concurrency,
                                    space=sp)
    t0 = time.time()
    tuner = tune.Tuner(
        tune.with_resources(make(actors=str(actors), slots=concurrency if reuse_actors else 1),
                            {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(space=sp.define_by_run, metric="mAP", mode="max",
                                    sampler=sampler),
            num_samples=n, max_concurrent_trials=concurrency, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=name,
                                  storage_path=str(root / "plain"), verbose=0))
    grid = tuner.fit()
    wall = time.time() - t0
    if grid.errors:
        raise SystemExit(f"plain Ray Tune ({name}): {len(grid.errors)} trials errored: "
                         f"{grid.errors[0]}")
    return wall, len(list(actors.iterdir()))


def _stand_in_jobs(config: dict[str, Any], pipeline: str = "", root: str = "",
                   steps: int = 0, actors: str = "", slots: int = 1) -> None:
    """A user's own trainable doing a sweep trial's work: the stand-in's train and eval jobs
    side by side on the trial's folder, then their evaluation reported (no sweep code)."""
    import json
    import subprocess
    import uuid

    from ray import tune

    from sweep.run.trial import plan_steps

    _mark_actor(actors, slots)
    d = Path(root) / uuid.uuid4().hex[:12]
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(config))  # the stand-in scores by l2_weight
    every, per_iter = plan_steps(steps, 0)
    base = [sys.executable, "-m", "tests.fake_worker"]
    common = ["--pipeline", pipeline, "--model-dir", str(d)]
    jobs = [subprocess.Popen([*base, "train", *common, "--checkpoint-every", str(every),
                              "--steps-per-iteration", str(per_iter)],
                             cwd=REPO, stdout=subprocess.DEVNULL),
            subprocess.Popen([*base, "eval", *common], cwd=REPO, stdout=subprocess.DEVNULL)]
    if any(job.wait() for job in jobs):
        raise RuntimeError(f"a stand-in job failed in {d}")
    last = json.loads((d / "eval" / "evaluated.jsonl").read_text().splitlines()[-1])
    tune.report({"mAP": 1.0, "step": last["step"]})


def run_plain_jobs_side(n: int, concurrency: int, space: Path, pipeline: Path, steps: int,
                        root: Path) -> tuple[float, int]:
    """(wall seconds, Ray actors used) of plain Ray Tune + OptunaSearch whose trainable runs
    the stand-in's jobs."""
    from ray import tune

    return run_plain_side(n, concurrency, space, root, name=f"plain-jobs-{n}",
                          trainable=functools.partial(tune.with_parameters, _stand_in_jobs,
                                                      pipeline=str(pipeline.resolve()),
                                                      root=str(root / f"plain-jobs-{n}"),
                                                      steps=steps))


def warm_up(concurrency: int, space: Path, root: Path) -> None:
    """Ray starts its worker processes on first use (~4 s here): pay that before measuring."""
    run_plain_side(concurrency, concurrency, space, root, name="warm-up")


def per_trial_ms(wall: float, n: int, concurrency: int, sleep: float) -> float:
    """How long a trial held one of the ``concurrency`` slots beyond the stand-in's sleep."""
    return (wall * concurrency / n - sleep) * 1000.0


def record(row: dict[str, Any], side: str, n: int, wall: float, actors: int, sleep: float,
           concurrency: int) -> None:
    """One side's numbers. A trial's share is of the ``concurrency`` slots the user reserved,
    used or not: Ray may run short trials on fewer actors (a slot left idle is a cost too),
    so the actors it really used are kept beside them."""
    row.update({f"{side}_wall_s": wall, f"{side}_actors": actors,
                f"{side}_ms": per_trial_ms(wall, n, concurrency, sleep)})
    print(f"  {side.replace('_', ' ')}: {wall:.1f} s on {actors} Ray actors", flush=True)


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
                   - (0.0 if side == "plain" else sleep)) * 1000.0
            for side in ("plain", "plain_jobs", "sweep") if f"{side}_wall_s" in lo}
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def run(a: argparse.Namespace) -> dict[str, Any]:
    data = start_record()
    sleep = stand_in_sleep_s(a.steps)
    data.update(trials=a.trials, concurrency=a.concurrency, steps=a.steps,
                stand_in_sleep_s=sleep, sizes={})
    root = Path(tempfile.mkdtemp(prefix="control_plane-"))
    pipeline = demo_pipeline(root / "workspace", fake=True)
    space = pinned_space(a.steps, root / "space.yaml")
    jobs_pipeline = pinned_pipeline(pipeline, a.steps, root / "jobs_pipeline.config")
    c = a.concurrency
    import sweep.run.tune_backend  # noqa: F401 - its Ray Tune settings (no auto loggers, ...) for all sides
    with local_ray(c):
        warm_up(c, space, root)
        for n in a.trials:
            print(f"{n} trials: plain Ray Tune, plain + the stand-in's jobs, sweep", flush=True)
            row: dict[str, Any] = {}
            record(row, "plain", n, *run_plain_side(n, c, space, root), 0.0, c)
            record(row, "plain_jobs", n,
                   *run_plain_jobs_side(n, c, space, jobs_pipeline, a.steps, root), sleep, c)
            record(row, "sweep", n, *run_sweep_side(n, c, space, pipeline, root), sleep, c)
            row["ratio"] = _ratio(row["sweep_ms"], row["plain_ms"])
            row["ratio_vs_jobs"] = _ratio(row["sweep_ms"], row["plain_jobs_ms"])
            if a.also_no_reuse and n == min(a.trials):  # what a Ray actor per trial costs
                record(row, "plain_no_reuse", n,
                       *run_plain_side(n, c, space, root, reuse_actors=False), 0.0, c)
                record(row, "sweep_no_reuse", n,
                       *run_sweep_side(n, c, space, pipeline, root, reuse_actors=False), sleep,
                       c)
            data["sizes"][str(n)] = row
    data.update(totals(data["sizes"], c, sleep))
    data["uptime_after"] = uptime()
    shutil.rmtree(root, ignore_errors=True)  # thousands of stand-in trial folders
    return data


def markdown(data: dict[str, Any]) -> list[str]:
    md = header("Control plane: sweep vs plain Ray Tune + OptunaSearch", data)
    md += [f"Concurrency {data['concurrency']}, one CPU per trial, TPE, FIFO, Ray actors reused "
           f"on every side. The sweep's trials run the stand-in worker ({data['steps']} steps; "
           f"its own sleep, {data['stand_in_sleep_s']:.2f} s a trial, is subtracted); plain runs "
           "a no-op trainable; plain + jobs runs the same two stand-in jobs from a plain "
           "trainable (the trial's work without the sweep). Per-trial overhead = wall x "
           "concurrency / trials - stand-in sleep (the time a trial held one of the slots; Ray "
           "may run short trials on fewer actors than slots, shown as Ray actors used).", "",
           "| trials | side | wall s | Ray actors used | ms a trial | sweep / side |",
           "| ---: | --- | ---: | ---: | ---: | ---: |"]
    sides = {"plain": "plain Ray Tune, no-op", "plain_jobs": "plain Ray Tune + the jobs",
             "sweep": "sweep", "plain_no_reuse": "plain, a new actor per trial",
             "sweep_no_reuse": "sweep, a new actor per trial"}
    for n, r in sorted(data["sizes"].items(), key=lambda kv: int(kv[0])):
        for side, label in sides.items():
            if f"{side}_wall_s" not in r:
                continue
            vs = (fmt(r["sweep_ms"] / r[f"{side}_ms"]) if side in ("plain", "plain_jobs")
                  and r[f"{side}_ms"] > 0 else "")
            md.append(f"| {n} | {label} | {fmt(r[f'{side}_wall_s'], 1)} | "
                      f"{r.get(f'{side}_actors', '')} | {fmt(r[f'{side}_ms'], 0)} | {vs} |")
    if data.get("marginal_ms"):
        m = data["marginal_ms"]
        md += ["", "Marginal cost of one more trial (between the sizes, fixed costs cancel): "
                   + ", ".join(f"{sides[side]} {ms:.0f} ms" for side, ms in m.items()) + "."]
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
