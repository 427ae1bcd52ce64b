"""The `sweep` command line."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.core.errors import ConfigError
from sweep.odapi.worker import GRAPH_OPTIMIZER

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
  sweep resume resnet-lr        sweep dashboard resnet-lr     (optuna-dashboard, 127.0.0.1)
  tensorboard --logdir experiments/resnet-lr
  sweep data voc images/ --out workspace/training_demo/annotations     # also csv, gtsrb
  sweep data inspect workspace/training_demo/annotations/train.record
  sweep init --pretrained PRE_TRAINED_MODEL_DIR --annotations workspace/training_demo/annotations \\
      --name my_model --batch-size 8
"""


VERIFY_HELP = ("TFRecord checks before launch: 'sample' reads every record's framing and "
               "checks the data checksum of a sample (seconds for 50,000 records), 'full' checks "
               "every record's data (reads every byte; ~1 GB/s) [%(default)s]")


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
                        " trials, known points included; all of them up to 8 trials, where a"
                        " model gained nothing on a recorded table), then models the results; with"
                        " --max-concurrent > 1 it gives concurrent trials different suggestions"
                        " (constant liar) [%(default)s]")
    g.add_argument("--scheduler", default="asha",
                   help="fifo, asha or median (early stopping on the first metric; training"
                        " waits at each evaluation for the decision; the base config's trial is "
                        "never stopped, its results still fill the rungs), or pbt: "
                        "population-based training, where worse trials continue from better "
                        "trials' checkpoints with perturbed values of the space's `perturb:` "
                        "parameters (the sampler is not used: known points, then random draws, "
                        "make the population); pb2: the same, with Ray's PB2 (a Gaussian-"
                        "process bandit) picking the new values of continuous parameters "
                        "[%(default)s]")
    g.add_argument("--perturbation-interval", type=int, default=0, metavar="STEPS",
                   help="pbt/pb2: train steps between exploit/explore, a multiple of --eval-every "
                        "(0 = --eval-every) [%(default)s]")
    g.add_argument("--pbt-sync", action="store_true",
                   help="pbt/pb2: synchronous PBT: every trial waits at each perturbation "
                        "interval until all have reached it, then the bottom quarter clones the "
                        "top quarter. Every interval then clones (the default, asynchronous, "
                        "compares a trial with the others' last results and skips a clone when "
                        "the better trial was not saved at a perturbation yet: in a population "
                        "of 2-4 many intervals pass without one), at the cost of restarting "
                        "every trial's OD API jobs at each interval")
    g.add_argument("--metric", action="append", dest="metrics",
                   help="metric to optimise: mAP, mAP_50, AR_100, total_loss or an OD API tag;"
                        " repeat for multi-objective [mAP]")
    g.add_argument("--mode", action="append", dest="modes",
                   help="max or min, one per --metric [max for mAP, min for losses]")
    g.add_argument("--time-budget", type=float, help="stop starting trials after this many minutes")
    g.add_argument("--step-budget", type=int, help="stop after this many train steps in total")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the sampler and of the trials: each trial's own seed is drawn "
                        "from it and its number, recorded in its folder, and seeds Python, "
                        "NumPy and TensorFlow in its train job (initialisation, data order, "
                        "augmentation) [%(default)s]")
    g.add_argument("--confirm", type=int, default=2 if demo else 0, metavar="SEEDS",
                   help="after the search, retrain the top --confirm-top configs and the base "
                        "config with SEEDS new seeds each, to the end of training; the verdict "
                        "then rests on their means (0 = no confirmation; see `sweep confirm`) "
                        "[%(default)s]")
    g.add_argument("--confirm-top", type=int, default=1, metavar="K",
                   help="configs to confirm besides the base [%(default)s]")
    g.add_argument("--deterministic", action="store_true",
                   help="TensorFlow op determinism in every train job "
                        "(tf.config.experimental.enable_op_determinism): with the same seed, "
                        "the same config trains to the same losses on the CPU; slower input "
                        "pipelines. On GPUs see docs (not every op has a deterministic kernel)")
    g.add_argument("--eval-every", type=int, default=150 if demo else 0,
                   help="train steps between evaluations, the early-stopping points"
                        " (0 = at the end only) [%(default)s]")
    g.add_argument("--keep-checkpoints", type=int, default=3,
                   help="last N checkpoints kept per trial (+ the best) [%(default)s]")
    g.add_argument("--max-failures", type=int, default=2,
                   help="restarts of a trial from its checkpoint, in total, whatever failed "
                        "(process killed/crashed/out of memory, stalled, Ray actor or node "
                        "lost) [%(default)s]")
    g.add_argument("--max-consecutive-failures", type=int, default=3,
                   help="failed trials in a row that stop the sweep [%(default)s]")
    g.add_argument("--stall-minutes", type=float, default=30.0,
                   help="a trial whose training writes no summary and no checkpoint, or whose "
                        "eval job records no evaluation of a waiting checkpoint and logs nothing, "
                        "for this long is stalled: that job is restarted (training from its "
                        "checkpoint), within --max-failures (0 = never). No other clock ends a "
                        "trial [%(default)s]")
    g.add_argument("--study-url", help="Optuna storage URL (e.g. postgresql+psycopg://user@host/db;"
                   " each new experiment gets a new study in it). Keep the password off the command"
                   " line: set PGPASSWORD, or the whole URL in $SWEEP_STUDY_URL; it is never"
                   " written to disk [$SWEEP_STUDY_URL, else a sqlite file in the experiment]")
    from sweep.run import trackers  # no mlflow/wandb import: the help text and env names only

    t = p.add_argument_group("experiment trackers")
    t.add_argument("--mlflow", metavar="URI", help=trackers.option_help("mlflow"))
    t.add_argument("--wandb", metavar="PROJECT", help=trackers.option_help("wandb"))
    r = p.add_argument_group("resources")
    r.add_argument("--cpus-per-trial", type=float, default=1.0, help="[%(default)s]")
    r.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="fractions allowed, e.g. 0.5 [%(default)s]")
    r.add_argument("--eval-device", choices=["gpu", "cpu"], default="gpu",
                   help="where each trial's eval job runs: 'gpu' shares the trial's first GPU "
                        "with training (fast evaluations; TF memory growth lets both fit, but "
                        "they compete for memory and time), 'cpu' keeps the GPU for training "
                        "(evaluations of a large model or eval set are then much slower) "
                        "[%(default)s]")
    r.add_argument("--graph-optimizer", choices=GRAPH_OPTIMIZER, default="auto",
                   help="TensorFlow's graph optimizer (grappler) in each trial's jobs: 'auto' "
                        "runs it only on GPU trials, where its layout and fusion passes make "
                        "steps fast; on the CPU it bought nothing for the demo's SSD (off: "
                        "tracing 0.96x, steps 1.01x; benchmarks/results/trial_cost.md) "
                        "[%(default)s]")
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
    p.add_argument("--verify-data", choices=["sample", "full"], default="sample", help=VERIFY_HELP)


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric option: ``low``/``high`` bounds (``*_open``: excluded)."""

    low: float | None = None
    high: float | None = None
    fix: str = "give a number in range"
    low_open: bool = False
    high_open: bool = False
    unit: str = ""  # e.g. " minutes"

    def problem(self, value: float) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        low, high, unit = self.low, self.high, self.unit
        if low is not None and (value < low or (self.low_open and value == low)):
            return f"must be {'>' if self.low_open else '>='} {low:g}{unit}, got {value:g}"
        if high is not None and (value > high or (self.high_open and value == high)):
            return f"must be {'<' if self.high_open else '<='} {high:g}{unit}, got {value:g}"
        return None


SEED_MAX = 2**32 - 1  # numpy's and Optuna's samplers take seeds below 2**32
# Every numeric option of every subcommand, by its option string: checked right after parsing,
# before a command does anything (tests/run/test_interrupt.py walks the parser: none is missing).
RANGES = {
    "--num-trials": Range(1, fix="ask for at least 1 trial"),
    "--max-concurrent": Range(1, fix="use 1 or more"),
    "--perturbation-interval": Range(0, fix="use a number of steps, or 0 for --eval-every"),
    "--time-budget": Range(0, low_open=True, unit=" minutes", fix="give the minutes after which no trial "
                           "starts, or leave it out (no limit)"),
    "--step-budget": Range(0, low_open=True,
                           fix="give the total train steps, or leave it out (no limit)"),
    "--seed": Range(0, SEED_MAX, fix=f"use a seed from 0 to {SEED_MAX}"),
    "--eval-every": Range(0, fix="use 0 (evaluate at the end only) or a number of steps"),
    "--keep-checkpoints": Range(1, fix="use 1 or more (the eval job and retries read the "
                                "last checkpoint)"),
    "--max-failures": Range(0, fix="use 0 (no retries) or more"),
    "--max-consecutive-failures": Range(1, fix="use 1 or more (0 would stop the sweep before "
                                        "any trial failed)"),
    "--stall-minutes": Range(0, unit=" minutes",
                             fix="use 0 to turn stall detection off, or minutes (e.g. 30)"),
    "--cpus-per-trial": Range(0, low_open=True, fix="use e.g. 1"),
    "--gpus-per-trial": Range(0, fix="use 0, 0.5, 1 ..."),
    "--declare-gpus": Range(0, fix="use 0 or more"),
    "--port": Range(0, 65535, fix="use a port from 1 to 65535, or 0 for any free one"),
    "--watch": Range(0, low_open=True, unit=" seconds", fix="give the seconds between refreshes, e.g. 10"),
    "--batch-size": Range(1, fix="use 1 or more (e.g. 8; lower it if the GPU runs out of "
                          "memory)"),
    "--split": Range(0, 1, low_open=True, high_open=True,
                     fix="give the fraction held out for test.record, e.g. 0.1"),
    "--shards": Range(1, fix="use 1 (one file) or more"),
    "--confirm": Range(0, fix="use 0 (no confirmation) or 2 or more seeds per config"),
    "--confirm-top": Range(1, fix="use 1 or more"),
    "--seeds": Range(2, fix="use 2 or more (one seed says nothing about the spread)"),
    "--top": Range(1, fix="use 1 or more"),
}


def numeric_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of ``parser`` (not of its subcommands) that take an int or a float."""
    return [a for a in parser._actions if a.type in (int, float) and a.option_strings]


