"""The TF2 OD API tutorial's workspace layout, and the demo model's pipeline.config in it.

    workspace/training_demo/
        annotations/            label_map.pbtxt, train.record, test.record
        images/                 train/ and test/ JPEGs (optional)
        models/<model_name>/    pipeline.config (rendered from a template in sweep/odapi/templates/)
        pre-trained-models/     model-zoo checkpoints a user puts there
        exported-models/        exported SavedModels

The config is edited as a protobuf (``pipeline_pb2``), never as text, and a user's existing
pipeline.config is never replaced unless asked (``overwrite=True``).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import text_format

from sweep.core.errors import ConfigError, Problem
from sweep.data.dataset import EVAL_RECORD, LABEL_MAP, TRAIN_RECORD, DatasetInfo
from sweep.data.tfrecord import TFRecordError, count_records

if TYPE_CHECKING:
    from object_detection.protos.pipeline_pb2 import TrainEvalPipelineConfig

SUBDIRS = ("annotations", "images", "models", "pre-trained-models", "exported-models")
TEMPLATES_DIR = Path(__file__).parent / "templates"
DEFAULT_ROOT = Path("workspace/training_demo")


def available_templates() -> list[str]:
    """Names of the pipeline.config templates shipped in ``sweep/odapi/templates/``."""
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


def _configure(config: TrainEvalPipelineConfig, dataset: DatasetInfo, source: str) -> None:
    """Set num_classes, the label map and the record paths of ``config`` from ``dataset``."""
    arch = config.model.WhichOneof("model")
    if arch is None:
        raise ConfigError(Problem(source, "model", "the config sets no architecture",
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


def render_pipeline_config(template: str, dataset: DatasetInfo) -> str:
    """Template ``template`` with num_classes, label map and record paths set from ``dataset``."""
    path = template_path(template)
    config = _parse(path.read_text(), str(path))
    _configure(config, dataset, str(path))
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
    return _write_model_config(
        root, model_name, render_pipeline_config(template, dataset), overwrite,
        f"template {template!r}, {dataset.num_classes} classes, data in "
        f"{dataset.annotations_dir}", flag="--force")


def _write_model_config(root: Path, model_name: str, rendered: str, overwrite: bool,
                        what: str, flag: str = "--overwrite") -> Path:
    """Write models/<name>/pipeline.config. One that differs is replaced only with ``flag``
    (the option that asked for it, named in the refusal), and then kept beside it as
    ``pipeline.config.replaced-<time>``: it may hold the user's own edits."""
    if not model_name or Path(model_name).name != model_name or model_name in (".", ".."):
        raise ValueError(f"`model_name` must be a plain folder name, but got {model_name!r}")
    root = Path(root).absolute()
    target = root / "models" / model_name / "pipeline.config"
    if target.exists() and not overwrite:
        try:
            same = _parse(target.read_text(), str(target)) == _parse(rendered, what)
        except ConfigError:
            same = False
        if same:
            _make_dirs(root, target)
            return target
        raise ConfigError(Problem(
            str(target), "", f"exists and differs from the config sweep would write ({what})",
            f"pass {flag} to replace it (the old one is kept as "
            "pipeline.config.replaced-<time>), or choose another model name",
        ))
    _make_dirs(root, target)
    if target.exists() and target.read_text() != rendered:
        kept = target.with_name(f"{target.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(target, kept)
        print(f"kept the replaced {target.name} as {kept}", flush=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(rendered)
    os.replace(tmp, target)
    return target


def _make_dirs(root: Path, target: Path) -> None:
    for sub in SUBDIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------- sweep init


def _split_records(annotations_dir: Path, base: str) -> tuple[str, int] | None:
    """(input_path, examples) of ``base`` in ``annotations_dir``: one file or its shards."""
    single = annotations_dir / base
    files = [single] if single.is_file() else sorted(
        annotations_dir.glob(f"{base}-?????-of-?????"))
    if not files:
        return None
    pattern = str(single) if single.is_file() else str(
        annotations_dir / f"{base}-?????-of-{files[0].name[-5:]}")
    try:
        return pattern, sum(count_records(p) for p in files)
    except TFRecordError as e:
        raise ConfigError(Problem(str(e.path), "", f"not a readable TFRecord file: {e.reason}",
                                  "convert the data again (sweep data ... --overwrite)")) from e


def dataset_in(annotations_dir: Path, label_map: Path | None = None) -> DatasetInfo:
    """What ``sweep data`` wrote to ``annotations_dir`` (label map, train and test records);
    ``label_map``: the user's own label map instead of ``annotations_dir/label_map.pbtxt``."""
    from sweep.data.label_map import read_label_map

    annotations_dir = Path(annotations_dir).absolute()
    label_map_path = Path(label_map).absolute() if label_map else annotations_dir / LABEL_MAP
    if label_map is None and not label_map_path.exists():
        raise ConfigError(Problem(str(annotations_dir), "", f"no {LABEL_MAP} here",
                                  "convert your data with `sweep data voc|csv|gtsrb ... --out "
                                  f"{annotations_dir}` (it writes one), or pass your own with "
                                  "--label-map FILE"))
    ids = read_label_map(label_map_path)
    splits = {}
    for base in (TRAIN_RECORD, EVAL_RECORD):
        found = _split_records(annotations_dir, base)
        if found is None:
            raise ConfigError(Problem(str(annotations_dir), "", f"no {base} (or its shards "
                                      f"{base}-?????-of-NNNNN) here",
                                      "convert your data first: `sweep data voc|csv|gtsrb ... "
                                      f"--out {annotations_dir}`"))
        splits[base] = found
    names = [""] * max(ids.values())
    for name, i in ids.items():
        names[i - 1] = name
    (train, n_train), (test, n_test) = splits[TRAIN_RECORD], splits[EVAL_RECORD]
    return DatasetInfo(annotations_dir=annotations_dir,
                       label_map_path=label_map_path,
                       train_record=Path(train), eval_record=Path(test),
                       class_names=tuple(names), n_train=n_train, n_eval=n_test, image_size=0)


@dataclass(frozen=True)
class ModelSource:
    """Where ``sweep init`` takes a model from: its pipeline.config and checkpoint (if any)."""

    config: Path
    checkpoint: Path | None


def model_source(pretrained: str | Path) -> ModelSource:
    """A model-zoo folder (``pipeline.config`` + ``checkpoint/ckpt-0``), a pipeline.config
    file, or the name (or unique start of the name) of a template in ``sweep/odapi/templates/``."""
    path = Path(pretrained)
    if path.is_dir():
        config = path / "pipeline.config"
        if not config.is_file():
            raise ConfigError(Problem(str(path), "", "has no pipeline.config",
                                      "pass the model folder as downloaded from the model zoo "
                                      "(pipeline.config + checkpoint/)"))
    elif path.is_file():
        config, path = path, path.parent
    else:
        matches = [t for t in available_templates() if t.startswith(str(pretrained))]
        if len(matches) != 1:
            raise ConfigError(Problem(str(pretrained), "", "is no model folder, pipeline.config "
                                      "or template" + (f" (it starts {matches})" if matches
                                                       else ""),
                                      f"use a folder, or one of: {', '.join(available_templates())}"))
        return ModelSource(template_path(matches[0]), None)
    ckpt = path / "checkpoint" / "ckpt-0"
    return ModelSource(config, ckpt if ckpt.with_name("ckpt-0.index").is_file() else None)


def init_model(pretrained: str | Path, annotations_dir: Path, name: str, *,
               batch_size: int = 8, root: Path | None = None, overwrite: bool = False,
               label_map: Path | None = None) -> tuple[Path, ModelSource, DatasetInfo]:
    """Write ``<root>/models/<name>/pipeline.config`` for the data in ``annotations_dir``.

    From the pre-trained model's own config: num_classes, label map and record paths, batch
    size, ``fine_tune_checkpoint`` (type ``detection``) when the model has a checkpoint (else
    none: training starts from scratch) and ``use_bfloat16: false`` (bfloat16 is for TPUs).
    ``root`` defaults to the folder holding ``annotations_dir`` (the tutorial's layout);
    ``label_map`` replaces ``annotations_dir/label_map.pbtxt``.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size >= 1` must hold, but got batch_size={batch_size!r}")
    source = model_source(pretrained)
    dataset = dataset_in(annotations_dir, label_map)
    config = _parse(source.config.read_text(), str(source.config))
    _configure(config, dataset, str(source.config))
    train = config.train_config
    train.batch_size = batch_size
    train.use_bfloat16 = False
    if source.checkpoint is not None:
        train.fine_tune_checkpoint = str(source.checkpoint.absolute())
        train.fine_tune_checkpoint_type = "detection"
    else:
        train.ClearField("fine_tune_checkpoint")
        train.ClearField("fine_tune_checkpoint_type")
    root = Path(root) if root is not None else dataset.annotations_dir.parent
    target = _write_model_config(root, name, text_format.MessageToString(config), overwrite,
                                 f"from {source.config}, {dataset.num_classes} classes, "
                                 f"batch size {batch_size}")
    return target, source, dataset
