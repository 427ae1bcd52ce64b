"""A synthetic experiment folder for fast report tests: no TensorFlow, no Ray.

It writes what a real sweep leaves on disk: ``experiment.json``, ``base_pipeline.config``,
per-trial ``params.json`` / ``pipeline.config`` / ``status.json``, real TFRecord event files in
``train/`` and ``eval/`` (tensor summaries, as TF2's ``tf.summary.scalar`` writes them, and
``simple_value`` ones), placeholder ``ckpt-N`` files, and a real Optuna SQLite study with one
trial per folder. The curves are random (seeded) so tests compare the report with what was
written, never with numbers copied into the test.
"""

from __future__ import annotations

import json
import math
import random
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.core.experiment import (
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    STOPPED,
    Experiment,
    TrialDir,
    write_json,
)
from sweep.odapi import metrics as m
from sweep.odapi.detections import write_detections

LR = "cosine_decay_learning_rate.learning_rate_base"  # sweep.odapi.render's named parameters
BASE_PARAMS = {LR: 0.03, "batch_size": 8, "l2_weight": 0.0004}  # the tiny config's own values


@dataclass
class TrialTruth:
    """What the fixture wrote for one trial: the ground truth a test checks the report against."""

    params: dict[str, Any]
    state: str
    reason: str | None
    train: dict[int, dict[str, float]] = field(default_factory=dict)
    eval: dict[int, dict[str, float]] = field(default_factory=dict)
    checkpoint_steps: dict[str, int] = field(default_factory=dict)  # kept "ckpt-N" -> step
    kept_best: tuple[str, int] | None = None  # the runner's best/ copy: (ckpt name, step)


@dataclass
class SyntheticExperiment:
    exp: Experiment
    truth: dict[str, TrialTruth]


def tiny_config_text(data_dir: Path) -> str:
    """The shipped tiny SSD template (3 classes, 128 px), its PATH/TO pointing at ``data_dir``."""
    from sweep.odapi.workspace import template_path

    return template_path("tiny_ssd_mobilenet_v2").read_text().replace("PATH/TO", str(data_dir))


def _render(base_text: str, params: dict[str, Any]) -> str:
    """The trial's pipeline.config, rendered as the runner does (``sweep.odapi.render``)."""
    from google.protobuf import text_format
    from object_detection.protos import pipeline_pb2

    from sweep.odapi.render import render

    base = pipeline_pb2.TrainEvalPipelineConfig()
    text_format.Parse(base_text, base)
    return text_format.MessageToString(render(base, params))


# ---- event files, written with tensorboard's protos and TFRecord framing (no TensorFlow) ----

def _scalar_value(tag: str, value: float, kind: str):  # noqa: ANN202 - a Summary.Value
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    if kind == "simple":
        return summary_pb2.Summary.Value(tag=tag, simple_value=value)
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT,
                                    tensor_shape=tensor_shape_pb2.TensorShapeProto())
    if kind == "content":
        tensor.tensor_content = struct.pack("<f", value)
    else:
        tensor.float_val.append(value)
    return summary_pb2.Summary.Value(tag=tag, tensor=tensor)