def check_numbers(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """ConfigError naming each numeric option out of its range (RANGES)."""
    from sweep.core.errors import Problem

    problems = []
    for action in numeric_actions(parser):
        value = getattr(a, action.dest, None)
        rule = RANGES[action.option_strings[-1]]
        why = None if value is None else rule.problem(value)
        if why:
            problems.append(Problem("command line", action.option_strings[-1], why, rule.fix))
    if problems:
        raise ConfigError(problems)


def chosen_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser whose options ``argv`` set: `sweep data csv` -> the csv parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in argv:
                if word in action.choices:
                    rest = argv[argv.index(word) + 1:]
                    return chosen_parser(action.choices[word], rest)
    return parser


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
                       "(workspace/training_demo), then sweep it on a local Ray (4 trials, then 2 "
                       "new seeds each of the best and the base config: --confirm 0 skips "
                       "them) and write reports/<experiment>/.")
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
    v.add_argument("--verify-data", choices=["sample", "full"], default="sample", help=VERIFY_HELP)
    v.add_argument("--no-data", action="store_true",
                   help="check the space and config only (skip label map, TFRecords, checkpoints)")

    for name, helptext in (("status", "table of an experiment's trials"),
                           ("report", "write reports/<experiment>/"),
                           ("resume", "continue an interrupted sweep"),
                           ("export", "export a trial's checkpoint as a SavedModel or a TFLite model"),
                           ("dashboard", "serve optuna-dashboard for an experiment's study")):
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
            s.add_argument("--format", default="saved_model", choices=["saved_model", "tflite"],
                           help="tflite (SSD models): also a .tflite model, both scored on the "
                                "eval records [%(default)s]")
            s.add_argument("--quantize", default="none", choices=["none", "float16", "int8"],
                           help="the TFLite model's weights: int8 is calibrated on training "
                                "images [%(default)s]")
        if name == "dashboard":
            s.add_argument("--port", type=int, default=8080,
                           help="port on 127.0.0.1 (0 = any free one) [%(default)s]")
        if name == "status":
            s.add_argument("--watch", type=float, metavar="SECONDS",
                           help="refresh every SECONDS until the sweep finishes")
        if name == "resume":
            s.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
            s.add_argument("--no-dashboard", action="store_true")
            s.add_argument("--no-report", action="store_true")
    cf = sub.add_parser(
        "confirm", help="retrain the top configs and the base with new seeds",
        description="Retrain the top --top configs of a finished sweep and its base config with "
        "--seeds new seeds each, to the end of training, as tagged trials of the same "
        "experiment (they do not feed the sampler). The report's verdict then rests on the "
        "mean over seeds, with an interval over seeds and eval images. Running it again runs "
        "only what is not finished.")
    cf.add_argument("experiment", help="experiment name or folder")
    cf.add_argument("--storage", type=Path, default=Path("experiments"), help="[%(default)s]")
    cf.add_argument("--seeds", type=int, default=3, help="new seeds per config [%(default)s]")
    cf.add_argument("--top", type=int, default=1,
                    help="the search's top configs to confirm, besides the base [%(default)s]")
    cf.add_argument("--max-concurrent", type=int, default=None,
                    help="trials at once [the sweep's own]")
    cf.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    cf.add_argument("--no-dashboard", action="store_true")
    cf.add_argument("--no-report", action="store_true")
    _add_data_commands(sub)
    n = sub.add_parser(
        "init", help="write models/<name>/pipeline.config for your data and a pre-trained model",
        description="From a pre-trained model as the tutorial downloads it (pipeline.config + "
        "checkpoint/ckpt-0), write models/<name>/pipeline.config with num_classes, label map "
        "and record paths from --annotations, the batch size, fine_tune_checkpoint (type "
        "detection) and use_bfloat16: false, then check it as `sweep validate` does.")
    n.add_argument("--pretrained", required=True, metavar="PATH",
                   help="model-zoo folder, a pipeline.config, or a shipped template name ("
                   "e.g. ssd_resnet50_v1_fpn_640x640: no checkpoint, trains from scratch)")
    n.add_argument("--annotations", type=Path, required=True, metavar="DIR",
                   help="what `sweep data` wrote: label_map.pbtxt, train.record, test.record")
    n.add_argument("--label-map", type=Path, metavar="FILE",
                   help="your own label_map.pbtxt (ids from 1, as the records' class ids) "
                   "[--annotations DIR/label_map.pbtxt]")
    n.add_argument("--name", required=True, help="model folder name under models/")
    n.add_argument("--batch-size", type=int, default=8, help="[%(default)s]")
    n.add_argument("--workspace", type=Path,
                   help="tutorial workspace holding models/ [the folder of --annotations]")
    n.add_argument("--overwrite", action="store_true",
                   help="replace an existing models/<name>/pipeline.config that differs")
    return p


