"""What the eval job keeps per evaluation: the fed COCO evaluator's own lists, as JSON."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from sweep.odapi import detections


def _evaluator(image_ids: dict, gt: list, dets: list) -> SimpleNamespace:
    return SimpleNamespace(_image_ids=image_ids, _groundtruth_list=gt,
                           _detection_boxes_list=dets,
                           _categories=[{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}])


def test_keeps_the_fed_evaluators_lists_and_forgets_them(tmp_path: Path) -> None:
    # The OD API builds a class-agnostic and a class-aware evaluator and feeds only one;
    # image ids come from TFRecords as bytes, numbers as numpy values.
    unused = _evaluator({}, [], [])
    gt = [{"id": 1, "image_id": b"a.jpg", "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0],
           "area": np.float32(12.0), "iscrowd": 0}]
    dets = [{"image_id": b"a.jpg", "category_id": np.int64(2),
             "bbox": list(np.array([1.5, 2.0, 3.0, 4.0], dtype=np.float32)),
             "score": np.float32(0.75), "keypoints": None}]
    fed = _evaluator({b"a.jpg": True, b"b.jpg": False}, gt, dets)
    captured = [unused, fed]
    path = detections.keep_detections(tmp_path, "ckpt-3", captured)
    assert path == tmp_path / "eval" / "detections" / "ckpt-3.json"
    assert captured == []  # the next evaluation brings fresh evaluators
    kept = detections.read(tmp_path, "ckpt-3")
    assert kept is not None
    ground, results = kept
    assert ground["images"] == [{"id": "a.jpg"}, {"id": "b.jpg"}]
    assert ground["annotations"] == [dict(gt[0], image_id="a.jpg", area=12.0)]
    assert ground["categories"] == fed._categories
    assert results == [{"image_id": "a.jpg", "category_id": 2, "bbox": [1.5, 2.0, 3.0, 4.0],
                        "score": 0.75}]  # COCO results format: nothing else


def test_nothing_fed_nothing_written(tmp_path: Path) -> None:
    assert detections.keep_detections(tmp_path, "ckpt-1", [_evaluator({}, [], [])]) is None
    assert detections.read(tmp_path, "ckpt-1") is None
