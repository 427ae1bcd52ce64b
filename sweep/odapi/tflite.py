"""A TFLite detector from an SSD checkpoint, as the OD API documents it for TF2
(``running_on_mobile_tf2.md``): ``export_tflite_graph_tf2`` writes a TFLite-friendly SavedModel
(the network plus the ``TFLite_Detection_PostProcess`` op, no preprocessing), then
``tf.lite.TFLiteConverter`` makes the ``.tflite`` file, optionally quantised:

    none     float32 weights and activations
    float16  float16 weights (half the size; runs as float32 on a CPU, float16 on a GPU)
    int8     int8 weights and activations, calibrated on a representative set of training
             images (``REPRESENTATIVE_IMAGES``); the model's input and outputs stay float32,
             and the post-processing op (which has no int8 kernel) stays float

Only SSD models with a fixed-shape resizer convert (the OD API's rule); ``tflite_problem``
says so from the pipeline alone, before anything is built. TensorFlow is imported lazily.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sweep.core.errors import Problem

QUANTIZE = ("none", "float16", "int8")
REPRESENTATIVE_IMAGES = 32  # int8 calibration: a few dozen training images


def tflite_problem(pipeline_config: Any, where: str) -> Problem | None:
    """Why this pipeline's model cannot become a TFLite SSD, or None (protobuf only, no TF)."""
    arch = pipeline_config.model.WhichOneof("model")
    if arch != "ssd":
        return Problem(where, "model", f"the model is {arch}, and TFLite export supports SSD "
                       "models only (the OD API's export_tflite_graph_tf2)",
                       "export this trial as a SavedModel (leave --format out), or sweep an SSD "
                       "model (e.g. the tiny SSD MobileNet template) to get a TFLite detector")
    resizer = pipeline_config.model.ssd.image_resizer.WhichOneof("image_resizer_oneof")
    if resizer != "fixed_shape_resizer":
        return Problem(where, "model.ssd.image_resizer", f"the model resizes with {resizer}, and "
                       "a TFLite model needs a fixed input shape", "use fixed_shape_resizer "
                       "in the pipeline to export it as TFLite")
    return None


def max_detections(pipeline_config: Any) -> int:
    """As many detections as the SavedModel gives (its NMS's max_total_detections)."""
    nms = pipeline_config.model.ssd.post_processing.batch_non_max_suppression
    return int(nms.max_total_detections) or 100


def export_graph(pipeline_config: Any, checkpoint: Path, out_dir: Path) -> Path:
    """``export_tflite_graph_tf2`` for one checkpoint prefix; returns its SavedModel folder.

    Regular (per-class) NMS, as the OD API's own post-processing does, so the TFLite model
    keeps the detections the sweep scored (the fast variant keeps one class per box)."""
    from sweep.odapi import compat

    compat.patch()
    from object_detection import export_tflite_graph_lib_tf2

    with tempfile.TemporaryDirectory(prefix="sweep-tflite-") as tmp:
        # The exporter restores a folder's newest checkpoint: point a state file at ours.
        Path(tmp, "checkpoint").write_text(
            f'model_checkpoint_path: "{checkpoint.resolve()}"\n'
            f'all_model_checkpoint_paths: "{checkpoint.resolve()}"\n')
        export_tflite_graph_lib_tf2.export_tflite_model(
            pipeline_config, tmp, str(out_dir), max_detections(pipeline_config),
            use_regular_nms=True)
    return out_dir / "saved_model"


def convert(graph: Path, out_file: Path, quantize: str,
            representative: list[Any] | None = None) -> Path:
    """The TFLite converter on ``export_graph``'s SavedModel; ``representative`` (the
    network's float inputs, [1, h, w, 3] each) calibrates int8."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, but got {quantize!r}")
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(graph))
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if not representative:
            raise ValueError("int8 needs a representative set of images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x.astype("float32")] for x in representative)
        # int8 kernels where they exist; float ones for the rest (the detection post-processing)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(converter.convert())
    return out_file