def _add_data_commands(sub: Any) -> None:
    data = sub.add_parser(
        "data", help="convert annotations to TFRecords; inspect TFRecords",
        description="Turn annotated images into the OD API tutorial's annotations/ folder "
        "(label_map.pbtxt, train.record, test.record), or inspect TFRecords.")
    kinds = data.add_subparsers(dest="data_command", metavar="FORMAT", required=True)
    sources = (
        ("voc", "labelImg Pascal VOC XML + images (jpg/png)", "DIR",
         "folder of .xml files (searched recursively); images next to them", "--test-dir"),
        ("csv", "one-row-per-box CSV: filename,width,height,class,xmin,ymin,xmax,ymax", "FILE",
         "the CSV; images in its folder unless --images", "--test-csv"),
        ("gtsrb", "the GTSRB layout: GT-*.csv (semicolon-separated) + PPM images", "DIR",
         "Final_Training/Images (or a folder with one GT-*.csv, e.g. Final_Test/Images)",
         "--test-dir"),
    )
    for name, helptext, metavar, source_help, test_flag in sources:
        c = kinds.add_parser(name, help=helptext, description=f"Convert {helptext} to TFRecords "
                             "and a label map. Bad input stops before anything is written, "
                             "naming the file and line.")
        c.add_argument("source", type=Path, metavar=metavar, help=source_help)
        c.add_argument("--out", type=Path, required=True, metavar="ANNOTATIONS_DIR",
                       help="where label_map.pbtxt and the records go, e.g. "
                            "workspace/training_demo/annotations")
        if name == "csv":
            c.add_argument("--images", type=Path, help="folder of the images [the CSV's folder]")
        split = c.add_mutually_exclusive_group()
        split.add_argument("--split", type=float, default=0.1,
                           help="fraction of the images held out for test.record [%(default)s]"
                           + ("; whole GTSRB tracks go to one side" if name == "gtsrb" else ""))
        split.add_argument(test_flag, type=Path, dest="test", metavar=metavar,
                           help="a separate test set in the same format, instead of --split")
        c.add_argument("--label-map", type=Path,
                       help="impose this label_map.pbtxt (default: "
                       + ("GTSRB's 43 classes" if name == "gtsrb" else
                          "the class names found, sorted, ids from 1") + ")")
        c.add_argument("--shards", type=int, default=1,
                       help="write train.record-00000-of-0000N ... (large sets) [%(default)s]")
        c.add_argument("--seed", type=int, default=0,
                       help="seed of the split and the training order [%(default)s]")
        c.add_argument("--encode", choices=["jpeg", "png"], default="jpeg",
                       help="format for images that are not JPEG/PNG already (PPM...); "
                       "JPEG/PNG bytes are kept as they are [%(default)s]")
        c.add_argument("--skip-bad", action="store_true",
                       help="leave out bad examples (listed in ANNOTATIONS_DIR/skipped.txt) "
                       "instead of stopping")
        c.add_argument("--overwrite", action="store_true",
                       help="replace existing records and label map in --out")
    i = kinds.add_parser("inspect", help="counts, class balance, sizes and problems of TFRecords",
                         description="Examples and boxes, boxes per class (against a label map "
                         "if given), image sizes, box sizes (COCO small/medium/large); flags "
                         "empty, corrupt or out-of-range records. Exit 1 if anything is flagged.")
    i.add_argument("records", nargs="+", type=Path, metavar="RECORD",
                   help="TFRecord files (shards: annotations/train.record-*)")
    i.add_argument("--label-map", type=Path, help="check class ids and names against it")
    i.add_argument("--plot", type=Path, metavar="PNG", help="also draw the distributions here")


