"""Where a trial's time goes: fixed cost (import, build, tracing, first step, eval tracing, COCO)
vs steady-state training, and what a few candidate cuts save. Not a test; run by hand:

    .venv/bin/python benchmarks/trial_cost.py [--steps 40] [--eval-every 20]
        [--out benchmarks/results/trial_cost.md] [--skip trial] [--with-jit]

Everything runs in fresh subprocesses of this file (``--probe KIND``), one after the other, on
synthetic data made in a temp dir, so the baseline and each cut are measured in the same run
under the same machine load (``uptime`` is recorded before and after). Writes a Markdown table
and a JSON file with every raw number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import fmt, uptime  # noqa: E402 - beside this file

HERE = Path(__file__).resolve()
T_PROCESS = time.time()  # as early as this file can take it (interpreter start is before)


# --------------------------------------------------------------------------------------------
# in-probe helpers (run inside a fresh subprocess)
# --------------------------------------------------------------------------------------------
def _setup(threads: int, grappler_off: bool = False, jit: bool = False) -> dict[str, float]:
    """sweep.odapi.worker's set-up (compat patch + thread settings) plus optional cuts; timed."""
    t0 = time.time()
    from sweep.odapi import compat

    compat.patch()
    import tensorflow as tf

    t_tf = time.time()
    from object_detection import inputs, model_lib_v2  # noqa: F401
    from object_detection.builders import model_builder, optimizer_builder  # noqa: F401
    from object_detection.utils import config_util  # noqa: F401

    t_od = time.time()
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    if grappler_off:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if jit:
        tf.config.optimizer.set_jit(True)
    return {"import_tf_s": t_tf - t0, "import_odapi_s": t_od - t_tf, "import_total_s": t_od - t0,
            "interp_to_main_s": t0 - T_PROCESS}


def probe_import(a: dict[str, Any]) -> dict[str, Any]:
    return _setup(0)


def probe_train(a: dict[str, Any]) -> dict[str, Any]:
    """``model_lib_v2.train_loop`` as sweep.odapi.worker runs it; build timed by wrapping the builder,
    per-iteration times from its ``steps_per_sec`` summaries (one per num_steps_per_iteration)."""
    out = _setup(a["threads"], a.get("grappler_off", False), a.get("jit", False))
    from object_detection import model_lib_v2

    from sweep.odapi import metrics

    marks: dict[str, float] = {}
    build = model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"]

    def timed_build(*args: Any, **kw: Any) -> Any:
        t = time.time()
        model = build(*args, **kw)
        marks["build_s"] = time.time() - t
        marks["built_at"] = time.time()
        return model

    model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"] = timed_build
    model_dir = Path(a["model_dir"])
    spi = a["steps_per_iteration"]
    t0 = time.time()
    model_lib_v2.train_loop(
        pipeline_config_path=a["pipeline"], model_dir=str(model_dir),
        checkpoint_every_n=a["checkpoint_every"], checkpoint_max_to_keep=10,
        num_steps_per_iteration=spi, record_summaries=False)
    t_end = time.time()
    sps = [s for s in metrics.read_scalars(model_dir / "train", [metrics.STEPS_PER_SEC])]
    sps.sort(key=lambda s: s.step)
    iter_s = [spi / s.value for s in sps]  # wall per iteration, as train_loop measured it
    steady = iter_s[1:]
    step_s = statistics.median(steady) / spi if steady else float("nan")
    out.update(
        build_s=marks.get("build_s"),
        setup_s=sps[0].wall_time - iter_s[0] - marks["built_at"] if sps else None,
        first_iteration_s=iter_s[0] if iter_s else None,
        first_step_fixed_s=(iter_s[0] - spi * step_s) if iter_s else None,
        steady_step_s=step_s,
        iteration_s=iter_s,
        train_loop_s=t_end - t0,
        steps=a["steps"],
        steady_train_s=a["steps"] * step_s,
    )
    return out


