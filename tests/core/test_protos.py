"""sweep.core.protos: the OD API's old-style _pb2 modules on protobuf's C backend (upb)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CONFIG = """
model { ssd { num_classes: 3 box_coder { faster_rcnn_box_coder { y_scale: 10.0 } } } }
train_config { batch_size: 4 num_steps: 100 }
"""


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_the_od_api_protos_load_on_upb_through_sweep() -> None:
    """In a fresh process: `import sweep` first, then the OD API's messages are upb's, parse a
    pipeline.config, and name their fields as the old modules did."""
    out = _python(f"""
import sweep
from google.protobuf import text_format
from google.protobuf.internal import api_implementation
from object_detection.protos import pipeline_pb2, string_int_label_map_pb2
cfg = text_format.Parse({CONFIG!r}, pipeline_pb2.TrainEvalPipelineConfig())
assert cfg.model.ssd.box_coder.faster_rcnn_box_coder.y_scale == 10.0
assert cfg.train_config.num_steps == 100
assert pipeline_pb2.DESCRIPTOR.name == "object_detection/protos/pipeline.proto"
assert string_int_label_map_pb2.StringIntLabelMapItem.DESCRIPTOR.fields_by_name["id"]
again = pipeline_pb2.TrainEvalPipelineConfig.FromString(cfg.SerializeToString())
print(api_implementation.Type(), again == cfg)
""")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["upb", "True"]


def test_without_the_loader_protobuf_4_refuses_the_od_api_modules() -> None:
    """What the loader is for: the shipped modules alone fail on protobuf 4's C backend."""
    out = _python("from object_detection.protos import pipeline_pb2")
    assert out.returncode != 0 and "Descriptors cannot be created directly" in out.stderr


def test_a_pb2_module_without_a_serialized_descriptor_is_an_import_error(
        tmp_path: Path) -> None:
    from sweep.core.protos import _FromDescriptor

    path = tmp_path / "broken_pb2.py"
    path.write_text("from google.protobuf import descriptor as _descriptor\nX = 1\n")
    loader = _FromDescriptor(str(path))
    module = type(sys)("object_detection.protos.broken_pb2")
    with pytest.raises(ImportError, match="no serialized_pb"):
        loader.exec_module(module)