def _settings(a: argparse.Namespace, space: Path, pipeline: Path, default_name: str) -> Any:
    from sweep.core.study_url import cli_url
    from sweep.run import trackers
    from sweep.run.settings import DEFAULT_MODES, SweepSettings, metric_tag

    tags = [metric_tag(m) for m in (a.metrics or ["mAP"])]
    modes = a.modes or [DEFAULT_MODES.get(t, "max") for t in tags]
    return SweepSettings(
        name=default_name if a.name is None else a.name, space=space, pipeline=pipeline, storage=a.storage,
        num_trials=a.num_trials, max_concurrent=a.max_concurrent, sampler=a.sampler,
        scheduler=a.scheduler, metrics=tags, modes=modes,
        time_budget_s=None if a.time_budget is None else a.time_budget * 60, step_budget=a.step_budget,
        seed=a.seed, deterministic=a.deterministic, confirm=a.confirm,
        confirm_top=a.confirm_top, cpus_per_trial=a.cpus_per_trial,
        gpus_per_trial=a.gpus_per_trial,
        eval_every=a.eval_every, keep_checkpoints=a.keep_checkpoints,
        max_failures=a.max_failures, max_consecutive_failures=a.max_consecutive_failures,
        stall_minutes=a.stall_minutes, eval_device=a.eval_device,
        graph_optimizer=a.graph_optimizer,
        perturbation_interval=a.perturbation_interval, pbt_sync=a.pbt_sync,
        address=a.address, study_url=cli_url(a.study_url), dashboard=not a.no_dashboard,
        mlflow=trackers.from_env(a.mlflow, "mlflow"), wandb=trackers.from_env(a.wandb, "wandb"),
        dashboard_host=a.dashboard_host, declare_gpus=a.declare_gpus,
        model_name=pipeline.parent.name)


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


@contextlib.contextmanager
def _undone_on_failure(settings: Any) -> Iterator[None]:
    """If the sweep fails before Ray saved a state it could resume from, remove what this run
    created (the experiment folder, storage folders it made) and put back an experiment that
    --overwrite moved aside; never touch anything that was there before."""
    root = settings.experiment_root
    made = root  # the outermost folder this run will create
    while not made.parent.exists() and made.parent != made:
        made = made.parent
    was_empty = root.is_dir() and not any(root.iterdir())
    before = set(root.parent.iterdir()) if root.parent.is_dir() else set()
    try:
        yield
    except BaseException as e:
        from sweep.run import tune_backend

        if getattr(e, "not_ours", False):
            raise  # refused for another driver's experiment: nothing of ours to undo
        if not tune_backend.resumable(root):
            aside = [p for p in root.parent.iterdir() if p not in before
                     and p.name.startswith(f"{root.name}.old-")] if root.parent.is_dir() else []
            if not before or root not in before:  # root is new (or so is the storage folder)
                _remove(made if made.exists() else root)
            elif was_empty:
                for p in root.iterdir():
                    _remove(p)
            elif aside:  # --overwrite moved the old experiment aside: put it back
                _remove(root)
                os.replace(aside[0], root)
            else:
                raise  # refused before anything was written: nothing to undo
            e.undone = True  # type: ignore[attr-defined] - main() says there is no resuming
            print(f"sweep: removed what this run created in {settings.storage}; nothing else "
                  "was changed", file=sys.stderr)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def refuse_existing(settings: Any, *, overwrite: bool) -> None:
    """A new run never takes an experiment another driver runs, nor (without --overwrite) one
    that exists: ConfigError naming the holder or the --name."""
    from sweep.core import lock
    from sweep.core.errors import Problem

    if settings.name in ("", ".", "..") or Path(settings.name).name != settings.name:
        return  # not a folder name: settings.check() says so
    root = settings.experiment_root
    if not (root.is_dir() and any(root.iterdir())):
        return
    lock.check(root)
    if not overwrite:
        raise ConfigError(Problem(
            "command line", "--name", f"experiment '{settings.name}' already exists in {root}",
            f"continue it with `sweep resume {settings.name}`, pick another --name, or pass "
            "--overwrite to move it aside and start anew"))


def prepare_experiment(settings: Any, *, overwrite: bool) -> Any:
    """Create the experiment folder with copies of its inputs; never clobber an existing one."""
    from sweep.core import lock
    from sweep.core.experiment import Experiment, write_json
    from sweep.search.study import new_study_name

    exp = Experiment(settings.experiment_root)
    if exp.root.exists() and any(exp.root.iterdir()):
        refuse_existing(settings, overwrite=overwrite)
        aside = exp.root.with_name(f"{exp.root.name}.old-{_stamp()}")
        exp.root.rename(aside)
        print(f"moved the existing experiment to {aside}")
    exp.root.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(exp.root)
    except ConfigError as e:
        e.not_ours = True  # type: ignore[attr-defined] - another driver's folder: leave it be
        raise
    settings.study_name = new_study_name(settings.name, settings.storage_url())
    shutil.copyfile(settings.pipeline, exp.base_pipeline)
    shutil.copyfile(settings.space, exp.space_path)
    write_json(exp.settings_path, settings.to_json())
    return exp


def _dataset_info(pipeline_path: Path, examples: dict[str, int]) -> dict[str, Any]:
    """Example counts (as validation counted them) and classes, for the report (the seed's
    "Dataset" and "Classes")."""
    from sweep.odapi import render

    cfg = render.load_pipeline(pipeline_path)
    return {"num_classes": _num_classes(cfg),
            "train_examples": examples.get("train_input_reader"),
            "eval_examples": examples.get("eval_input_reader[0]")}


