"""The `sweep` command line."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent
DEMO_SPACE = PACKAGE_ROOT.parent / "search_spaces" / "demo_tiny.yaml"

EPILOG = """\
examples:
  sweep demo                                   # synthetic data + 4-trial sweep on a local Ray
  sweep validate search_spaces/ssd_resnet50_v1_fpn_640x640.yaml \\
      workspace/training_demo/models/my_ssd_resnet50_v1_fpn/pipeline.config
  sweep run --space search_spaces/ssd_resnet50_v1_fpn_640x640.yaml \\
      --pipeline workspace/training_demo/models/my_ssd_resnet50_v1_fpn/pipeline.config \\
      --name resnet-lr --num-trials 20 --gpus-per-trial 1
  sweep status resnet-lr        sweep report resnet-lr        sweep export resnet-lr
  sweep resume resnet-lr        tensorboard --logdir experiments/resnet-lr
"""


def _add_run_options(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    g = p.add_argument_group("sweep")
    g.add_argument("--name", help="experiment name (folder under --storage)"
                   + ("; default demo-<date>-<time>" if demo else "; default <space>-<date>-<time>"))
    g.add_argument("--storage", type=Path, default=Path("experiments"),
                   help="where experiments live (a shared path on a cluster) [%(default)s]")
    g.add_argument("--num-trials", type=int, default=4, help="trials to run [%(default)s]")
    g.add_argument("--max-concurrent", type=int, default=2,
                   help="trials running at once [%(default)s]")
    g.add_argument("--sampler", default="tpe",
                   help="tpe, random, cmaes, grid (all-discrete spaces), qmc, nsga2 (two metrics)."
                        " tpe samples at random for the first quarter of --num-trials (2-10"
                        " trials, known points included), then models the results; with"
                        " --max-concurrent > 1 it gives concurrent trials different suggestions"
                        " (constant liar) [%(default)s]")
    g.add_argument("--scheduler", default="asha",
                   help="fifo, asha or median (early stopping on the first metric; training"
                        " waits at each evaluation for the decision) [%(default)s]")
    g.add_argument("--metric", action="append", dest="metrics",
                   help="metric to optimise: mAP, mAP_50, AR_100, total_loss or an OD API tag;"
                        " repeat for multi-objective [mAP]")
    g.add_argument("--mode", action="append", dest="modes",
                   help="max or min, one per --metric [max for mAP, min for losses]")
    g.add_argument("--time-budget", type=float, help="stop starting trials after this many minutes")
    g.add_argument("--step-budget", type=int, help="stop after this many train steps in total")
    g.add_argument("--seed", type=int, default=0, help="sampler seed [%(default)s]")
    g.add_argument("--eval-every", type=int, default=20 if demo else 0,
                   help="train steps between evaluations, the early-stopping points"
                        " (0 = at the end only) [%(default)s]")
    g.add_argument("--keep-checkpoints", type=int, default=3,
                   help="last N checkpoints kept per trial (+ the best) [%(default)s]")
    g.add_argument("--max-failures", type=int, default=2,
                   help="retries of a killed/crashed trial from its checkpoint [%(default)s]")
    g.add_argument("--max-consecutive-failures", type=int, default=3,
                   help="failed trials in a row that stop the sweep [%(default)s]")
    g.add_argument("--study-url", help="Optuna storage URL (e.g. postgresql+psycopg://user@host/db;"
                   " each new experiment gets a new study in it). Keep the password off the command"
                   " line: set PGPASSWORD, or the whole URL in $SWEEP_STUDY_URL; it is never"
                   " written to disk [$SWEEP_STUDY_URL, else a sqlite file in the experiment]")
    r = p.add_argument_group("resources")
    r.add_argument("--cpus-per-trial", type=float, default=1.0, help="[%(default)s]")
    r.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="fractions allowed, e.g. 0.5 [%(default)s]")
    r.add_argument("--address", help="an existing Ray cluster (e.g. 127.0.0.1:6379 or 'auto');"
                   " default: start an embedded local Ray")
    r.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    r.add_argument("--dashboard-host", default="127.0.0.1",
                   help="interface the Ray dashboard binds to [%(default)s]")
    r.add_argument("--declare-gpus", type=int,
                   help="GPUs to declare to the embedded Ray (to test placement on a CPU machine)")
    p.add_argument("--overwrite", action="store_true",
                   help="if the experiment exists, move it aside (<name>.old-<time>) and start anew")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sweep",
        description="Hyperparameter sweeps for the TensorFlow 2 Object Detection API: Ray Tune "
                    "schedules OD API train+eval trials, Optuna samples pipeline.config "
                    "parameters, reports end in the best config.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("demo", help="make synthetic data in workspace/ and run a small sweep",
                       description="Create a synthetic traffic-sign dataset (TFRecords) and a "
                       "tiny SSD MobileNet pipeline.config in the OD API tutorial layout "
                       "(workspace/training_demo), then sweep it on a local Ray and write "
                       "reports/<experiment>/. About 6-10 minutes on 2 CPU cores.")
    d.add_argument("--workspace", type=Path, default=Path("workspace/training_demo"),
                   help="tutorial workspace folder [%(default)s]")
    d.add_argument("--space", type=Path, default=DEMO_SPACE, help="search space [%(default)s]")
    d.add_argument("--force", action="store_true",
                   help="replace demo data / pipeline.config that differ from what demo writes")
    _add_run_options(d, demo=True)

    r = sub.add_parser("run", help="run a sweep", description="Validate, then run a sweep.")
    r.add_argument("--space", type=Path, required=True, help="search space YAML")
    r.add_argument("--pipeline", type=Path, required=True, help="base pipeline.config")
    _add_run_options(r)

    v = sub.add_parser("validate", help="check a search space against a pipeline.config",
                       description="Run every pre-launch check (YAML, types, ranges, parameter "
                       "paths for this architecture, label map vs num_classes, TFRecords, "
                       "fine-tune checkpoint). Exit 0 when all pass, 2 otherwise.")
    v.add_argument("space", type=Path)
    v.add_argument("pipeline", type=Path)
    v.add_argument("--storage", type=Path, default=Path("experiments"),
                   help="where `best:EXPERIMENT` fine-tune checkpoints are looked up [%(default)s]")
    v.add_argument("--no-data", action="store_true",
                   help="check the space and config only (skip label map, TFRecords, checkpoints)")

    for name, helptext in (("status", "table of an experiment's trials"),
                           ("report", "write reports/<experiment>/"),
                           ("resume", "continue an interrupted sweep"),
                           ("export", "export a trial's checkpoint as a SavedModel")):
        s = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        s.add_argument("experiment", help="experiment name or folder")
        s.add_argument("--storage", type=Path, default=Path("experiments"), help="[%(default)s]")
        if name == "report":
            s.add_argument("--out", type=Path, help="output folder [reports/<experiment>]")
            s.add_argument("--fine-tune-from-best", action="store_true",
                           help="point best/pipeline.config's fine_tune_checkpoint at the best "
                                "trial's best checkpoint (continue the chain)")
        if name == "export":
            s.add_argument("--trial", help="trial name or number (default: the best trial)")
            s.add_argument("--out", type=Path, help="output folder [reports/<experiment>/exported/<trial>]")
            s.add_argument("--input-type", default="image_tensor",
                           choices=["image_tensor", "encoded_image_string_tensor", "tf_example"],
                           help="the SavedModel's input, as exporter_main_v2.py [%(default)s]")
        if name == "status":
            s.add_argument("--watch", type=float, metavar="SECONDS",
                           help="refresh every SECONDS until the sweep finishes")
        if name == "resume":
            s.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
            s.add_argument("--no-dashboard", action="store_true")
            s.add_argument("--no-report", action="store_true")
    return p


def _settings(a: argparse.Namespace, space: Path, pipeline: Path, default_name: str) -> Any:
    from sweep.settings import DEFAULT_MODES, SweepSettings, metric_tag
    from sweep.study import cli_url

    tags = [metric_tag(m) for m in (a.metrics or ["mAP"])]
    modes = a.modes or [DEFAULT_MODES.get(t, "max") for t in tags]
    return SweepSettings(
        name=a.name or default_name, space=space, pipeline=pipeline, storage=a.storage,
        num_trials=a.num_trials, max_concurrent=a.max_concurrent, sampler=a.sampler,
        scheduler=a.scheduler, metrics=tags, modes=modes,
        time_budget_s=a.time_budget * 60 if a.time_budget else None, step_budget=a.step_budget,
        seed=a.seed, cpus_per_trial=a.cpus_per_trial, gpus_per_trial=a.gpus_per_trial,
        eval_every=a.eval_every, keep_checkpoints=a.keep_checkpoints,
        max_failures=a.max_failures, max_consecutive_failures=a.max_consecutive_failures,
        address=a.address, study_url=cli_url(a.study_url), dashboard=not a.no_dashboard,
        dashboard_host=a.dashboard_host, declare_gpus=a.declare_gpus,
        model_name=pipeline.parent.name)


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def prepare_experiment(settings: Any, *, overwrite: bool) -> Any:
    """Create the experiment folder with copies of its inputs; never clobber an existing one."""
    from sweep.experiment import Experiment, write_json
    from sweep.study import new_study_name

    exp = Experiment(settings.experiment_root)
    if exp.root.exists() and any(exp.root.iterdir()):
        if not overwrite:
            raise ConfigError(f"{exp.root}: experiment '{settings.name}' already exists. Continue "
                              f"it with `sweep resume {settings.name}`, pick another --name, or "
                              "pass --overwrite to move it aside and start anew")
        aside = exp.root.with_name(f"{exp.root.name}.old-{_stamp()}")
        exp.root.rename(aside)
        print(f"moved the existing experiment to {aside}")
    exp.root.mkdir(parents=True, exist_ok=True)
    settings.study_name = new_study_name(settings.name, settings.storage_url())
    shutil.copyfile(settings.pipeline, exp.base_pipeline)
    shutil.copyfile(settings.space, exp.space_path)
    write_json(exp.settings_path, settings.to_json())
    return exp


def _dataset_info(pipeline_path: Path) -> dict[str, Any]:
    """Example counts and classes for the report (the seed's "Dataset" and "Classes")."""
    from sweep import render
    from sweep.tfrecord import read_records

    cfg = render.load_pipeline(pipeline_path)
    out: dict[str, Any] = {"num_classes": _num_classes(cfg)}
    for key, reader in (("train_examples", cfg.train_input_reader),
                        ("eval_examples", cfg.eval_input_reader[0] if cfg.eval_input_reader
                         else None)):
        if reader is None:
            continue
        try:
            out[key] = sum(sum(1 for _ in read_records(p))
                           for p in reader.tf_record_input_reader.input_path)
        except (OSError, ValueError):
            out[key] = None
    return out


def _num_classes(cfg: Any) -> int | None:
    arch = cfg.model.WhichOneof("model")
    return getattr(getattr(cfg.model, arch), "num_classes", None) if arch else None


def _run(settings: Any, *, overwrite: bool, report: bool, resume: bool = False) -> int:
    from sweep import render, search, space, validate

    if not resume:
        settings.check()
        validate.check(settings.space, settings.pipeline, storage=settings.storage)
        search.check(settings, space.load_space(settings.space))  # sampler/scheduler vs space
        settings.dataset = _dataset_info(settings.pipeline)
        exp = prepare_experiment(settings, overwrite=overwrite)
    else:
        from sweep.experiment import Experiment

        exp = Experiment(settings.experiment_root)
    sp = space.load_space(exp.space_path)
    base = render.load_pipeline(exp.base_pipeline)
    steps = int(sp.constants().get("num_steps", render.num_steps(base)))

    from sweep import tune_backend

    print(f"experiment {exp.name}: {exp.root}", flush=True)
    t0 = time.time()
    # The base config's own values are the first known point (the report's baseline).
    summary = tune_backend.run_sweep(settings, sp, sp.points_to_evaluate(base), steps,
                                     resume=resume)
    from sweep.experiment import read_json, write_json

    data = read_json(exp.settings_path, {})
    data.update(finished=True, finished_at=time.time(),
                wall_time_s=time.time() - t0 + float(data.get("wall_time_s", 0) if resume else 0),
                stopped_reason=summary["stopped_reason"])
    write_json(exp.settings_path, data)
    from sweep.status import render_status

    print(render_status(exp))
    if report:
        from sweep import report as report_mod

        out = report_mod.write_report(exp)
        print(f"report: {out}/report.html  (leaderboard.csv, leaderboard.md, best/pipeline.config)")
    return 3 if summary["stopped_reason"] and "in a row" in summary["stopped_reason"] else 0


def cmd_demo(a: argparse.Namespace) -> int:
    from sweep.dataset import make_dataset
    from sweep.workspace import init_workspace

    ws = a.workspace
    print(f"writing the synthetic dataset to {ws / 'annotations'} ...", flush=True)
    info = make_dataset(ws / "annotations", images_dir=ws / "images", overwrite=a.force)
    pipeline = init_workspace(ws, dataset=info, overwrite=a.force)
    print(f"base config: {pipeline}  ({info.n_train} train / {info.n_eval} eval images, "
          f"{len(info.class_names)} classes)", flush=True)
    settings = _settings(a, a.space, pipeline, f"demo-{_stamp()}")
    return _run(settings, overwrite=a.overwrite, report=not a.no_report)


def cmd_run(a: argparse.Namespace) -> int:
    settings = _settings(a, a.space, a.pipeline, f"{a.space.stem}-{_stamp()}")
    return _run(settings, overwrite=a.overwrite, report=not a.no_report)


def cmd_validate(a: argparse.Namespace) -> int:
    from sweep import validate

    validate.check(a.space, a.pipeline, storage=a.storage, check_data=not a.no_data)
    print(f"ok: {a.space} is valid for {a.pipeline}")
    return 0


def _experiment(a: argparse.Namespace) -> Any:
    from sweep.experiment import find_experiment

    return find_experiment(a.experiment, a.storage)


def cmd_status(a: argparse.Namespace) -> int:
    from sweep.status import render_status

    exp = _experiment(a)
    while True:
        print(render_status(exp), flush=True)
        if not a.watch or exp.settings().get("finished"):
            return 0
        time.sleep(a.watch)
        print()


def cmd_report(a: argparse.Namespace) -> int:
    from sweep import report

    out = report.write_report(_experiment(a), a.out, fine_tune_from_best=a.fine_tune_from_best)
    print(f"report: {out}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from sweep import export

    out = export.export_trial(_experiment(a), a.trial, a.out, input_type=a.input_type)
    print(f"SavedModel: {out}")
    return 0


def cmd_resume(a: argparse.Namespace) -> int:
    from sweep.settings import SweepSettings

    exp = _experiment(a)
    settings = SweepSettings.from_json(exp.settings())
    settings.storage = exp.root.parent
    if a.address:
        settings.address = a.address
    if a.no_dashboard:
        settings.dashboard = False
    return _run(settings, overwrite=False, report=not a.no_report, resume=True)


COMMANDS = {"demo": cmd_demo, "run": cmd_run, "validate": cmd_validate, "status": cmd_status,
            "report": cmd_report, "export": cmd_export, "resume": cmd_resume}


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return COMMANDS[a.command](a)
    except ConfigError as e:
        print(f"sweep {a.command}: nothing was launched; fix these first:", file=sys.stderr)
        for problem in e.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"sweep {a.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nsweep {a.command}: interrupted. Continue with `sweep resume <experiment>`.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
