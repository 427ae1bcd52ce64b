"""Export a trial's checkpoint as a SavedModel for inference, as the tutorial's
``exporter_main_v2.py`` does (``object_detection.exporter_lib_v2.export_inference_graph``),
and, for SSD models, as a TFLite model (``sweep.odapi.tflite``) scored next to that SavedModel
on the eval records (``sweep.odapi.exported_eval``).

    reports/<experiment>/exported/<trial>/
        saved_model/        load with tf.saved_model.load(); call it on a uint8 [1, H, W, 3]
        checkpoint/         the exported checkpoint
        pipeline.config     the trial's config
        tflite/             --format tflite: model[_float16|_int8].tflite, graph/ (its source)
        export.json         which trial, checkpoint and step this is, and its metric; for
                            TFLite, each model's size and eval-set mAP

The checkpoint is the trial's checkpoint nearest its best evaluation (the runner's ``best/``
copy when there is one), else its newest. TensorFlow is imported only when exporting.
"""

from __future__ import annotations

import contextlib
import glob
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.core.errors import ConfigError, Problem
from sweep.core.experiment import Experiment, TrialDir
from sweep.odapi.tflite import REPRESENTATIVE_IMAGES

INPUT_TYPES = ("image_tensor", "encoded_image_string_tensor", "tf_example")


@dataclass(frozen=True)
class ExportPlan:
    """What will be exported: a trial, one of its checkpoints and (if known) that step."""

    trial: TrialDir
    checkpoint: Path  # prefix, e.g. <trial>/best/ckpt-4
    step: int | None
    best_step: int | None
    metric: str
    value: float | None


def find_trial(exp: Experiment, trial: str) -> TrialDir:
    """A trial by folder name (``trial_0003``) or by number (``3``)."""
    trials = exp.trials()
    for t in trials:
        if t.name == trial:
            return t
    if trial.isdigit():
        for t in trials:
            tail = t.name.rsplit("_", 1)[-1]
            if tail.isdigit() and int(tail) == int(trial):
                return t
    names = ", ".join(t.name for t in trials) or "none yet"
    raise FileNotFoundError(f"experiment {exp.name} has no trial {trial!r}; trials: {names}")


def plan_export(exp: Experiment, trial: str | None = None) -> ExportPlan:
    """Pick the trial (the best one when ``trial`` is None) and the checkpoint to export."""
    from sweep.report.report import gather
    from sweep.run.best import objective, trial_best

    g = gather(exp)
    if trial is None:
        name = g.best_name()
        if name is None:
            raise FileNotFoundError(
                f"experiment {exp.name}: no trial has been evaluated yet, so there is no best "
                "trial. Wait for an evaluation, or pick one with --trial N.")
        t = g.trials[name]
    else:
        t = find_trial(exp, trial)
    tag, mode = objective(g.settings)
    best = trial_best(t, tag, mode, g.metrics.get(t.name))
    best_step = best.step if best else None
    value = best.value if best else None
    if best is not None and best.checkpoint is not None:
        prefix, step = best.checkpoint, best.checkpoint_step
    else:
        ckpts = t.checkpoints()  # no evaluation to go by: the newest checkpoint
        if not ckpts:
            raise FileNotFoundError(
                f"trial {t.name} of experiment {exp.name} has no checkpoint (no ckpt-N.index "
                f"in {t.path}); it has not trained long enough to save one.")
        prefix, step = ckpts[-1][1], None
    return ExportPlan(t, prefix, step, best_step, tag, value)


@contextlib.contextmanager
def _output_folder(out_dir: Path) -> Iterator[None]:
    """Create ``out_dir``; if the export fails, remove what this export created (the outermost
    new folder, or an ``out_dir`` that was empty), nothing that was there before."""
    made = out_dir  # the outermost folder this export creates
    while not made.parent.exists() and made.parent != made:
        made = made.parent
    created = not made.exists() or (made == out_dir and not any(out_dir.iterdir()))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(made, ignore_errors=True)
        raise


def _words(e: BaseException) -> str:
    """The first line of an error, as a message quotes it (TF's run to pages)."""
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def _default_out(exp: Experiment, plan: ExportPlan) -> Path:
    from sweep.report.report import REPORTS_DIR

    return REPORTS_DIR / exp.name / "exported" / plan.trial.name


def export_trial(exp: Experiment, trial: str | None, out_dir: Path | None = None, *,
                 input_type: str = "image_tensor") -> Path:
    """Export the best (or the given) trial; returns the SavedModel directory.

    ``out_dir`` (default ``reports/<experiment>/exported/<trial>/``) receives what
    ``exporter_main_v2.py`` writes: ``saved_model/``, ``checkpoint/``, ``pipeline.config``.
    """
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, but got {input_type!r}")
    plan = plan_export(exp, trial)
    out_dir = Path(out_dir) if out_dir is not None else _default_out(exp, plan)
    with _output_folder(out_dir):
        _export_savedmodel(exp, plan, out_dir, input_type)
    return out_dir / "saved_model"


