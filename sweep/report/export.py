"""Export a trial's checkpoint as a SavedModel for inference, as the tutorial's
``exporter_main_v2.py`` does (``object_detection.exporter_lib_v2.export_inference_graph``).

    reports/<experiment>/exported/<trial>/
        saved_model/        load with tf.saved_model.load(); call it on a uint8 [1, H, W, 3]
        checkpoint/         the exported checkpoint
        pipeline.config     the trial's config
        export.json         which trial, checkpoint and step this is, and its metric

The checkpoint is the trial's checkpoint nearest its best evaluation (the runner's ``best/``
copy when there is one), else its newest. TensorFlow is imported only when exporting.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sweep.core.errors import ConfigError, Problem
from sweep.core.experiment import Experiment, TrialDir

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


def export_trial(exp: Experiment, trial: str | None, out_dir: Path | None = None, *,
                 input_type: str = "image_tensor") -> Path:
    """Export the best (or the given) trial; returns the SavedModel directory.

    ``out_dir`` (default ``reports/<experiment>/exported/<trial>/``) receives what
    ``exporter_main_v2.py`` writes: ``saved_model/``, ``checkpoint/``, ``pipeline.config``.
    """
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, but got {input_type!r}")
    plan = plan_export(exp, trial)
    from sweep.report.report import REPORTS_DIR

    out_dir = Path(out_dir) if out_dir is not None else (
        REPORTS_DIR / exp.name / "exported" / plan.trial.name)
    made = out_dir  # the outermost folder this export creates: removed if it fails
    while not made.parent.exists() and made.parent != made:
        made = made.parent
    created = not made.exists() or (made == out_dir and not any(out_dir.iterdir()))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        run_exporter(plan.trial.pipeline_path, plan.checkpoint, out_dir, input_type=input_type)
    except Exception as e:  # noqa: BLE001 - TF's errors for a bad checkpoint vary by kind
        if created:
            shutil.rmtree(made, ignore_errors=True)
        words = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ConfigError(Problem(
            f"{plan.checkpoint}.index", "", f"trial {plan.trial.name}'s checkpoint cannot be "
            f"exported ({type(e).__name__}: {words})", "its files may be truncated or from "
            "another model: export another trial (--trial N), or check the trial's train.log"
        )) from e
    info = {"experiment": exp.name, "trial": plan.trial.name,
            "checkpoint": str(plan.checkpoint), "checkpoint_step": plan.step,
            "best_step": plan.best_step, "metric": plan.metric, "value": plan.value,
            "input_type": input_type, "pipeline": str(plan.trial.pipeline_path)}
    (out_dir / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    return out_dir / "saved_model"


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
