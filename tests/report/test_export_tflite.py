"""`sweep export` on a real checkpoint (slow): the e2e sweep's best trial (``real_sweep``, no
training of its own) exported as a SavedModel (the default format), then as float TFLite and
as int8, both reusing that SavedModel.

The float TFLite model must give the SavedModel's detections: on each of the first eval images,
every SavedModel detection among its top ``TOP`` has a TFLite detection of the same class with
IoU >= ``MIN_IOU`` and a score within ``SCORE_TOL``. Both run the same network in float32; what
may differ is the arithmetic order of two runtimes and NMS tie-breaking, hence a tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sweep.core.experiment import Experiment

pytestmark = pytest.mark.slow

TOP = 5  # the SavedModel's highest-scoring detections per image that must match
MIN_IOU = 0.98
SCORE_TOL = 0.01
IMAGES = 4


@pytest.fixture(scope="module")
def exported(real_sweep, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: ANN001
    from sweep import cli
    from sweep.report.export import export_tflite, export_trial, plan_export

    exp = Experiment(real_sweep.experiment)
    out = tmp_path_factory.mktemp("tflite") / "exported"
    saved = export_trial(exp, None, out)  # `sweep export EXP`: the SavedModel alone
    saved_info = json.loads((out / "export.json").read_text())
    float_result = export_tflite(exp, None, out, quantize="none")  # reuses the SavedModel
    graph_pb = out / "tflite" / "graph" / "saved_model" / "saved_model.pb"
    graph_written = graph_pb.stat().st_mtime_ns
    # int8 through the command line, into the same folder: it reuses the SavedModel
    import contextlib
    import io

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        rc = cli.main(["export", str(exp.root), "--format", "tflite", "--quantize", "int8",
                       "--out", str(out)])
    return {"out": out, "float": float_result, "rc": rc, "cli": text.getvalue(),
            "graph_rewritten": graph_pb.stat().st_mtime_ns != graph_written,
            "info": json.loads((out / "export.json").read_text()), "saved": saved,
            "saved_info": saved_info, "plan": plan_export(exp, None)}


@pytest.fixture(scope="module")
def saved_detector(exported: dict):  # noqa: ANN201 - exported_eval.Detector
    """The exported SavedModel, loaded once for the tests (a load is ~25 s here)."""
    from sweep.odapi import exported_eval

    return exported_eval.savedmodel_detector(exported["out"] / "saved_model")


def test_the_savedmodel_export_names_its_checkpoint_and_detects(exported: dict,
                                                                 saved_detector) -> None:  # noqa: ANN001
    out, info, plan = exported["out"], exported["saved_info"], exported["plan"]
    assert exported["saved"] == out / "saved_model"
    assert (out / "pipeline.config").is_file() and (out / "checkpoint").is_dir()
    assert info["trial"] == plan.trial.name and info["checkpoint"] == str(plan.checkpoint)
    assert info["checkpoint_step"] == plan.step and info["input_type"] == "image_tensor"
    boxes, classes, scores = saved_detector(_eval_images(out, 1)[0].image)
    assert boxes.shape[1] == 4 and len(boxes) > 0
    assert classes.shape == scores.shape == boxes.shape[:1]
    # the TFLite exports that followed reused it (same checkpoint, no second export), and int8
    # reused the float export's TFLite graph (no second build and trace)
    assert exported["info"]["checkpoint"] == info["checkpoint"]
    assert exported["info"]["tflite_graph"]["checkpoint"] == info["checkpoint"]
    assert not exported["graph_rewritten"]


def _eval_images(out: Path, n: int) -> list:
    from sweep.odapi import exported_eval
    from sweep.odapi.render import load_pipeline

    cfg = load_pipeline(out / "pipeline.config")
    records = list(cfg.eval_input_reader[0].tf_record_input_reader.input_path)
    return list(exported_eval.read_examples(records, limit=n))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_float_tflite_detections_match_the_savedmodels(exported: dict,
                                                       saved_detector) -> None:  # noqa: ANN001
    from sweep.odapi import exported_eval
    from sweep.odapi.render import load_pipeline

    out = exported["out"]
    saved = saved_detector
    lite = exported_eval.tflite_detector(out / "tflite" / "model.tflite", exported_eval.model_input(
        load_pipeline(out / "pipeline.config")))
    checked = 0
    for ex in _eval_images(out, IMAGES):
        (sb, sc, ss), (lb, lc, ls) = saved(ex.image), lite(ex.image)
        assert len(ss) > 0 and len(ls) == len(ss), (len(ss), len(ls))
        for i in np.argsort(-ss)[:TOP]:
            ok = [j for j in range(len(ls)) if lc[j] == sc[i] and _iou(sb[i], lb[j]) >= MIN_IOU
                  and abs(float(ls[j]) - float(ss[i])) <= SCORE_TOL]
            assert ok, (f"image {ex.image_id}: SavedModel detection {i} (class {sc[i]}, score "
                        f"{ss[i]:.4f}, box {sb[i]}) has no TFLite match; TFLite top: "
                        f"{list(zip(lc[:TOP], np.round(ls[:TOP], 4), strict=True))}")
            checked += 1
    assert checked == IMAGES * TOP


def test_sizes_and_maps_are_reported_for_float_and_int8(exported: dict) -> None:
    r, info = exported["float"], exported["info"]
    assert exported["rc"] == 0, exported["cli"]
    assert r.eval_images == info["saved_model_eval"]["eval_images"] > 0
    assert 0.0 <= r.saved_model.map <= 1.0 and 0.0 <= r.tflite.map <= 1.0
    # float32 TFLite is the same network: the same mAP up to runtime arithmetic
    assert abs(r.tflite.map - r.saved_model.map) <= 0.01, (r.tflite.map, r.saved_model.map)
    f32, i8 = info["tflite"]["none"], info["tflite"]["int8"]
    assert 0.0 <= i8["map"] <= 1.0 and i8["representative_images"] > 0
    assert Path(i8["path"]).is_file() and Path(f32["path"]).is_file()
    # int8 weights: about a quarter of the float file
    assert i8["size_bytes"] < 0.5 * f32["size_bytes"], (i8, f32)
    lines = exported["cli"].splitlines()
    assert any(ln.split()[:2] == ["TFLite", "int8"] and f"{i8['map']:.4f}" in ln for ln in lines), \
        exported["cli"]
    assert any(ln.split()[:1] == ["SavedModel"] for ln in lines), exported["cli"]