def _export_savedmodel(exp: Experiment, plan: ExportPlan, out_dir: Path, input_type: str) -> None:
    try:
        run_exporter(plan.trial.pipeline_path, plan.checkpoint, out_dir, input_type=input_type)
    except Exception as e:  # noqa: BLE001 - TF's errors for a bad checkpoint vary by kind
        raise ConfigError(Problem(
            f"{plan.checkpoint}.index", "", f"trial {plan.trial.name}'s checkpoint cannot be "
            f"exported ({type(e).__name__}: {_words(e)})", "its files may be truncated or from "
            "another model: export another trial (--trial N), or check the trial's train.log"
        )) from e
    info = {"experiment": exp.name, "trial": plan.trial.name,
            "checkpoint": str(plan.checkpoint), "checkpoint_step": plan.step,
            "best_step": plan.best_step, "metric": plan.metric, "value": plan.value,
            "input_type": input_type, "pipeline": str(plan.trial.pipeline_path)}
    (out_dir / "export.json").write_text(json.dumps(info, indent=2) + "\n")


# ------------------------------------------------------------------------------ TFLite

@dataclass(frozen=True)
class ModelScore:
    """One exported model's file size and its COCO mAP on the eval records."""

    path: Path
    size_bytes: int
    map: float


@dataclass(frozen=True)
class TfliteExport:
    """A TFLite export next to the SavedModel of the same checkpoint, both run on the eval set."""

    trial: str
    quantize: str
    eval_images: int
    saved_model: ModelScore
    tflite: ModelScore
    eval_job_map: float | None = None  # the eval job's mAP of this checkpoint, if the metric


def tflite_file(out_dir: Path, quantize: str) -> Path:
    return out_dir / "tflite" / ("model.tflite" if quantize == "none" else f"model_{quantize}.tflite")