def write_events(event_dir: Path, rows: dict[int, dict[str, float]], start_wall: float,
                 seconds_per_step: float, kind: str = "tensor") -> None:
    """One event file in ``event_dir`` holding ``rows`` ({step: {tag: value}})."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    event_dir.mkdir(parents=True, exist_ok=True)
    path = event_dir / f"events.out.tfevents.{int(start_wall)}.{socket.gethostname()}.1.v2"
    with open(path, "wb") as f:
        writer = RecordWriter(f)
        writer.write(event_pb2.Event(wall_time=start_wall, file_version="brain.Event:2")
                     .SerializeToString())
        for step, tags in rows.items():
            summary = summary_pb2.Summary(
                value=[_scalar_value(t, v, kind) for t, v in tags.items()])
            event = event_pb2.Event(wall_time=start_wall + step * seconds_per_step, step=step,
                                    summary=summary)
            writer.write(event.SerializeToString())


def picture(trial: str, step: int, i: int) -> bytes:
    """A small PNG unique to (trial, step, image): what the eval's side-by-side picture is."""
    import io

    from PIL import Image

    seed = zlib.crc32(f"{trial}:{step}:{i}".encode())
    img = Image.new("RGB", (64, 32), (seed % 256, seed // 256 % 256, seed // 65536 % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_pictures(event_dir: Path, trial: str, steps: list[int], n: int = 4) -> None:
    """The OD API eval's image summaries (``eval_side_by_side_<i>_0``) at each of ``steps``."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    with open(event_dir / "events.out.tfevents.0.pictures.v2", "wb") as f:
        writer = RecordWriter(f)
        for step in steps:
            values = []
            for i in range(n):
                tensor = tensor_pb2.TensorProto(
                    dtype=types_pb2.DT_STRING,
                    string_val=[b"64", b"32", picture(trial, step, i)])
                values.append(summary_pb2.Summary.Value(tag=f"eval_side_by_side_{i}_0",
                                                        tensor=tensor))
            writer.write(event_pb2.Event(step=step, wall_time=0.0,
                                         summary=summary_pb2.Summary(value=values))
                         .SerializeToString())


def _f32(x: float) -> float:
    """Values as float32 round-trips them, so the truth equals what a reader gets back."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _curves(rng: random.Random, params: dict[str, Any], last_step: int, eval_every: int,
            diverge_at: int | None) -> tuple[dict, dict]:
    # Quality peaks near learning_rate_base 0.05; the shape is arbitrary, only seeded.
    skill = math.exp(-abs(math.log(params[LR] / 0.05))) * rng.uniform(0.6, 1.0)
    train: dict[int, dict[str, float]] = {}
    for step in range(0, last_step + 1, 5):
        decay = math.exp(-step / 30)
        cls, loc = 0.2 + 0.8 * decay * rng.uniform(0.8, 1.2), 0.05 + 0.3 * decay
        reg = params["l2_weight"] * 500 * (0.5 + 0.5 * decay)
        total = cls + loc + reg
        if diverge_at is not None and step >= diverge_at:
            total = math.nan if step == last_step else total * 10 ** (step - diverge_at + 1)
        train[step] = {m.CLASSIFICATION_LOSS: _f32(cls), m.LOCALIZATION_LOSS: _f32(loc),
                       m.REGULARIZATION_LOSS: _f32(reg), m.TOTAL_LOSS: _f32(total),
                       m.LEARNING_RATE: _f32(params[LR] * decay),
                       m.STEPS_PER_SEC: _f32(rng.uniform(10, 20))}
    evals: dict[int, dict[str, float]] = {}
    for step in range(eval_every, last_step + 1, eval_every):
        if diverge_at is not None and step >= diverge_at:
            break
        mean_ap = skill * (1 - math.exp(-step / 20)) * rng.uniform(0.85, 1.0)
        evals[step] = {m.MAP: _f32(mean_ap), m.MAP50: _f32(min(1.0, mean_ap * 1.6)),
                       m.MAP75: _f32(mean_ap * 0.7), m.AR100: _f32(min(1.0, mean_ap * 1.3)),
                       m.TOTAL_LOSS: _f32(train[step][m.TOTAL_LOSS] * rng.uniform(1.0, 1.3))}
    return train, evals


def make_experiment(root: Path, *, finished: bool = True, multi_objective: bool = False,
                    with_study: bool = True, runner_best: bool = True, seed: int = 0,
                    name: str = "synthetic") -> SyntheticExperiment:
    """Build ``root/<name>`` with trials in every state; returns it with the ground truth.

    Trials, in creation order: the base config (``_base``), two completed ones, one stopped by
    the scheduler, one FAILED with reason "diverged", then (still running if not ``finished``,
    else completed) one more, and when not ``finished`` one PENDING trial with no events.
    With ``runner_best`` each trial has the runner's ``best/`` copy of its best checkpoint.
    """
    rng = random.Random(seed)
    exp_root = root / name
    exp = Experiment(exp_root)
    exp.trials_dir.mkdir(parents=True)
    (exp_root / "data").mkdir()
    base_text = tiny_config_text(exp_root / "data")
    exp.base_pipeline.write_text(base_text)

    metrics_ = [m.MAP] if not multi_objective else [m.TOTAL_LOSS, m.MAP]
    modes = ["max"] if not multi_objective else ["min", "max"]
    now = time.time() - 3600
    plan: list[tuple[dict[str, Any], str, str | None, int | None]] = [
        (dict(BASE_PARAMS, _base=True), COMPLETED, None, None),
        (dict({LR: rng.uniform(0.03, 0.08), "batch_size": 4,
              "l2_weight": rng.uniform(1e-4, 1e-3)}), COMPLETED, None, None),
        (dict({LR: rng.uniform(0.01, 0.015), "batch_size": 8,
              "l2_weight": rng.uniform(1e-4, 1e-3)}), COMPLETED, None, None),
        (dict({LR: rng.uniform(0.006, 0.009), "batch_size": 2,
              "l2_weight": rng.uniform(1e-4, 1e-3)}), STOPPED, "stopped by ASHAScheduler", None),
        (dict({LR: rng.uniform(0.5, 0.9), "batch_size": 4,
              "l2_weight": rng.uniform(1e-4, 1e-3)}), FAILED, "diverged", 25),
        (dict({LR: rng.uniform(0.02, 0.04), "batch_size": 8,
              "l2_weight": rng.uniform(1e-4, 1e-3)}),
         COMPLETED if finished else RUNNING, None, None),
    ]
    if not finished:
        plan.append((dict({LR: 0.01, "batch_size": 2, "l2_weight": 0.0002}), PENDING,
                     None, None))

    truth: dict[str, TrialTruth] = {}
    for i, (params, state, reason, diverge_at) in enumerate(plan):
        trial = TrialDir(exp.trials_dir / f"trial_{i:04d}")
        trial.path.mkdir()
        write_json(trial.params_path, params)
        clean = {k: v for k, v in params.items() if not k.startswith("_")}
        trial.pipeline_path.write_text(_render(base_text, clean))
        created = now + i * 60
        status: dict[str, Any] = {"state": state, "reason": reason, "created_at": created,
                                  "attempts": 1, "num_steps": 40}
        t = TrialTruth(params=params, state=state, reason=reason)
        if state != PENDING:
            last_step = {STOPPED: 20, RUNNING: 25}.get(state, 40)
            t.train, t.eval = _curves(rng, clean, last_step, 10, diverge_at)
            status["started_at"] = created + 1
            seconds_per_step = rng.uniform(0.5, 2.0)
            write_events(trial.path / "train", t.train, created + 5, seconds_per_step,
                         kind="content" if i % 2 else "tensor")
            if t.eval:
                write_events(trial.path / "eval", t.eval, created + 6, seconds_per_step,
                             kind="simple" if i % 2 else "tensor")
                write_pictures(trial.path / "eval", trial.name, list(t.eval))
            if state != RUNNING:
                status["ended_at"] = created + 10 + last_step * seconds_per_step
            _write_checkpoints(trial, t, metrics_[0], modes[0], runner_best)
        write_json(trial.status_path, status)
        truth[trial.name] = t

    settings: dict[str, Any] = {
        "name": name, "created_at": now, "model_name": "demo_tiny_ssd",
        "base_pipeline_source": "tiny_ssd_mobilenet_v2.config", "space_source": "space.yaml",
        "metrics": metrics_, "modes": modes, "num_trials": len(plan) + (0 if finished else 2),
        "max_concurrent": 2, "sampler": "tpe", "scheduler": "asha", "seed": seed,
        "storage_url": f"sqlite:///{exp.study_db}", "study_name": name,
        "dataset": {"train_examples": 64, "eval_examples": 16, "num_classes": 3},
        "finished": finished,
    }
    write_json(exp.settings_path, settings)
    if with_study:
        _write_study(settings, truth)
    return SyntheticExperiment(exp, truth)


KEEP = 3  # checkpoints the runner keeps (the worker's --keep)


def _write_checkpoints(trial: TrialDir, t: TrialTruth, metric: str, mode: str,
                       runner_best: bool) -> None:
    """ckpt-N placeholders every 10 steps (last KEEP kept), eval/evaluated.jsonl, best/."""
    steps = {f"ckpt-{n}": step for n, step in enumerate(range(10, max(t.train) + 1, 10), 1)}
    kept = dict(list(steps.items())[-KEEP:])
    for name in kept:
        for suffix in (".index", ".data-00000-of-00001"):
            (trial.path / f"{name}{suffix}").write_bytes(b"")
    if kept:
        (trial.path / "checkpoint").write_text(
            f'model_checkpoint_path: "{list(kept)[-1]}"\n'
            + "".join(f'all_model_checkpoint_paths: "{n}"\n' for n in kept))
    t.checkpoint_steps = kept
    evaluated = [{"checkpoint": n, "step": s, "metrics": t.eval[s], "time": 0.0}
                 for n, s in steps.items() if s in t.eval]
    gt = eval_groundtruth(seed=len(trial.path.parent.name))  # the experiment's one eval set
    for row in evaluated:  # what the eval job keeps: a better mAP, a better detector
        write_detections(trial.path, row["checkpoint"], gt,
                         detections_for(gt, 1.6 * t.eval[row["step"]][m.MAP],
                                        seed=zlib.crc32(f"{trial.name}:{row['step']}".encode())))
    (trial.path / "eval").mkdir(exist_ok=True)
    (trial.path / "eval" / "evaluated.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in evaluated))
    scored = [(reported_value(t, metric, r["step"]), r) for r in evaluated]
    scored = [(v, r) for v, r in scored if math.isfinite(v)]
    if runner_best and scored:
        pick = max if mode == "max" else min
        value, best = pick(scored, key=lambda vr: vr[0])
        (trial.path / "best").mkdir()
        for suffix in (".index", ".data-00000-of-00001"):
            (trial.path / "best" / f"{best['checkpoint']}{suffix}").write_bytes(b"")
        write_json(trial.path / "best" / "best.json",
                   {"step": best["step"], "metric": metric,
                    "value": value, "checkpoint": best["checkpoint"]})
        t.kept_best = (best["checkpoint"], best["step"])


def reported_value(t: TrialTruth, tag: str, step: int) -> float:
    """What the runner reports for the eval at ``step``: losses from training, COCO from eval."""
    return t.train[step][tag] if tag.startswith("Loss/") else t.eval[step][tag]


def _write_study(settings: dict[str, Any], truth: dict[str, TrialTruth]) -> None:
    """The Optuna study Ray's OptunaSearch would have left: one trial per folder, same params."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize" if mode == "max" else "minimize" for mode in settings["modes"]]
    study = optuna.create_study(storage=settings["storage_url"],
                                study_name=settings["study_name"], directions=directions)
    dists = {LR: FloatDistribution(1e-4, 1.0, log=True),
             "batch_size": CategoricalDistribution([2, 4, 8]),
             "l2_weight": FloatDistribution(1e-5, 1e-2, log=True)}
    state_map = {COMPLETED: TrialState.COMPLETE, STOPPED: TrialState.PRUNED,  # as the runner
                 FAILED: TrialState.FAIL, RUNNING: TrialState.RUNNING,
                 PENDING: TrialState.WAITING}
    for t in truth.values():
        state = state_map[t.state]
        values = None
        if state == TrialState.COMPLETE:
            # Ray reports the last result to Optuna.
            last = max(t.eval)
            values = [reported_value(t, tag, last) for tag in settings["metrics"]]
        if state == TrialState.WAITING:
            continue
        params = {k: v for k, v in t.params.items() if not k.startswith("_")}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  values=values, state=state))


# ---- per-image detections, as the eval job keeps them (sweep.odapi.detections) ----

def eval_groundtruth(n_images: int = 16, n_classes: int = 3, seed: int = 0) -> dict[str, Any]:
    """A COCO ground truth like the demo's eval set: 1-3 boxes per 128 px image."""
    rng = random.Random(seed)
    images = [{"id": f"img{i:03d}.jpg"} for i in range(n_images)]
    annotations = []
    for img in images:
        for _ in range(rng.randint(1, 3)):
            w, h = rng.uniform(16, 48), rng.uniform(16, 48)
            annotations.append({"id": len(annotations) + 1, "image_id": img["id"],
                                "category_id": rng.randint(1, n_classes),
                                "bbox": [rng.uniform(0, 128 - w), rng.uniform(0, 128 - h), w, h],
                                "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": c, "name": f"class{c}"} for c in range(1, n_classes + 1)]}


def detections_for(gt: dict[str, Any], skill: float, seed: int) -> list[dict[str, Any]]:
    """COCO results of a detector of ``skill`` (0..1): it finds each object with probability
    ``skill``, boxes jittered less and scored higher the better it is, plus false alarms."""
    rng = random.Random(seed)
    skill = min(max(skill, 0.0), 1.0)
    n_classes = len(gt["categories"])
    dets = []
    for a in gt["annotations"]:
        if rng.random() < skill:
            x, y, w, h = a["bbox"]
            j = (1 - skill) * 0.3 * w
            dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                         "bbox": [x + rng.uniform(-j, j), y + rng.uniform(-j, j),
                                  w * rng.uniform(1 - (1 - skill) * 0.3, 1), h],
                         "score": min(1.0, 0.3 + 0.7 * skill * rng.random())})
    for img in gt["images"]:
        for _ in range(rng.randint(0, 2)):
            dets.append({"image_id": img["id"], "category_id": rng.randint(1, n_classes),
                         "bbox": [rng.uniform(0, 90), rng.uniform(0, 90), 30, 30],
                         "score": 0.5 * rng.random()})
    return dets