def probe_eval(a: dict[str, Any]) -> dict[str, Any]:
    """The eval job's pieces (as sweep.odapi.worker.evaluate), then ``eager_eval_loop`` on the given
    checkpoints with the given ``num_visualizations``: the first call vs later ones."""
    out = _setup(a["threads"], a.get("grappler_off", False))
    import tensorflow as tf
    from object_detection import inputs, model_lib_v2
    from object_detection.builders import model_builder, optimizer_builder
    from object_detection.utils import config_util

    if a.get("reuse_trace"):  # as sweep.odapi.worker.evaluate does today
        from sweep.odapi import worker

        worker._reuse_eval_trace(model_lib_v2)
    t0 = time.time()
    configs = config_util.get_configs_from_pipeline_file(a["pipeline"])
    model_config, eval_config = configs["model"], configs["eval_config"]
    strategy = tf.compat.v2.distribute.get_strategy()
    with strategy.scope():
        model = model_builder.build(model_config=model_config, is_training=True)
    t_model = time.time()
    eval_input = strategy.experimental_distribute_dataset(
        inputs.eval_input(eval_config=eval_config,
                          eval_input_config=configs["eval_input_configs"][0],
                          model_config=model_config, model=model))
    global_step = tf.Variable(0, trainable=False, dtype=tf.int64)
    optimizer, _ = optimizer_builder.build(configs["train_config"].optimizer,
                                           global_step=global_step)
    t_ready = time.time()
    out.update(build_s=t_model - t0, eval_input_s=t_ready - t_model)

    # Instrumentation: per-image timestamps, drawing time, COCO evaluate() time.
    stamps: list[float] = []
    draw: list[float] = []
    coco: list[float] = []
    prep = model_lib_v2.prepare_eval_dict

    def timed_prep(*args: Any, **kw: Any) -> Any:
        stamps.append(time.time())
        return prep(*args, **kw)

    model_lib_v2.prepare_eval_dict = timed_prep
    drawer = model_lib_v2.vutils.draw_side_by_side_evaluation_image

    def timed_draw(*args: Any, **kw: Any) -> Any:
        t = time.time()
        r = drawer(*args, **kw)
        draw.append(time.time() - t)
        return r

    model_lib_v2.vutils.draw_side_by_side_evaluation_image = timed_draw
    get_evaluators = model_lib_v2.eval_util.get_evaluators

    def wrapped_get_evaluators(*args: Any, **kw: Any) -> Any:
        evs = get_evaluators(*args, **kw)
        for ev in evs:
            inner = ev.evaluate

            def timed_eval(inner: Any = inner) -> Any:
                t = time.time()
                r = inner()
                coco.append(time.time() - t)
                return r

            ev.evaluate = timed_eval
        return evs

    model_lib_v2.eval_util.get_evaluators = wrapped_get_evaluators

    writer = tf.summary.create_file_writer(str(Path(a["out_dir"]) / "eval"))
    runs = []
    for ckpt_path, n_viz in a["runs"]:
        t = time.time()
        ckpt = tf.train.Checkpoint(step=global_step, model=model, optimizer=optimizer)
        ckpt.restore(ckpt_path).expect_partial()
        t_restored = time.time()
        eval_config.num_visualizations = n_viz
        stamps.clear(), draw.clear(), coco.clear()
        with writer.as_default():
            result = model_lib_v2.eager_eval_loop(model, configs, eval_input,
                                                  global_step=global_step)
        writer.flush()
        t_done = time.time()
        gaps = [b - x for x, b in zip(stamps, stamps[1:], strict=False)]
        runs.append({
            "checkpoint": Path(ckpt_path).name, "step": int(global_step.numpy()),
            "num_visualizations": n_viz, "restore_s": t_restored - t,
            "eval_loop_s": t_done - t_restored,
            "to_first_image_s": stamps[0] - t_restored if stamps else None,
            "images": len(stamps),
            "per_image_s": statistics.median(gaps) if gaps else None,
            "draw_s": sum(draw), "coco_evaluate_s": sum(coco),
            "after_last_image_s": t_done - stamps[-1] if stamps else None,
            "mAP": float(result.get("DetectionBoxes_Precision/mAP", float("nan"))),
        })
    out["runs"] = runs
    return out