def _tflite_inputs(plan: ExportPlan, quantize: str) -> tuple[Any, list[str], list[str], Path]:
    """The trial's pipeline, eval records, training records and label map, refused (before
    anything is built or written) if the model is not an SSD or a file it needs is missing."""
    from sweep.odapi.render import load_pipeline
    from sweep.odapi.tflite import QUANTIZE, tflite_problem

    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, but got {quantize!r}")
    where = str(plan.trial.pipeline_path)
    cfg = load_pipeline(plan.trial.pipeline_path)
    problem = tflite_problem(cfg, where)
    if problem:
        raise ConfigError(problem)
    problems = []
    if not cfg.eval_input_reader:
        problems.append(Problem(where, "eval_input_reader", "there is none, so the TFLite "
                                "model cannot be measured", "name the eval TFRecords in it"))
        raise ConfigError(problems)
    reader = cfg.eval_input_reader[0]
    evals = list(reader.tf_record_input_reader.input_path)
    trains = list(cfg.train_input_reader.tf_record_input_reader.input_path)
    label_map = Path(reader.label_map_path or cfg.train_input_reader.label_map_path)
    needed = [("eval_input_reader.tf_record_input_reader.input_path", p) for p in evals]
    if quantize == "int8":  # its calibration images
        needed += [("train_input_reader.tf_record_input_reader.input_path", p) for p in trains]
    for key, path in needed:
        if not glob.glob(path):
            problems.append(Problem(where, key, f"no file matches {path!r}", "the records "
                                    "must be where the trial read them; restore them there"))
    if not evals:
        problems.append(Problem(where, "eval_input_reader.tf_record_input_reader.input_path",
                                "empty, so the TFLite model cannot be measured",
                                "name the eval TFRecords"))
    if not label_map.is_file():
        problems.append(Problem(where, "eval_input_reader.label_map_path", f"no file "
                                f"{str(label_map)!r}", "restore the label map the trial used"))
    if problems:
        raise ConfigError(problems)
    return cfg, evals, trains, label_map


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(
        f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_tflite(exp: Experiment, trial: str | None, out_dir: Path | None = None, *,
                  quantize: str = "none") -> TfliteExport:
    """Export the best (or the given) SSD trial as a TFLite model, and score it and the
    SavedModel of the same checkpoint on the eval records.

    Into ``out_dir`` (as ``export_trial``): the SavedModel, ``tflite/graph/`` (the
    TFLite-friendly SavedModel) and ``tflite/model[_float16|_int8].tflite``; ``export.json``
    gets the sizes and mAPs. The SavedModel and the graph are reused when this folder already
    has them for this checkpoint (each is a model build and trace: minutes for a large model),
    so float, float16 and int8 exports one after another pay for them once."""
    plan = plan_export(exp, trial)
    cfg, evals, trains, label_map = _tflite_inputs(plan, quantize)
    out_dir = Path(out_dir) if out_dir is not None else _default_out(exp, plan)
    info_path = out_dir / "export.json"
    with _output_folder(out_dir):
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        saved = out_dir / "saved_model"
        if not ((saved / "saved_model.pb").is_file() and info.get("checkpoint") == str(
                plan.checkpoint) and info.get("input_type") == "image_tensor"):
            _export_savedmodel(exp, plan, out_dir, "image_tensor")
            info = json.loads(info_path.read_text())
        try:
            result = _tflite_and_scores(cfg, plan, out_dir, quantize, evals, trains, label_map,
                                        info.get("saved_model_eval"),
                                        (info.get("tflite_graph") or {}).get("checkpoint"))
        except (ConfigError, FileNotFoundError):
            raise
        except Exception as e:  # noqa: BLE001 - the converter's errors vary by kind
            raise ConfigError(Problem(
                str(plan.trial.pipeline_path), "", f"trial {plan.trial.name} cannot be exported "
                f"as TFLite ({type(e).__name__}: {_words(e)})", "export it as a SavedModel "
                "(leave --format out), or try another --quantize")) from e
        info["tflite_graph"] = {"checkpoint": str(plan.checkpoint)}
        info["saved_model_eval"] = {"map": result.saved_model.map,
                                    "size_bytes": result.saved_model.size_bytes,
                                    "eval_images": result.eval_images}
        info.setdefault("tflite", {})[quantize] = {
            "path": str(result.tflite.path), "size_bytes": result.tflite.size_bytes,
            "map": result.tflite.map, "eval_images": result.eval_images,
            "representative_images": REPRESENTATIVE_IMAGES if quantize == "int8" else 0}
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    return result


def _tflite_and_scores(cfg: Any, plan: ExportPlan, out_dir: Path, quantize: str,
                       evals: list[str], trains: list[str], label_map: Path,
                       saved_eval: dict | None, graph_checkpoint: str | None) -> TfliteExport:
    from sweep.data.label_map import read_label_map
    from sweep.odapi import exported_eval, tflite

    prepare = exported_eval.model_input(cfg)
    graph = out_dir / "tflite" / "graph" / "saved_model"
    if graph_checkpoint != str(plan.checkpoint) or not (graph / "saved_model.pb").is_file():
        graph = tflite.export_graph(cfg, plan.checkpoint, out_dir / "tflite" / "graph")
    representative = None
    if quantize == "int8":
        representative = [prepare(ex.image) for ex in exported_eval.read_examples(
            trains, limit=REPRESENTATIVE_IMAGES)]
    model = tflite.convert(graph, tflite_file(out_dir, quantize), quantize, representative)

    examples = list(exported_eval.read_examples(evals))
    categories = read_label_map(label_map)
    saved = out_dir / "saved_model"
    if saved_eval and saved_eval.get("eval_images") == len(examples):
        saved_map = float(saved_eval["map"])  # this SavedModel was scored on these records
    else:
        saved_map = exported_eval.evaluate(exported_eval.savedmodel_detector(saved), examples,
                                           categories).map
    lite = exported_eval.evaluate(exported_eval.tflite_detector(model, prepare), examples,
                                  categories)
    return TfliteExport(plan.trial.name, quantize, len(examples),
                        ModelScore(saved, _size(saved), saved_map),
                        ModelScore(model, _size(model), lite.map),
                        plan.value if plan.metric == "DetectionBoxes_Precision/mAP" else None)


def run_exporter(pipeline: Path, checkpoint: Path, out_dir: Path, *,
                 input_type: str = "image_tensor") -> None:
    """``exporter_main_v2.py`` for one checkpoint prefix (not just a folder's newest)."""
    from sweep.odapi import compat

    compat.patch()  # before object_detection's TF modules (tf-slim on TF 2.15)
    from object_detection import exporter_lib_v2

    from sweep.odapi.render import load_pipeline

    if not checkpoint.with_name(checkpoint.name + ".index").exists():
        raise FileNotFoundError(f"{checkpoint}.index: no such checkpoint")
    cfg = load_pipeline(pipeline)
    # The exporter restores the newest checkpoint of a folder; a folder holding only a
    # `checkpoint` state file that names our prefix makes that the one, without copying it.
    with tempfile.TemporaryDirectory(prefix="sweep-export-") as tmp:
        Path(tmp, "checkpoint").write_text(
            f'model_checkpoint_path: "{checkpoint.resolve()}"\n'
            f'all_model_checkpoint_paths: "{checkpoint.resolve()}"\n')
        exporter_lib_v2.export_inference_graph(input_type, cfg, tmp, str(out_dir))
