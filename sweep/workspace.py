"""The TF2 OD API tutorial's workspace layout, and the demo model's pipeline.config in it.

    workspace/training_demo/
        annotations/            label_map.pbtxt, train.record, test.record
        images/                 train/ and test/ JPEGs (optional)
        models/<model_name>/    pipeline.config (rendered from a template in sweep/templates/)
        pre-trained-models/     model-zoo checkpoints a user puts there
        exported-models/        exported SavedModels

The config is edited as a protobuf (``pipeline_pb2``), never as text, and a user's existing
pipeline.config is never replaced unless asked (``overwrite=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import text_format

from sweep.dataset import DatasetInfo
from sweep.errors import ConfigError, Problem

if TYPE_CHECKING:
    from object_detection.protos.pipeline_pb2 import TrainEvalPipelineConfig

SUBDIRS = ("annotations", "images", "models", "pre-trained-models", "exported-models")
TEMPLATES_DIR = Path(__file__).parent / "templates"
DEFAULT_ROOT = Path("workspace/training_demo")


def available_templates() -> list[str]:
    """Names of the pipeline.config templates shipped in ``sweep/templates/``."""
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.config"))


def template_path(name: str) -> Path:
    """The file of template ``name``; a ``ConfigError`` listing the choices if there is none."""
    path = TEMPLATES_DIR / f"{name}.config"
    if not path.is_file():
        raise ConfigError(Problem(
            str(path), "", f"no pipeline.config template named {name!r}",
            f"use one of: {', '.join(available_templates()) or '(none installed)'}",
        ))
    return path


def _parse(text: str, source: str) -> TrainEvalPipelineConfig:
    from object_detection.protos import pipeline_pb2

    config = pipeline_pb2.TrainEvalPipelineConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ConfigError(Problem(source, "", f"not a valid pipeline.config ({e})",
                                  "fix the text proto or render it again")) from e
    return config


def render_pipeline_config(template: str, dataset: DatasetInfo) -> str:
    """Template ``template`` with num_classes, label map and record paths set from ``dataset``."""
    path = template_path(template)
    config = _parse(path.read_text(), str(path))
    arch = config.model.WhichOneof("model")
    if arch is None:
        raise ConfigError(Problem(str(path), "model", "the template sets no architecture",
                                  "add a model { ssd { ... } } (or other) block"))
    getattr(config.model, arch).num_classes = dataset.num_classes
    # Absolute paths: the OD API resolves them against its own working directory, which is
    # a trial folder, not the workspace.
    label_map = str(Path(dataset.label_map_path).absolute())
    readers = [(config.train_input_reader, dataset.train_record)]
    readers += [(reader, dataset.eval_record) for reader in config.eval_input_reader]
    for reader, record in readers:
        reader.label_map_path = label_map
        reader.tf_record_input_reader.input_path[:] = [str(Path(record).absolute())]
    return text_format.MessageToString(config)


def init_workspace(
    root: Path = DEFAULT_ROOT,
    *,
    model_name: str = "demo_tiny_ssd",
    template: str = "tiny_ssd_mobilenet_v2",
    dataset: DatasetInfo,
    overwrite: bool = False,
) -> Path:
    """Create the tutorial layout under ``root`` and write ``models/<model_name>/pipeline.config``.

    An existing pipeline.config that means the same config is kept as it is (the user's
    formatting and comments survive); one that differs raises ``ConfigError`` unless
    ``overwrite``. Returns the pipeline.config path.
    """
    if not model_name or Path(model_name).name != model_name or model_name in (".", ".."):
        raise ValueError(f"`model_name` must be a plain folder name, but got {model_name!r}")
    root = Path(root).absolute()
    rendered = render_pipeline_config(template, dataset)
    target = root / "models" / model_name / "pipeline.config"
    if target.exists() and not overwrite:
        try:
            same = _parse(target.read_text(), str(target)) == _parse(rendered, template)
        except ConfigError:
            same = False
        if same:
            _make_dirs(root, target)
            return target
        raise ConfigError(Problem(
            str(target), "", "exists and differs from the config sweep would write "
            f"(template {template!r}, {dataset.num_classes} classes, data in "
            f"{dataset.annotations_dir})",
            "pass --force (overwrite=True) to replace it, or choose another --model-name",
        ))
    _make_dirs(root, target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(rendered)
    os.replace(tmp, target)
    return target


def _make_dirs(root: Path, target: Path) -> None:
    for sub in SUBDIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