def _num_classes(cfg: Any) -> int | None:
    arch = cfg.model.WhichOneof("model")
    return getattr(getattr(cfg.model, arch), "num_classes", None) if arch else None


def _run(settings: Any, *, overwrite: bool, report: bool, resume: bool = False,
         verify_data: str = "sample") -> int:
    """Check, launch and close a sweep; an interrupt (sweep.core.interrupt) at any moment ends
    in a closing line that says what was kept and the exact command to continue."""
    from sweep.core import interrupt
    from sweep.core.experiment import Experiment
    from sweep.run import tune_backend

    try:
        return _checked_run(settings, overwrite=overwrite, report=report, resume=resume,
                            verify_data=verify_data)
    except KeyboardInterrupt as e:
        exp = Experiment(settings.experiment_root)
        if resume:
            print(f"\nsweep: interrupted ({interrupt.name()}) before the sweep went on; nothing "
                  f"changed. Continue with: {resume_command(exp)}", file=sys.stderr)
        elif getattr(e, "undone", False) or not exp.exists() or not tune_backend.resumable(exp.root):
            print(f"\nsweep: interrupted ({interrupt.name()}) before any trial was started; "
                  "nothing was started or kept", file=sys.stderr)
        else:  # a second signal while Ray Tune stopped: its trials are interrupted as they are
            _interrupted_as_is(exp)
        return interrupt.exit_code()


def _interrupted_as_is(exp: Any) -> None:
    from sweep.run.trial import mark_interrupted

    interrupt_note(exp)
    for t in exp.trials():
        mark_interrupted(t, exp)
    print(interrupted_line(exp), file=sys.stderr)


def _checked_run(settings: Any, *, overwrite: bool, report: bool, resume: bool,
                 verify_data: str) -> int:
    from sweep.core import errors
    from sweep.odapi import render
    from sweep.run import validate
    from sweep.search import space

    if not resume:
        # In a second, before the checks that import Ray (seconds on a loaded machine).
        refuse_existing(settings, overwrite=overwrite)
        settings.check()
        examples = validate.check(settings.space, settings.pipeline, storage=settings.storage,
                                  replicas=settings.replicas, verify_data=verify_data)
        validate.check_search(settings.sampler, settings.scheduler,  # sampler/scheduler vs space
                              space.load_space(settings.space))
        if settings.population_based:
            validate.check_population(settings.scheduler, space.load_space(settings.space))
        settings.dataset = _dataset_info(settings.pipeline, examples)
        space_path, base_path = settings.space, settings.pipeline
    else:
        from sweep.core.experiment import Experiment

        exp = Experiment(settings.experiment_root)
        space_path, base_path = exp.space_path, exp.base_pipeline
    sp = space.load_space(space_path)
    base = render.load_pipeline(base_path)
    steps = int(sp.constants().get("num_steps", render.num_steps(base)))

    from sweep.run import schedulers, tune_backend

    if not resume:  # no option silently does nothing: early stopping gets evaluations
        settings.eval_every, note = schedulers.eval_points(settings.scheduler,
                                                           settings.eval_every, steps)
        if note:
            print(f"sweep: {note}", flush=True)
    rungs = schedulers.decision_steps(settings.scheduler, steps, settings.eval_every,
                                      settings.perturbation_interval)
    if rungs:
        print(f"sweep: --scheduler {settings.scheduler} decides at steps "
              f"{', '.join(map(str, rungs))} (of {steps})", flush=True)

    # Everything that can be refused is refused before Ray starts and before a folder exists.
    plan = tune_backend.preflight(settings, sp, steps, resume=resume)
    from sweep.run import ray_job

    grace = ray_job.stop_grace_warning()
    if grace:
        print(f"sweep: warning: {grace}", file=sys.stderr, flush=True)
    from sweep.core import lock

    locked = None  # one driver per experiment: the lock is taken before Ray starts
    try:
        if not resume:
            with _undone_on_failure(settings):
                exp = prepare_experiment(settings, overwrite=overwrite)  # takes the lock
                locked = exp.root
                url = tune_backend.init_ray(settings)  # on --address, checks the cluster
                print(f"experiment {exp.name}: {exp.root}", flush=True)
                t0 = time.time()
                errors.mark_launched()
                # The base config's own values are the first known point (the report's baseline).
                summary = tune_backend.run_sweep(settings, sp, sp.points_to_evaluate(base), steps,
                                                 plan=plan, url=url,
                                                 base_point=sp.base_point(base))
        else:
            lock.acquire(exp.root)
            locked = exp.root
            _rebuild_damaged(exp)
            url = tune_backend.init_ray(settings)
            print(f"experiment {exp.name}: {exp.root}", flush=True)
            t0 = time.time()
            errors.mark_launched()
            summary = tune_backend.run_sweep(settings, sp, sp.points_to_evaluate(base), steps,
                                             plan=plan, url=url, resume=True,
                                             base_point=sp.base_point(base))
        if settings.confirm and not summary["stopped_reason"] and not summary["interrupted"]:
            _confirm(exp, settings, sp, settings.confirm, settings.confirm_top, url)
    finally:
        tune_backend.stop_ray()
        if locked is not None:
            lock.release(locked)
    from sweep.core.experiment import read_json, write_json

    data = read_json(exp.settings_path, {})
    data.update(finished=summary["interrupted"] is None, finished_at=time.time(),
                wall_time_s=time.time() - t0 + float(data.get("wall_time_s", 0) if resume else 0),
                stopped_reason=summary["stopped_reason"], interrupted=summary["interrupted"])
    write_json(exp.settings_path, data)
    from sweep.report.status import render_status

    print(render_status(exp))
    if summary["interrupted"]:
        from sweep.core import interrupt

        _publish(settings, exp, None, None, finished=False)
        print(f"no report: the sweep was interrupted (`sweep report {exp.name}` writes one of "
              "the trials so far)")
        print(interrupted_line(exp), file=sys.stderr)
        return interrupt.exit_code()
    out = verdict = None
    if report:
        from sweep.report import report as report_mod

        out = report_mod.write_report(exp)
        verdict = (out / report_mod.VERDICT_FILE).read_text().rstrip()
        print(verdict)
        print(report_line(out))
    _publish(settings, exp, out, verdict, finished=True)
    return _exit(exp, summary["stopped_reason"])