def probe_trial(a: dict[str, Any]) -> dict[str, Any]:
    """One trial as sweep runs it: ``TrialRunner`` (train + eval worker processes) on a temp
    experiment, with the cuts applied through the rendered config and a worker wrapper."""
    from sweep.core.experiment import Experiment
    from sweep.odapi import render
    from sweep.run import trial

    root = Path(a["root"])
    exp = Experiment(root)
    root.mkdir(parents=True, exist_ok=True)
    base = render.load_pipeline(a["pipeline"])
    render.write_pipeline(base, exp.base_pipeline)

    def render_fn(base_path: Path, params: Any, out_path: Path) -> int:
        cfg = render.load_pipeline(base_path)
        if a.get("num_visualizations") is not None:
            cfg.eval_config.num_visualizations = a["num_visualizations"]
        render.write_pipeline(cfg, out_path)
        return int(cfg.train_config.num_steps)

    if a.get("worker_flags"):  # run the workers through this file's --worker wrapper
        real_start = trial.start

        def start(name: str, args: list[str], log_path: Path, env: Any = None, **kw: Any) -> Any:
            if args[:2] == ["-m", "sweep.odapi.worker"]:
                args = [sys.executable, str(HERE), "--worker", json.dumps(a["worker_flags"]),
                        "--", *args[2:]]
            return real_start(name, args, log_path, env=env, **kw)

        trial.start = start
    if a.get("steps_per_iteration"):
        real_plan = trial.plan_steps
        trial.plan_steps = lambda n, e: (real_plan(n, e)[0], a["steps_per_iteration"])
    spec = trial.TrialSpec(experiment_root=root, eval_every=a["eval_every"],
                           threads=a["threads"], extra_env=a.get("env", {}))
    runner = trial.TrialRunner(spec, "t0", {}, render=render_fn)
    t0 = time.time()
    runner.start()
    results = []
    try:
        while True:
            r = runner.next_result(timeout=1800)
            results.append({"step": r.get("step"), "at_s": time.time() - t0,
                            "mAP": r.get("mAP"), "failed": r.get("sweep_failed")})
            if r.get("done"):
                break
    finally:
        runner.stop_processes()
    t_end = time.time()
    from sweep.core.experiment import read_evaluated
    from sweep.odapi import metrics

    tdir = runner.dir.path
    evals = read_evaluated(tdir)
    eval_lines = {}
    for line in runner.dir.eval_log.read_text().splitlines():
        if line.startswith("eval: step "):  # "eval: step N ckpt-K in 12.3s mAP=..."
            parts = line.split()
            eval_lines[int(parts[2])] = float(parts[5].rstrip("s"))
    eval_rows = []
    for row in evals:
        idx = tdir / (row["checkpoint"] + ".index")
        dur = eval_lines.get(row["step"])
        ck_time = idx.stat().st_mtime if idx.exists() else None
        start = row["time"] - dur if dur is not None else None
        eval_rows.append({
            "step": row["step"], "checkpoint_written_s": ck_time - t0 if ck_time else None,
            "eval_started_s": start - t0 if start else None, "eval_s": dur,
            "eval_done_s": row["time"] - t0,
            "waited_for_eval_s": (start - ck_time) if (start and ck_time) else None})
    sps = sorted(metrics.read_scalars(tdir / "train", [metrics.STEPS_PER_SEC]),
                 key=lambda s: s.step)
    loss = sorted(metrics.read_scalars(tdir / "train", ["Loss/total_loss"]), key=lambda s: s.step)
    steady = statistics.median(1 / s.value for s in sps[2:]) if len(sps) > 3 else None
    steps = int(render.load_pipeline(runner.dir.pipeline_path).train_config.num_steps)
    return {"wall_s": t_end - t0, "results": results, "evals": eval_rows,
            "steady_step_s": steady, "steps": steps,
            "steady_share": steady * steps / (t_end - t0) if steady else None,
            "loss": [(s.step, s.value) for s in loss],
            "eval_metrics": [{"step": r["step"], **r["metrics"]} for r in evals if r["metrics"]],
            "train_first_summary_s": sps[0].wall_time - t0 if sps else None,
            "train_last_summary_s": sps[-1].wall_time - t0 if sps else None,
            "steps_per_sec": [s.value for s in sps]}


