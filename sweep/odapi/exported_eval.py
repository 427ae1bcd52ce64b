"""Run an exported detector (a SavedModel or a TFLite model) on TFRecords and score it.

This module owns "how good is an exported model on the eval set": it reads the eval records
the pipeline names (the OD API's own ``TfExampleDecoder``, so the ground truth is what the eval
job saw), runs the model image by image, and computes COCO box mAP@[.5:.95] with pycocotools
(the library behind the OD API's ``coco_evaluation``) from the same COCO lists the eval job
keeps (``sweep.odapi.detections``). Both formats go through one ``Detector`` shape, so their
numbers compare like for like.

A TFLite SSD graph (``export_tflite_graph_tf2``) has no preprocessing: it takes the image
already resized and normalised. ``model_input`` does that with the model's own ``preprocess``
(built from the pipeline, no checkpoint needed), so the TFLite model sees what the SavedModel's
graph feeds its network. TensorFlow is imported only inside the functions.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# (boxes [N, 4] normalised ymin, xmin, ymax, xmax; classes [N] label-map ids; scores [N])
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]
Detector = Callable[[np.ndarray], Detections]  # uint8 image [H, W, 3] -> detections


@dataclass(frozen=True)
class Example:
    """One decoded record: its image and its ground truth (normalised boxes, label ids)."""

    image_id: int
    image: np.ndarray  # uint8 [H, W, 3]
    boxes: np.ndarray  # [M, 4] normalised ymin, xmin, ymax, xmax
    classes: np.ndarray  # [M] label-map ids
    is_crowd: np.ndarray  # [M] bool


@dataclass
class Evaluation:
    """A model's COCO mAP on some records, and the COCO lists it came from."""

    map: float
    images: int
    groundtruth: dict[str, Any] = field(repr=False)
    detections: list[dict[str, Any]] = field(repr=False)


def read_examples(records: list[str], limit: int | None = None) -> Iterator[Example]:
    """Decode ``records`` (paths or globs, as a pipeline's ``input_path``) in order."""
    from sweep.odapi import compat

    compat.patch()
    import tensorflow as tf
    from object_detection.core import standard_fields as fields
    from object_detection.data_decoders import tf_example_decoder

    files = sorted({f for r in records for f in tf.io.gfile.glob(r)})
    if not files:
        raise FileNotFoundError(f"no TFRecord file matches {records}")
    decoder = tf_example_decoder.TfExampleDecoder()
    for i, serialized in enumerate(tf.data.TFRecordDataset(files)):
        if limit is not None and i >= limit:
            return
        d = decoder.decode(serialized)
        boxes = d[fields.InputDataFields.groundtruth_boxes].numpy()
        crowd = d.get(fields.InputDataFields.groundtruth_is_crowd)
        yield Example(
            image_id=i + 1, image=d[fields.InputDataFields.image].numpy()[..., :3],
            boxes=boxes, classes=d[fields.InputDataFields.groundtruth_classes].numpy(),
            is_crowd=(crowd.numpy().astype(bool) if crowd is not None and crowd.shape[0]
                      else np.zeros(len(boxes), bool)))


def model_input(pipeline_config: Any) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 image [H, W, 3] -> the float [1, h, w, 3] the network takes (resized and
    normalised by the model's own ``preprocess``): a TFLite SSD graph's input."""
    from sweep.odapi import compat

    compat.patch()
    import tensorflow as tf
    from object_detection.builders import model_builder

    model = model_builder.build(pipeline_config.model, is_training=False)

    def prepare(image: np.ndarray) -> np.ndarray:
        resized, _ = model.preprocess(tf.cast(tf.constant(image)[None], tf.float32))
        return resized.numpy()

    return prepare


def savedmodel_detector(path: Path) -> Detector:
    """The exporter's SavedModel (``image_tensor`` input): classes come out as label ids."""
    import tensorflow as tf

    detect = tf.saved_model.load(str(path))

    def run(image: np.ndarray) -> Detections:
        out = detect(tf.constant(image[None], dtype=tf.uint8))
        n = int(out["num_detections"][0])
        return (out["detection_boxes"][0, :n].numpy(),
                out["detection_classes"][0, :n].numpy().astype(int),
                out["detection_scores"][0, :n].numpy())

    return run


def tflite_detector(path: Path, prepare: Callable[[np.ndarray], np.ndarray]) -> Detector:
    """A converted ``export_tflite_graph_tf2`` model. Its post-processing op gives classes
    from 0 (no background), so 1 is added to make them label ids as the SavedModel's are."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=1)
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details()

    def run(image: np.ndarray) -> Detections:
        out = runner(**{input_name: prepare(image).astype(np.float32)})
        named = tflite_outputs(out)
        n = int(named["num_detections"].reshape(-1)[0])
        # The SavedModel's postprocess clips boxes to the image; TFLite's NMS op does not.
        return (np.clip(named["boxes"][0, :n], 0.0, 1.0), named["classes"][0, :n].astype(int) + 1,
                named["scores"][0, :n])

    return run


def tflite_outputs(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Name the post-processing op's four outputs. The graph returns (boxes, classes, scores,
    num_detections) reversed, so the signature's output_0..3 are num_detections, scores,
    classes, boxes (checked on shapes: a reordering in another TF would be caught here)."""
    keys = sorted(out)
    if len(keys) != 4:
        raise ValueError(f"a TFLite SSD model has 4 outputs, this one {keys}")
    named = dict(zip(("num_detections", "scores", "classes", "boxes"),
                     (out[k] for k in keys), strict=True))
    if named["boxes"].shape[-1] != 4 or named["num_detections"].size != 1:
        raise ValueError(f"unexpected TFLite outputs: { {k: v.shape for k, v in out.items()} }")
    return named


def evaluate(detector: Detector, examples: list[Example], categories: dict[str, int]) -> Evaluation:
    """COCO box mAP@[.5:.95] of ``detector`` on ``examples`` (pixel boxes of each image)."""
    images, annotations, detections = [], [], []
    for ex in examples:
        h, w = ex.image.shape[:2]
        images.append({"id": ex.image_id, "height": h, "width": w})
        for box, cls, crowd in zip(ex.boxes, ex.classes, ex.is_crowd, strict=True):
            bbox = _pixels(box, h, w)
            annotations.append({"id": len(annotations) + 1, "image_id": ex.image_id,
                                "category_id": int(cls), "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": int(crowd)})
        boxes, classes, scores = detector(ex.image)
        for box, cls, score in zip(boxes, classes, scores, strict=True):
            detections.append({"image_id": ex.image_id, "category_id": int(cls),
                               "bbox": _pixels(box, h, w), "score": float(score)})
    groundtruth = {"images": images, "annotations": annotations,
                   "categories": [{"id": i, "name": n} for n, i in sorted(categories.items())]}
    return Evaluation(coco_map(groundtruth, detections), len(images), groundtruth, detections)


def coco_map(groundtruth: dict[str, Any], detections: list[dict[str, Any]]) -> float:
    """pycocotools' mAP@[.5:.95] (all areas, 100 detections), as DetectionBoxes_Precision/mAP."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = groundtruth
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(detections), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(float(ev.stats[0]), 0.0)  # -1 when no class has ground truth


def _pixels(box: np.ndarray, h: int, w: int) -> list[float]:
    """Normalised (ymin, xmin, ymax, xmax) -> COCO pixel [x, y, width, height]."""
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return [xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h]
