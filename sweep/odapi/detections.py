"""Per-image detections the eval job keeps, so a report can tell a real win from noise.

For each checkpoint it evaluates, the eval job (``sweep.odapi.worker evaluate``) keeps what the OD
API's COCO evaluator computed its mAP from:

    <model_dir>/eval/groundtruth.json          COCO ground truth: images, annotations, categories
    <model_dir>/eval/detections/<ckpt>.json    COCO results: [{image_id, category_id, bbox, score}]

They are the evaluator's own lists (captured, not recomputed), so the mAP of these files is the
mAP in the event file. Stdlib only at import: the report reads them without TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GROUNDTRUTH = "groundtruth.json"
DETECTIONS = "detections"


def detections_path(model_dir: Path, checkpoint: str) -> Path:
    return Path(model_dir) / "eval" / DETECTIONS / f"{checkpoint}.json"


def groundtruth_path(model_dir: Path) -> Path:
    return Path(model_dir) / "eval" / GROUNDTRUTH


def _plain(x: Any) -> Any:
    """numpy scalars/arrays and byte-string image ids (TFRecord source_id) as JSON values."""
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, default=_plain, separators=(",", ":")))
    tmp.replace(path)  # a report reading meanwhile never sees half a file


def write_detections(model_dir: Path, checkpoint: str, groundtruth: dict[str, Any],
                     detections: list[dict[str, Any]]) -> Path:
    """Write the eval set's ground truth (the same for every checkpoint) and the checkpoint's
    detections; returns the detections file."""
    keep = ("image_id", "category_id", "bbox", "score")
    _write_json(groundtruth_path(model_dir), groundtruth)
    path = detections_path(model_dir, checkpoint)
    _write_json(path, [{k: d[k] for k in keep} for d in detections])
    return path


def read(model_dir: Path, checkpoint: str) -> tuple[dict[str, Any], list[dict]] | None:
    """(ground truth, detections) kept for ``checkpoint``, or None if the eval job kept none."""
    gt, dets = groundtruth_path(model_dir), detections_path(model_dir, checkpoint)
    if not gt.exists() or not dets.exists():
        return None
    return json.loads(gt.read_text()), json.loads(dets.read_text())


# ---------------------------------------------------------------- in the eval job (TF)

def capture_evaluators() -> list[Any]:
    """Record every evaluator the OD API creates from now on (``eager_eval_loop`` makes fresh
    ones each evaluation); returns the list they are appended to."""
    from object_detection import eval_util

    captured: list[Any] = []
    original = eval_util.get_evaluators

    def get_evaluators(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        captured.extend(made)
        return made

    eval_util.get_evaluators = get_evaluators  # model_lib_v2 looks it up on the module
    return captured


def keep_detections(model_dir: Path, checkpoint: str, captured: list[Any]) -> Path | None:
    """After an evaluation: write what its COCO box evaluator saw, then forget the evaluators.

    ``eager_eval_loop`` builds a class-agnostic and a class-aware evaluator and feeds one; the
    fed one is the one with images."""
    fed = [e for e in captured if getattr(e, "_image_ids", None)
           and hasattr(e, "_detection_boxes_list") and hasattr(e, "_groundtruth_list")]
    captured.clear()
    if not fed:
        return None
    ev = fed[-1]
    groundtruth = {"images": [{"id": i} for i in ev._image_ids],
                   "annotations": ev._groundtruth_list, "categories": ev._categories}
    return write_detections(model_dir, checkpoint, groundtruth, ev._detection_boxes_list)