def worker_wrapper(flags: dict[str, Any], argv: list[str]) -> int:
    """``sweep.odapi.worker`` with extra TF settings applied first (the cuts, for the trial probe)."""
    from sweep.odapi import compat, worker

    compat.patch()
    import tensorflow as tf

    if flags.get("grappler_off"):
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if flags.get("graph_optimizer"):  # sweep.odapi.worker's own switch (before: on; now: auto)
        argv = [*argv, "--graph-optimizer", flags["graph_optimizer"]]
    if flags.get("no_eval_reuse"):  # the eval job as before: a new trace per evaluation
        worker._reuse_eval_trace = lambda module: None
    if flags.get("eval_initial") and argv and argv[0] == "eval":
        argv = [*argv, "--eval-initial"]  # warm-up: evaluate step 0 while training traces
    if flags.get("eval_threads") and argv and argv[0] == "eval":
        i = argv.index("--threads")
        argv = [*argv[:i + 1], str(flags["eval_threads"]), *argv[i + 2:]]
    if flags.get("train_threads") and argv and argv[0] == "train":
        i = argv.index("--threads")
        argv = [*argv[:i + 1], str(flags["train_threads"]), *argv[i + 2:]]
    return worker.main(argv)


PROBES = {"import": probe_import, "train": probe_train, "eval": probe_eval, "trial": probe_trial}


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def run_probe(kind: str, args: dict[str, Any], work: Path, label: str,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    out_file = work / f"probe_{label}.json"
    log = work / f"probe_{label}.log"
    t0 = time.time()
    with open(log, "wb") as f:
        proc = subprocess.run(
            [sys.executable, str(HERE), "--probe", kind, "--probe-args", json.dumps(args),
             "--probe-out", str(out_file)],
            stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    wall = time.time() - t0
    if proc.returncode != 0 or not out_file.exists():
        tail = log.read_text(errors="replace")[-3000:]
        print(f"  {label}: FAILED (exit {proc.returncode}); log tail:\n{tail}", flush=True)
        return {"failed": True, "process_wall_s": wall, "log": str(log)}
    data = json.loads(out_file.read_text())
    data["process_wall_s"] = wall
    print(f"  {label}: {wall:.1f}s", flush=True)
    return data


def make_pipeline(work: Path, steps: int) -> Path:
    from sweep.data.dataset import make_dataset
    from sweep.odapi import render
    from sweep.odapi.workspace import init_workspace

    info = make_dataset(work / "ws" / "annotations")  # the demo's data
    pipe = init_workspace(work / "ws", dataset=info)
    cfg = render.render(render.load_pipeline(pipe), {"num_steps": steps})
    out = work / "pipeline.config"
    render.write_pipeline(cfg, out)
    return out


def f(x: Any, nd: int = 1) -> str:
    return fmt(x, nd)


def ratio(a: Any, b: Any) -> str:
    try:
        return f"{a / b:.2f}x"
    except (TypeError, ZeroDivisionError):
        return "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600, help="the demo's [%(default)s]")
    p.add_argument("--eval-every", type=int, default=150, help="the demo's [%(default)s]")
    p.add_argument("--out", type=Path, default=HERE.parent / "results" / "trial_cost.md")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["import", "train", "eval", "trial", "cuts"],
                   help="parts to leave out (cuts = the variant runs)")
    p.add_argument("--trials", nargs="*", default=["before", "base"],
                   choices=["before", "base", "cut", "warm"],
                   help="trial variants: before = the path before the cuts (grappler on, "
                   "a new eval trace per evaluation); base = today's path; cut = "
                   "num_visualizations 0 + grappler off; warm = eval warm-up on the step-0 "
                   "checkpoint (--eval-initial) [before base]")
    p.add_argument("--more", action="store_true",
                   help="also: train threads 2, num_steps_per_iteration=checkpoint_every, "
                   "grappler off in the eval probe")
    p.add_argument("--with-jit", action="store_true", help="also try tf.config.optimizer.set_jit")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--probe", choices=sorted(PROBES), help=argparse.SUPPRESS)
    p.add_argument("--probe-args", help=argparse.SUPPRESS)
    p.add_argument("--probe-out", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if "--worker" in argv:  # wrapper mode: --worker FLAGS -- <sweep.odapi.worker args>
        i = argv.index("--")
        return worker_wrapper(json.loads(argv[argv.index("--worker") + 1]), argv[i + 1:])
    a = p.parse_args(argv)
    if a.probe:
        result = PROBES[a.probe](json.loads(a.probe_args))
        Path(a.probe_out).write_text(json.dumps(result, indent=1))
        return 0

    work = Path(tempfile.mkdtemp(prefix="trial_cost_"))
    print(f"work dir {work}", flush=True)
    pipeline = make_pipeline(work, a.steps)
    every = a.eval_every if 0 < a.eval_every < a.steps else a.steps
    from sweep.run.trial import plan_steps

    ck_every, spi = plan_steps(a.steps, every)
    R: dict[str, Any] = {"steps": a.steps, "eval_every": every, "checkpoint_every": ck_every,
                         "steps_per_iteration": spi, "uptime_before": uptime(),
                         "started": time.strftime("%Y-%m-%d %H:%M:%S"), "nproc": os.cpu_count()}
    cuts = "cuts" not in a.skip
    t_all = time.time()

    if "import" not in a.skip:
        R["import"] = run_probe("import", {}, work, "import")
        if cuts:
            R["import_log0"] = run_probe("import", {}, work, "import_log0",
                                         env={"TF_CPP_MIN_LOG_LEVEL": "0"})

    def train_args(name: str, **kw: Any) -> dict[str, Any]:
        d = {"pipeline": str(pipeline), "model_dir": str(work / name), "threads": 1,
             "steps": a.steps, "steps_per_iteration": spi, "checkpoint_every": ck_every}
        d.update(kw)
        return d

    if "train" not in a.skip or "eval" not in a.skip:
        R["train"] = run_probe("train", train_args("train_base"), work, "train_base")
        if cuts and "train" not in a.skip:
            R["train_grappler_off"] = run_probe(
                "train", train_args("train_nogr", grappler_off=True), work, "train_grappler_off")
            if a.more:
                R["train_threads2"] = run_probe(
                    "train", train_args("train_t2", threads=2), work, "train_threads2")
                R["train_spi_all"] = run_probe(
                    "train", train_args("train_spi", steps_per_iteration=ck_every), work,
                    "train_spi_all")
            if a.with_jit:
                R["train_jit"] = run_probe("train", train_args("train_jit", jit=True), work,
                                           "train_jit")

    if "eval" not in a.skip:
        import glob

        ckpts = sorted(glob.glob(str(work / "train_base" / "ckpt-*.index")),
                       key=lambda s: int(s.rsplit("-", 1)[1].split(".")[0]))
        ckpts = [c[: -len(".index")] for c in ckpts]
        mid, last = ckpts[-2] if len(ckpts) > 2 else ckpts[-1], ckpts[-1]
        runs = [(mid, 10), (last, 10), (last, 0), (last, 10), (last, 0)] if cuts else \
            [(mid, 10), (last, 10)]
        ev = {"pipeline": str(pipeline), "threads": 1, "runs": runs,
              "out_dir": str(work / "eval_base")}
        R["eval"] = run_probe("eval", ev, work, "eval_base")
        if cuts:
            R["eval_reuse"] = run_probe(
                "eval", {**ev, "reuse_trace": True, "runs": runs[:2],
                         "out_dir": str(work / "eval_reuse")}, work, "eval_reuse")
        if cuts and a.more:
            R["eval_grappler_off"] = run_probe(
                "eval", {**ev, "grappler_off": True, "runs": runs[:2],
                         "out_dir": str(work / "eval_nogr")}, work, "eval_grappler_off")

    if "trial" not in a.skip:
        tr = {"pipeline": str(pipeline), "eval_every": every, "threads": 1}
        if "before" in a.trials:
            R["trial_before"] = run_probe(
                "trial", {**tr, "root": str(work / "exp_before"), "worker_flags": {
                    "graph_optimizer": "on", "no_eval_reuse": True}}, work, "trial_before")
        if "base" in a.trials:
            R["trial"] = run_probe("trial", {**tr, "root": str(work / "exp_base")}, work,
                                   "trial_base")
        if cuts and "cut" in a.trials:
            R["trial_cut"] = run_probe(
                "trial", {**tr, "root": str(work / "exp_cut"), "num_visualizations": 0,
                          "worker_flags": {"grappler_off": True}}, work, "trial_cut")
        if cuts and "warm" in a.trials:
            R["trial_warm"] = run_probe(
                "trial", {**tr, "root": str(work / "exp_warm"),
                          "worker_flags": {"eval_initial": True}}, work, "trial_warm")
    R["uptime_after"] = uptime()
    R["total_s"] = time.time() - t_all
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(R, indent=1))
    md = report(R)
    a.out.write_text(md)
    print(md)
    print(f"wrote {a.out} and {a.out.with_suffix('.json')}")
    if not a.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


def trial_summary(R: dict[str, Any]) -> list[str]:
    """Before vs now, per trial: wall, steady-state share, and the training it did."""
    rows = [(k, R.get(k)) for k in ("trial_before", "trial")]
    rows = [(k, t) for k, t in rows if t and not t.get("failed") and t.get("steady_share")]
    if not rows:
        return []
    L = ["", "## A demo trial, before and after the cuts", "",
         "| path | wall s | steady step s | steady-state training | final train loss | "
         "last eval mAP@.50 | last eval mAP |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, t in rows:
        last = t["eval_metrics"][-1] if t.get("eval_metrics") else {}
        tail = [v for _, v in t["loss"][-5:]]
        L.append(f"| {'before' if key == 'trial_before' else 'now'} | {f(t['wall_s'])} | "
                 f"{f(t['steady_step_s'], 3)} | {100 * t['steady_share']:.0f}% | "
                 f"{f(statistics.mean(tail) if tail else None, 3)} (mean of last 5) | "
                 f"{f(last.get('DetectionBoxes_Precision/mAP@.50IOU'), 3)} | "
                 f"{f(last.get('DetectionBoxes_Precision/mAP'), 3)} |")
    if len(rows) == 2:
        (_, b), (_, n) = rows
        L += ["", f"Per-trial wall: {ratio(n['wall_s'], b['wall_s'])} of before. Train loss "
              "every 10 steps, before -> now (no seed is fixed in the OD API, so runs differ "
              "by their random initialisation): " + ", ".join(
                  f"{sb}: {vb:.2f} -> {vn:.2f}" for (sb, vb), (_, vn)
                  in list(zip(b["loss"], n["loss"], strict=False))[::max(1, len(b["loss"]) // 6)])]
    return L + [""]


def report(R: dict[str, Any]) -> str:
    L = [f"# Trial cost breakdown ({R['started']})", "",
         f"the demo's tiny SSD MobileNet v2 (sweep/odapi/templates), {R['steps']} steps, eval every "
         f"{R['eval_every']} (checkpoint_every={R['checkpoint_every']}, "
         f"num_steps_per_iteration={R['steps_per_iteration']}), the demo's data, "
         f"TF intra/inter-op threads 1 per process (as TrialSpec.threads=1), {R['nproc']} cores.",
         "", f"Load before: `{R['uptime_before']}`  ", f"Load after: `{R['uptime_after']}`", ""]
    tr = R.get("train") or {}
    step = tr.get("steady_step_s")
    rows: list[tuple[str, Any, str]] = []
    im = R.get("import") or {}
    if im and not im.get("failed"):
        rows += [("process start -> main (interpreter + sweep)", im.get("interp_to_main_s"), ""),
                 ("import tensorflow (+ compat patch)", im.get("import_tf_s"), ""),
                 ("import OD API modules", im.get("import_odapi_s"), ""),
                 ("import probe process wall", im.get("process_wall_s"), "")]
    if tr and not tr.get("failed"):
        rows += [("train: model build (Keras object, no variables yet)", tr["build_s"], ""),
                 ("train: input pipeline + step-0 checkpoint", tr["setup_s"], ""),
                 ("train: first iteration (tracing + first "
                  f"{R['steps_per_iteration']} steps)", tr["first_iteration_s"], ""),
                 ("train: fixed part of first iteration (tracing, first-call)",
                  tr["first_step_fixed_s"], ""),
                 ("train: steady-state per step", step, ""),
                 (f"train: steady-state x {R['steps']} steps", tr["steady_train_s"], ""),
                 ("train: whole train_loop", tr["train_loop_s"], ""),
                 ("train: probe process wall (import + train_loop)", tr["process_wall_s"], "")]
    ev = R.get("eval") or {}
    if ev and not ev.get("failed"):
        rows += [("eval: model build", ev["build_s"], ""),
                 ("eval: eval input pipeline", ev["eval_input_s"], "")]
        for i, r in enumerate(ev["runs"]):
            rows.append((f"eval #{i + 1} ({r['checkpoint']}, step {r['step']}, "
                         f"num_visualizations={r['num_visualizations']}): eager_eval_loop",
                         r["eval_loop_s"],
                         f"to first image {f(r['to_first_image_s'])} s, {r['images']} images "
                         f"at {f(r['per_image_s'], 3)} s, drawing {f(r['draw_s'], 2)} s, "
                         f"COCO evaluate {f(r['coco_evaluate_s'], 2)} s, restore "
                         f"{f(r['restore_s'], 2)} s"))
    for key, label in (("trial_before", "trial (TrialRunner, before: grappler on, eval re-traced)"),
                       ("trial", "trial (TrialRunner, today's path)"),
                       ("trial_cut", "trial with cuts (num_visualizations 0 + grappler off)"),
                       ("trial_warm", "trial with eval warm-up on the step-0 checkpoint")):
        t = R.get(key) or {}
        if t and not t.get("failed"):
            ev_txt = "; ".join(
                f"step {e['step']}: ckpt at {f(e['checkpoint_written_s'])} s, eval start "
                f"{f(e['eval_started_s'])} s (waited {f(e['waited_for_eval_s'])} s), took "
                f"{f(e['eval_s'])} s" for e in t["evals"] if e["step"] > 0 or e["eval_s"])
            rows.append((f"{label}: wall to done", t["wall_s"],
                         f"first train summary at {f(t['train_first_summary_s'])} s, last at "
                         f"{f(t['train_last_summary_s'])} s; {ev_txt}"))
    L += ["## Breakdown", "", "| row | seconds | ratio to steady step | detail |",
          "| --- | ---: | ---: | --- |"]
    for name, sec, detail in rows:
        L.append(f"| {name} | {f(sec)} | {ratio(sec, step)} | {detail} |")
    t = R.get("trial") or {}
    if t and step and not t.get("failed"):
        L += ["", f"Steady-state training is {f(tr['steady_train_s'])} s of a "
              f"{f(t['wall_s'])} s trial ({100 * tr['steady_train_s'] / t['wall_s']:.0f}%); "
              f"the rest is fixed cost.", ""]
    L += trial_summary(R)
    # Cuts
    L += ["## Cuts, measured against today's path in this run", "",
          "| cut | before | after | after/before | note |", "| --- | ---: | ---: | ---: | --- |"]

    def cut(name: str, before: Any, after: Any, note: str = "") -> None:
        L.append(f"| {name} | {f(before, 2)} | {f(after, 2)} | {ratio(after, before)} | {note} |")

    im0 = R.get("import_log0") or {}
    if im and im0 and not im0.get("failed"):
        cut("TF_CPP_MIN_LOG_LEVEL 0 -> 2 (import s; patch() already sets 2)",
            im0.get("import_total_s"), im.get("import_total_s"))
    for key, name in (("train_grappler_off", "grappler off (disable_meta_optimizer), train"),
                      ("train_threads2", "train intra/inter-op threads 1 -> 2 (alone)"),
                      ("train_spi_all", "num_steps_per_iteration = checkpoint_every"),
                      ("train_jit", "tf.config.optimizer.set_jit(True), train")):
        v = R.get(key) or {}
        if tr and v and not v.get("failed"):
            cut(f"{name}: first iteration s", tr["first_iteration_s"], v["first_iteration_s"])
            cut(f"{name}: steady step s", tr["steady_step_s"], v["steady_step_s"], "")
            cut(f"{name}: train_loop s", tr["train_loop_s"], v["train_loop_s"])
        elif v.get("failed"):
            L.append(f"| {name} | | failed | | see {v.get('log')} |")
    if ev and not ev.get("failed") and len(ev["runs"]) >= 5:
        r = ev["runs"]
        with_viz = statistics.mean([r[1]["eval_loop_s"], r[3]["eval_loop_s"]])
        no_viz = statistics.mean([r[2]["eval_loop_s"], r[4]["eval_loop_s"]])
        cut("eval num_visualizations 10 -> 0: eager_eval_loop s (mean of 2 each, "
            "same ckpt)", with_viz, no_viz,
            f"drawing itself {f(r[1]['draw_s'], 2)} s")
        cut("second eval vs first eval (re-tracing: eager_eval_loop makes a new tf.function "
            "each call): to first image s", r[0]["to_first_image_s"], r[1]["to_first_image_s"])
    eg = R.get("eval_grappler_off") or {}
    if ev and eg and not eg.get("failed"):
        for i in range(2):
            cut(f"grappler off, eval #{i + 1} eager_eval_loop s", ev["runs"][i]["eval_loop_s"],
                eg["runs"][i]["eval_loop_s"])
    er = R.get("eval_reuse") or {}
    if ev and er and not er.get("failed") and not ev.get("failed"):
        cut("eval trace reused (sweep.odapi.worker._reuse_eval_trace): eval #2 to first image s",
            ev["runs"][1]["to_first_image_s"], er["runs"][1]["to_first_image_s"])
        cut("eval trace reused: eval #2 eager_eval_loop s", ev["runs"][1]["eval_loop_s"],
            er["runs"][1]["eval_loop_s"])
    tc = R.get("trial_cut") or {}
    if t and tc and not tc.get("failed") and not t.get("failed"):
        cut("whole trial wall s (cuts: num_visualizations 0 + grappler off)", t["wall_s"],
            tc["wall_s"])
    tw = R.get("trial_warm") or {}
    if t and tw and not tw.get("failed") and not t.get("failed"):
        cut("whole trial wall s (eval warm-up on the step-0 checkpoint)", t["wall_s"],
            tw["wall_s"])
    L += ["", f"Benchmark total: {f(R['total_s'])} s.", ""]
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