def _publish(settings: Any, exp: Any, report: Path | None, verdict: str | None, *,
             finished: bool) -> None:
    """The experiment trackers' parent run: the report and best config, then ended."""
    from sweep.run import trackers

    if trackers.enabled(settings):
        trackers.for_experiment(settings, exp.root).publish(report, verdict, finished=finished)


def report_line(out: Path) -> str:
    """The closing line naming the report's files: only those that were written (an all-NaN
    sweep has no best/pipeline.config)."""
    files = [n for n in ("leaderboard.csv", "leaderboard.md", "best/pipeline.config")
             if (out / n).exists()]
    return f"report: {out}/report.html" + (f"  ({', '.join(files)})" if files else "")


def resume_command(exp: Any) -> str:
    """The exact command that continues ``exp`` from where this shell is."""
    storage = exp.root.parent
    default = Path("experiments").resolve()
    return f"sweep resume {exp.name}" + ("" if storage == default else f" --storage {storage}")


def interrupt_note(exp: Any) -> None:
    """experiment.json says the sweep was interrupted (and by what), not finished."""
    from sweep.core import interrupt
    from sweep.core.experiment import read_json, write_json

    data = read_json(exp.settings_path, {})
    if isinstance(data, dict) and data:
        data.update(finished=False, interrupted=interrupt.name())
        write_json(exp.settings_path, data)


def interrupted_line(exp: Any) -> str:
    """The closing line of an interrupted sweep: what was done, what the resume continues."""
    from sweep.core import interrupt
    from sweep.core.experiment import ENDED, INTERRUPTED, read_json

    states = [t.status().get("state") for t in exp.trials()]
    total = int((read_json(exp.settings_path, {}) or {}).get("num_trials") or len(states))
    done = sum(1 for s in states if s in ENDED)
    stopped = sum(1 for s in states if s == INTERRUPTED)
    return (f"sweep {exp.name} interrupted ({interrupt.name()}): {done} of {total} trials done, "
            f"{stopped} interrupted (they continue from their last checkpoint), "
            f"{max(total - done - stopped, 0)} not started. Continue with: {resume_command(exp)}")


def _exit(exp: Any, stopped_reason: str | None) -> int:
    """The exit code of a sweep (errors.EXIT_*), with a last line that says why."""
    from sweep.core import errors
    from sweep.report.status import failure_summary

    failed = failure_summary(exp)
    if stopped_reason and "in a row" in stopped_reason:
        print(f"sweep {exp.name} stopped: {stopped_reason}. {failed or ''}", file=sys.stderr)
        return errors.EXIT_FAILURE_STREAK
    if failed:
        print(f"sweep {exp.name} finished, but {failed}", file=sys.stderr)
        return errors.EXIT_TRIALS_FAILED
    if stopped_reason:  # a budget: the sweep ended as asked, not every trial ran
        from sweep.core.experiment import ENDED

        done = sum(1 for t in exp.trials() if t.status().get("state") in ENDED)
        total = exp.settings().get("num_trials", "?")
        print(f"sweep {exp.name} stopped: {stopped_reason}; {done} of {total} trials ran "
              "(completed, or stopped early or by the budget)")
        return errors.EXIT_OK
    print(f"sweep {exp.name} finished: every trial completed or was stopped early")
    return errors.EXIT_OK


def cmd_demo(a: argparse.Namespace) -> int:
    from sweep.data.dataset import make_dataset
    from sweep.odapi.workspace import init_workspace

    ws = a.workspace
    # The options and the space first: a refused option must not leave demo data behind.
    _settings(a, a.space, ws / "models" / "pipeline.config", f"demo-{_stamp()}").check()
    from sweep.search.space import load_space

    load_space(a.space)
    print(f"writing the synthetic dataset to {ws / 'annotations'} ...", flush=True)
    info = make_dataset(ws / "annotations", images_dir=ws / "images", overwrite=a.force)
    pipeline = init_workspace(ws, dataset=info, overwrite=a.force)
    print(f"base config: {pipeline}  ({info.n_train} train / {info.n_eval} eval images, "
          f"{len(info.class_names)} classes)", flush=True)
    settings = _settings(a, a.space, pipeline, f"demo-{_stamp()}")
    return _run(settings, overwrite=a.overwrite, report=not a.no_report,
                verify_data=a.verify_data)


def cmd_run(a: argparse.Namespace) -> int:
    settings = _settings(a, a.space, a.pipeline, f"{a.space.stem}-{_stamp()}")
    return _run(settings, overwrite=a.overwrite, report=not a.no_report,
                verify_data=a.verify_data)


def cmd_validate(a: argparse.Namespace) -> int:
    from sweep.run import validate

    examples = validate.check(a.space, a.pipeline, storage=a.storage, check_data=not a.no_data,
                              verify_data=a.verify_data)
    if examples:
        print("examples: " + ", ".join(f"{k} {v}" for k, v in examples.items()))
    print(f"ok: {a.space} is valid for {a.pipeline}")
    return 0


def _experiment(a: argparse.Namespace) -> Any:
    from sweep.core.experiment import find_experiment

    return find_experiment(a.experiment, a.storage)


def warn_damaged(a: argparse.Namespace, exp: Any) -> list[tuple[Path, str, str]]:
    """Name each of the experiment's records that is there but cannot be read, and what the
    user can do (sweep.core.experiment.damaged); the command goes on with what it can read."""
    from sweep.core.experiment import damaged

    found = damaged(exp)
    for path, problem, fix in found:
        print(f"sweep {a.command}: warning: {path}: {problem}. Fix: {fix}", file=sys.stderr)
    return found


