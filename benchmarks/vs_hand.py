"""The sweep against the hand workflow: the same K configurations of the demo task, same steps.

    flock /work/tf.lock .venv/bin/python benchmarks/vs_hand.py [--k 3] [--steps 100] [--seed 0]
        [--eval-every 0] [--skip hand|sweep] [--work DIR] [--out DIR]

(a) hand: as the tutorial user, one configuration after the other: the OD API's
    ``model_main_tf2.py`` training, then its eval job (``--checkpoint_dir``) until the COCO
    metrics are in its event file (then it is stopped, as the user would: it would otherwise
    wait for another checkpoint up to ``--eval_timeout``, an hour).
(b) sweep: the same K configurations as the space's ``points:``, ``sweep run --scheduler fifo
    --num-trials K`` with the default concurrency, timed as a user runs it (then ``sweep
    report``, timed apart).
(c) limit: each sweep trial's steady-state step time (median of its ``steps_per_sec``
    summaries after the first, which carries the tracing) x its steps, summed over trials.

The configurations: the demo space (``sweep demo``'s, search_spaces/demo_tiny.yaml) with
``num_steps`` fixed to ``--steps``; the first is the base config, the others drawn at random
from the space (``--seed``). The workspace is the one ``sweep demo`` writes (sweep.data.dataset +
sweep.odapi.workspace). ``model_main_tf2.py`` trains in chunks of 100 steps: keep ``--steps`` a
multiple of 100 for equal work. Reports b/a and b/c; writes ``results/vs_hand.{json,md}``.
Default size: ~15-25 min on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
HAND_CHUNK = 100  # model_main_tf2's train_loop runs num_steps_per_iteration=100 steps at a time


def model_main(argv: list[str]) -> None:
    """The tutorial's ``python model_main_tf2.py ARGS``, with the project's tf-slim patch
    (sweep/odapi/compat.py) that TF 2.15 needs in every process that trains or evaluates."""
    from sweep.odapi import compat

    compat.patch()
    sys.argv = ["model_main_tf2.py", *argv]
    runpy.run_module("object_detection.model_main_tf2", run_name="__main__", alter_sys=True)


# --------------------------------------------------------------------------------- configs
def configurations(space_path: Path, base_pipeline: Path, k: int, steps: int, seed: int,
                   out: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A space file pinning ``num_steps`` with ``k`` points (the base config, then random
    draws from the space), and each point's flat config (what a trial receives)."""
    import optuna
    import yaml

    from sweep.odapi import render
    from sweep.search import space

    sp = space.load_space(space_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for _ in range(k - 1):
        trial = study.ask()
        sp.define_by_run(trial)
        drawn.append(dict(trial.params))
        study.tell(trial, 0.0)
    raw = yaml.safe_load(space_path.read_text())
    raw["parameters"]["num_steps"] = steps
    raw["points"] = [space.BASE_POINT, *drawn]
    raw["description"] = f"vs_hand: {k} fixed configurations of {space_path.name}, {steps} steps"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    pinned = space.load_space(out)
    points = pinned.points_to_evaluate(render.load_pipeline(base_pipeline))
    return out, [space.replay(pinned, p) for p in points]


# ------------------------------------------------------------------------------------ hand
def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _model_main_proc(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, str(HERE), "--model-main", *args], stdout=f,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _hand_args(pipeline: Path, model_dir: Path) -> list[str]:
    """The flags both of the tutorial's model_main_tf2 jobs get."""
    return [f"--model_dir={model_dir}", f"--pipeline_config_path={pipeline}", "--alsologtostderr"]


def hand_train_args(pipeline: Path, model_dir: Path) -> list[str]:
    """model_main_tf2's training flags as the user gives them. It saves every
    ``--checkpoint_every_n`` steps (1000) and not at the end: a shorter run must save at its
    last step, or the eval job scores the step-0 checkpoint."""
    from sweep.odapi import render

    steps = render.num_steps(render.load_pipeline(pipeline))
    return [*_hand_args(pipeline, model_dir), f"--checkpoint_every_n={steps}"]


def hand_run(pipeline: Path, model_dir: Path, poll: float = 1.0) -> dict[str, Any]:
    """One configuration as the tutorial runs it: train to the end, then the eval job until
    its COCO metrics exist."""
    from sweep.odapi import metrics

    t0 = time.time()
    train = _model_main_proc(hand_train_args(pipeline, model_dir), model_dir / "train_job.log")
    try:
        code = train.wait()
    finally:
        _stop(train)  # on Ctrl-C: the job is in its own session
    t_train = time.time() - t0
    if code != 0:
        raise SystemExit(f"model_main_tf2 training failed ({code}); see {model_dir / 'train_job.log'}")
    t1 = time.time()
    ev = _model_main_proc([*_hand_args(pipeline, model_dir), f"--checkpoint_dir={model_dir}"],
                          model_dir / "eval_job.log")
    found: list[Any] = []
    try:
        while not found:
            if ev.poll() is not None:
                raise SystemExit(f"the eval job exited ({ev.returncode}) without COCO metrics; "
                                 f"see {model_dir / 'eval_job.log'}")
            time.sleep(poll)
            found = metrics.read_scalars(model_dir / "eval", [metrics.MAP])
    finally:
        _stop(ev)
    t_eval = time.time() - t1
    trained = metrics.read_trial(model_dir).last_train_step
    return {"train_s": t_train, "eval_s": t_eval, "total_s": t_train + t_eval,
            "trained_steps": trained, "mAP": found[-1].value, "eval_step": found[-1].step}


# ----------------------------------------------------------------------------------- sweep
def steady_step_s(trial_dir: Path) -> float | None:
    """Median wall time of a step after the first train iteration (which carries the tracing),
    from the OD API's ``steps_per_sec`` summaries (one per iteration)."""
    from sweep.odapi import metrics

    sps = sorted(metrics.read_scalars(trial_dir / "train", [metrics.STEPS_PER_SEC]),
                 key=lambda s: s.step)
    later = [1.0 / s.value for s in sps[1:] if s.value > 0]
    return statistics.median(later) if later else None


def sweep_run(space_file: Path, pipeline: Path, k: int, eval_every: int, seed: int,
              work: Path) -> dict[str, Any]:
    from _bench import run_sweep_cli, sweep_env

    from sweep.core.experiment import Experiment
    from sweep.odapi import metrics

    storage = work / "experiments"
    code, wall = run_sweep_cli(
        ["--space", str(space_file), "--pipeline", str(pipeline), "--name", "vs-hand",
         "--storage", str(storage), "--num-trials", str(k), "--scheduler", "fifo",
         "--eval-every", str(eval_every), "--seed", str(seed), "--no-dashboard", "--no-report",
         "--overwrite"], cwd=work, fake=False, log=work / "sweep_run.log")
    if code != 0:
        raise SystemExit(f"sweep run exited with {code}; see {work / 'sweep_run.log'}")
    t0 = time.time()
    rep = subprocess.run([sys.executable, "-m", "sweep.cli", "report", "vs-hand", "--storage",
                          str(storage)], cwd=work, env=sweep_env(False), capture_output=True,
                         text=True)
    report_s = time.time() - t0
    exp = Experiment(storage / "vs-hand")
    trials = []
    for t in exp.trials():
        tm = metrics.read_trial(t.path)
        step_s = steady_step_s(t.path)
        trials.append({"trial": t.name, "state": t.status().get("state"),
                       "trained_steps": tm.last_train_step,
                       "mAP": tm.last_eval().get(metrics.MAP), "steady_step_s": step_s,
                       "steady_train_s": (step_s * tm.last_train_step
                                          if step_s and tm.last_train_step else None),
                       "elapsed_s": t.status().get("elapsed"),
                       "pipeline": t.pipeline_path.read_text()})
    return {"wall_s": wall, "tuning_s": exp.settings().get("wall_time_s"), "report_s": report_s,
            "report_ok": rep.returncode == 0, "trials": trials, "experiment": str(exp.root)}


# ------------------------------------------------------------------------------------ main
def run(a: argparse.Namespace) -> dict[str, Any]:
    from _bench import demo_pipeline, start_record, uptime

    from sweep.odapi import render

    data = start_record()
    data.update(k=a.k, steps=a.steps, seed=a.seed, eval_every=a.eval_every, space=str(a.space))
    work = Path(a.work or tempfile.mkdtemp(prefix="vs_hand-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data["work"] = str(work)
    pipeline = demo_pipeline(work / "workspace")
    space_file, configs = configurations(Path(a.space).resolve(), pipeline, a.k, a.steps, a.seed,
                                         work / "vs_hand_space.yaml")
    base = render.load_pipeline(pipeline)
    data["configs"] = configs
    hand_pipelines = []
    for i, flat in enumerate(configs):
        d = work / "hand" / f"config{i}"
        d.mkdir(parents=True, exist_ok=True)
        render.write_pipeline(render.render(base, flat), d / "pipeline.config")
        hand_pipelines.append(d / "pipeline.config")
    if "hand" not in a.skip:
        print(f"(a) hand workflow: {a.k} configurations, one after the other", flush=True)
        data["hand"] = []
        for i, p in enumerate(hand_pipelines):
            r = hand_run(p, p.parent)
            print(f"  config {i}: train {r['train_s']:.0f} s ({r['trained_steps']} steps), "
                  f"eval job {r['eval_s']:.0f} s, mAP {r['mAP']:.4f}", flush=True)
            data["hand"].append(r)
        data["a_s"] = sum(r["total_s"] for r in data["hand"])
    if "sweep" not in a.skip:
        print(f"(b) sweep run --scheduler fifo --num-trials {a.k}", flush=True)
        b = sweep_run(space_file, pipeline, a.k, a.eval_every, a.seed, work)
        hand_texts = sorted(p.read_text() for p in hand_pipelines)
        b["same_configs_as_hand"] = sorted(t.pop("pipeline") for t in b["trials"]) == hand_texts
        data["sweep"] = b
        data["b_s"] = b["wall_s"]
        steady = [t["steady_train_s"] for t in b["trials"]]
        data["c_s"] = sum(steady) if steady and None not in steady else None
        print(f"  sweep {b['wall_s']:.0f} s (+ report {b['report_s']:.0f} s); "
              f"limit {data['c_s'] or 0:.1f} s", flush=True)
    if data.get("a_s") and data.get("b_s"):
        data["b_over_a"] = data["b_s"] / data["a_s"]
    if data.get("c_s") and data.get("b_s"):
        data["b_over_c"] = data["b_s"] / data["c_s"]
    data["uptime_after"] = uptime()
    return data


def markdown(data: dict[str, Any]) -> list[str]:
    from _bench import fmt, header

    md = header("Sweep vs the hand workflow", data)
    md += [f"K = {data['k']} configurations of `{data['space']}` (base + random draws, seed "
           f"{data['seed']}), {data['steps']} steps each; sweep eval every "
           f"{data['eval_every'] or 'num_steps (end only)'}.", ""]
    if data["steps"] % HAND_CHUNK:
        md += [f"Note: model_main_tf2 trains in chunks of {HAND_CHUNK} steps, so the hand runs "
               f"trained more than {data['steps']} steps (see trained steps).", ""]
    if data.get("hand"):
        md += ["| (a) hand, config | train job s | eval job s (to COCO metrics) | trained steps | mAP |",
               "| --- | ---: | ---: | ---: | ---: |"]
        md += [f"| {i} | {fmt(r['train_s'], 1)} | {fmt(r['eval_s'], 1)} | {r['trained_steps']} | "
               f"{fmt(r['mAP'], 4)} |" for i, r in enumerate(data["hand"])]
        md.append("")
    if data.get("sweep"):
        s = data["sweep"]
        md += ["| (b) sweep trial | state | trained steps | mAP | steady step s | steady train s (c) |",
               "| --- | --- | ---: | ---: | ---: | ---: |"]
        md += [f"| {t['trial']} | {t['state']} | {t['trained_steps']} | {fmt(t['mAP'], 4)} | "
               f"{fmt(t['steady_step_s'], 3)} | {fmt(t['steady_train_s'], 1)} |" for t in s["trials"]]
        md += ["", f"`sweep run` {fmt(s['wall_s'], 1)} s (of which the trials {fmt(s['tuning_s'], 1)}"
                   f" s); `sweep report` after it {fmt(s['report_s'], 1)} s (not in b). Rendered "
                   f"configs identical to the hand ones: {s['same_configs_as_hand']}.", ""]
    md += ["| measure | s |", "| --- | ---: |",
           f"| (a) hand, sequential | {fmt(data.get('a_s'), 1)} |",
           f"| (b) `sweep run` | {fmt(data.get('b_s'), 1)} |",
           f"| (c) steady-state step time x steps, summed | {fmt(data.get('c_s'), 1)} |", "",
           f"b/a = **{fmt(data.get('b_over_a'))}** (goal <= 0.8 now, <= 0.5 later); "
           f"b/c = **{fmt(data.get('b_over_c'))}**"]
    return md


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--model-main"]:
        model_main(argv[1:])
        return 0
    sys.path.insert(0, str(HERE.parent))
    from _bench import DEMO_SPACE, out_dir, write_results

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=3, help="configurations (>= 3 for the benchmark) [%(default)s]")
    p.add_argument("--steps", type=int, default=100, help="train steps of each [%(default)s]")
    p.add_argument("--seed", type=int, default=0, help="seed of the random configurations [%(default)s]")
    p.add_argument("--eval-every", type=int, default=0,
                   help="sweep evaluations every N steps (0 = at the end only, as the hand "
                        "workflow) [%(default)s]")
    p.add_argument("--space", type=Path, default=DEMO_SPACE, help="[%(default)s]")
    p.add_argument("--skip", action="append", default=[], choices=["hand", "sweep"],
                   help="leave out a side (repeatable)")
    p.add_argument("--work", type=Path, help="working folder [a new temp folder]")
    p.add_argument("--out", type=Path, help="results folder [benchmarks/results]")
    a = p.parse_args(argv)
    if a.k < 1 or a.steps < 1:
        p.error("--k and --steps must be >= 1")
    data = run(a)
    write_results("vs_hand", data, markdown(data), out_dir(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