def cmd_status(a: argparse.Namespace) -> int:
    from sweep.report.status import render_status

    exp = _experiment(a)
    exp.settings()  # damaged: an error naming it
    warn_damaged(a, exp)
    while True:
        print(render_status(exp), flush=True)
        if not a.watch or exp.settings().get("finished"):
            return 0
        time.sleep(a.watch)
        print()


def cmd_report(a: argparse.Namespace) -> int:
    from sweep.report import report

    exp = _experiment(a)
    exp.settings()  # damaged: an error naming it
    warn_damaged(a, exp)
    out = report.write_report(exp, a.out, fine_tune_from_best=a.fine_tune_from_best)
    print(f"report: {out}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from sweep.core.errors import Problem
    from sweep.report import export

    exp = _experiment(a)
    exp.settings()  # damaged: an error naming it
    warn_damaged(a, exp)
    if a.format == "saved_model":
        if a.quantize != "none":
            raise ConfigError(Problem("command line", "--quantize", "quantizing applies to a "
                                      "TFLite model only", "add --format tflite"))
        out = export.export_trial(exp, a.trial, a.out, input_type=a.input_type)
        print(f"SavedModel: {out}")
        return 0
    if a.input_type != "image_tensor":
        raise ConfigError(Problem("command line", "--input-type", "a TFLite export is scored "
                                  "with an image_tensor SavedModel", "leave --input-type out"))
    r = export.export_tflite(exp, a.trial, a.out, quantize=a.quantize)
    kind = "float32" if r.quantize == "none" else r.quantize  # --quantize none: float32
    print(f"{r.trial}: SavedModel vs TFLite ({kind}) on {r.eval_images} eval images")
    print(f"  {'model':<14} {'size MB':>8} {'mAP':>7}  path")
    for label, m in (("SavedModel", r.saved_model), (f"TFLite {kind}", r.tflite)):
        print(f"  {label:<14} {m.size_bytes / 1e6:>8.2f} {m.map:>7.4f}  {m.path}")
    if r.eval_job_map is not None:
        print(f"  (the sweep's eval job scored this checkpoint {r.eval_job_map:.4f})")
    return 0


def cmd_dashboard(a: argparse.Namespace) -> int:
    from sweep.report.dashboard import serve

    serve(_experiment(a), a.port)
    return 0


def _confirm(exp: Any, settings: Any, sp: Any, seeds: int, top: int, url: str | None) -> None:
    """Run the confirmation trials of ``exp`` that are not COMPLETED yet (sweep.run.confirm)."""
    import dataclasses

    from sweep.run import confirm, tune_backend

    try:
        configs = confirm.plan(exp, seeds, top)
    except ValueError as e:
        print(f"sweep: no confirmation: {e}", file=sys.stderr, flush=True)
        return
    todo = confirm.pending(exp, configs)
    print(f"confirmation: {len(configs)} runs ({seeds} seeds x the base config and the top "
          f"{top}), {len(configs) - len(todo)} already done", flush=True)
    if todo:
        fifo = dataclasses.replace(settings, scheduler="fifo")
        tune_backend.run_confirmations(fifo, sp, todo, url=url)


def cmd_confirm(a: argparse.Namespace) -> int:
    from sweep.odapi import render
    from sweep.run import tune_backend
    from sweep.run.settings import SweepSettings
    from sweep.search import space

    exp = _experiment(a)
    settings = SweepSettings.from_json(exp.settings())
    settings.storage = exp.root.parent
    settings.address = a.address or settings.address
    settings.dashboard = not a.no_dashboard
    if a.max_concurrent:
        settings.max_concurrent = a.max_concurrent
    from sweep.run import confirm

    confirm.plan(exp, a.seeds, a.top)  # refuses now, before Ray starts, when nothing can be
    sp = space.load_space(exp.space_path)
    render.load_pipeline(exp.base_pipeline)
    from sweep.core import lock

    lock.acquire(exp.root)  # one driver per experiment
    try:
        url = tune_backend.init_ray(settings)
        _confirm(exp, settings, sp, a.seeds, a.top, url)
    finally:
        tune_backend.stop_ray()
        lock.release(exp.root)
    from sweep.report.status import render_status

    print(render_status(exp))
    if not a.no_report:
        from sweep.report import report as report_mod

        out = report_mod.write_report(exp)
        print((out / report_mod.VERDICT_FILE).read_text().rstrip())
        print(f"report: {out}/report.html")
    return 0


def cmd_resume(a: argparse.Namespace) -> int:
    from sweep.core import lock
    from sweep.core.errors import Problem
    from sweep.core.experiment import trust_problem
    from sweep.run.settings import SweepSettings

    exp = _experiment(a)
    lock.check(exp.root)  # another driver runs it: refused at once, naming it
    untrusted = trust_problem(exp)
    if untrusted:
        raise ConfigError(Problem(str(exp.root), "", *untrusted))
    settings = SweepSettings.from_json(exp.settings())
    if settings.name != exp.name:
        # The study, Ray's state and the trials all carry the name the sweep started with.
        raise ConfigError(Problem(
            str(exp.root), "experiment.json", f"this folder holds experiment "
            f"{settings.name!r} (renamed or copied from it)", f"rename the folder back to "
            f"{settings.name!r} to resume it, or start anew with `sweep run ... --name {exp.name}"
            " --overwrite`"))
    settings.storage = exp.root.parent
    if a.address:
        settings.address = a.address
    if a.no_dashboard:
        settings.dashboard = False
    _refuse_damaged(exp)
    return _run(settings, overwrite=False, report=not a.no_report, resume=True)


def _refuse_damaged(exp: Any) -> None:
    """A resume needs the study and Ray's state: damaged, it is refused, naming the file."""
    from sweep.core.errors import Problem
    from sweep.core.experiment import damaged

    fatal = [Problem(str(path), "", problem, fix) for path, problem, fix in damaged(exp)
             if path.name != "status.json"]
    if fatal:
        raise ConfigError(fatal)


def _rebuild_damaged(exp: Any) -> None:
    """When a resume is about to start: each damaged status.json is rebuilt from its trial's
    folder (the damaged file kept beside it), so the runner and Ray see the trial's truth."""
    from sweep.core.experiment import damaged
    from sweep.run.trial import rebuild_status

    for path, _, _ in damaged(exp):
        if path.name != "status.json":
            continue
        status, kept = rebuild_status(exp.trial(path.parent.name))
        print(f"sweep resume: {path} was damaged: rebuilt from the trial's folder as "
              f"{status['state']} (the damaged file is kept as {kept.name})", file=sys.stderr)


def cmd_data(a: argparse.Namespace) -> int:
    from sweep.data import annotations, convert

    if a.data_command == "inspect":
        return _inspect(a)
    read = {"voc": annotations.read_voc, "csv": annotations.read_csv,
            "gtsrb": annotations.read_gtsrb}[a.data_command]
    found = read(a.source, a.images) if a.data_command == "csv" else read(a.source)
    test = read(a.test) if a.test else None  # a test CSV's images are in its own folder
    result = convert.convert(found, a.out, test=test, split=a.split, label_map=a.label_map,
                             shards=a.shards, seed=a.seed, skip_bad=a.skip_bad,
                             overwrite=a.overwrite, encoding=a.encode,
                             progress=sys.stderr.isatty())
    print(result.summary())
    return 0


def cmd_init(a: argparse.Namespace) -> int:
    from sweep.odapi.workspace import init_model
    from sweep.run import validate

    pipeline, source, data = init_model(a.pretrained, a.annotations, a.name,
                                        batch_size=a.batch_size, root=a.workspace,
                                        overwrite=a.overwrite, label_map=a.label_map)
    print(f"pipeline.config: {pipeline}  (from {source.config})")
    print(f"data: {data.num_classes} classes, {data.n_train} train / {data.n_eval} test examples")
    print(f"fine_tune_checkpoint: {source.checkpoint}" if source.checkpoint else
          "no pre-trained checkpoint: training starts from scratch (put the model zoo's folder "
          "with checkpoint/ckpt-0 in --pretrained to fine-tune)")
    validate.check_pipeline(pipeline)
    print(f"ok: label map, TFRecords and checkpoint checked. Next: sweep run --space SPACE "
          f"--pipeline {pipeline}")
    return 0


def _inspect(a: argparse.Namespace) -> int:
    from sweep.data import inspect_records

    stats = inspect_records.inspect_records(a.records, a.label_map)
    print(inspect_records.render_table(stats))
    if a.plot:
        print(f"plot: {inspect_records.plot(stats, a.plot)}")
    return 1 if stats.problems else 0


COMMANDS = {"confirm": cmd_confirm, "demo": cmd_demo, "data": cmd_data, "init": cmd_init, "run": cmd_run,
            "validate": cmd_validate, "status": cmd_status, "report": cmd_report,
            "export": cmd_export, "resume": cmd_resume, "dashboard": cmd_dashboard}


def main(argv: list[str] | None = None) -> int:
    from sweep.core import errors, interrupt

    parser = build_parser()
    a = parser.parse_args(argv)
    errors.reset_launched()
    try:
        check_numbers(chosen_parser(parser, sys.argv[1:] if argv is None else argv), a)
    except ConfigError as e:
        return _refused(a, e)
    previous = interrupt.install()  # SIGTERM too: an interrupt, with its closing line
    try:
        return _main(a)
    finally:
        interrupt.restore(previous)
        from sweep.run import trackers

        trackers.close_all()  # this command's tracker runs end with it


def _main(a: argparse.Namespace) -> int:
    from sweep.core import errors, interrupt

    try:
        return COMMANDS[a.command](a)
    except ConfigError as e:
        if not errors.launched():
            return _refused(a, e)
        print(_after_launch(a, e), file=sys.stderr)
        for problem in e.problems:
            print(f"  - {problem}", file=sys.stderr)
        return errors.error_exit_code()
    except FileNotFoundError as e:
        print(f"sweep {a.command}: {e}", file=sys.stderr)
        if errors.launched():
            print(_after_launch(a, e), file=sys.stderr)
        return errors.error_exit_code()
    except OSError as e:
        if e.filename is None and not errors.launched():
            raise  # not about a path the user gave: a real bug, keep its traceback
        # A path the user gave that cannot be used (a folder for a file, no permission...).
        print(f"sweep {a.command}: {e.filename}: {e.strerror or e}. Fix: check the path and "
              "its permissions", file=sys.stderr)
        if errors.launched():
            print(_after_launch(a, e), file=sys.stderr)
        return errors.error_exit_code()
    except KeyboardInterrupt:
        # run/demo/resume say what was kept themselves (_run); other commands change nothing
        # that a rerun would not redo.
        print(f"\nsweep {a.command}: interrupted ({interrupt.name()})", file=sys.stderr)
        return interrupt.exit_code()
    except Exception as e:
        if not errors.launched():
            raise  # a bug before launch: its traceback, exit 1 as Python gives it
        traceback.print_exc()
        print(_after_launch(a, e), file=sys.stderr)
        return errors.error_exit_code()


def _refused(a: argparse.Namespace, e: ConfigError) -> int:
    done = "written" if a.command in ("data", "init", "export", "report") else "launched"
    print(f"sweep {a.command}: nothing was {done}; fix these first:", file=sys.stderr)
    for problem in e.problems:
        print(f"  - {problem}", file=sys.stderr)
    return 2


def _after_launch(a: argparse.Namespace, e: BaseException) -> str:
    """What to say of an error after trials were launched: the experiment is kept and how to
    go on, or (it failed before Ray saved a state to resume from) that nothing was kept."""
    if getattr(e, "undone", False):
        return (f"sweep {a.command}: this error ended the sweep before it could be resumed; "
                "what this run created was removed, nothing else was changed. Fix the cause "
                "and run it again")
    name = getattr(a, "name", None) or getattr(a, "experiment", None) or "<experiment>"
    return (f"sweep {a.command}: the trials ran, then this error ended the command. The "
            f"experiment is kept: fix the cause, then `sweep report {name}` (or `sweep resume "
            f"{name}` if it did not finish)")


if __name__ == "__main__":
    sys.exit(main())
