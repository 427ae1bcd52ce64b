"""The tutorial workspace and the demo pipeline.config rendered into it."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from object_detection.protos import pipeline_pb2

from sweep.core.errors import ConfigError
from sweep.data.dataset import CLASS_NAMES, DatasetInfo, make_dataset
from sweep.odapi.workspace import (
    SUBDIRS,
    available_templates,
    init_workspace,
    render_pipeline_config,
    template_path,
)

TEMPLATE = "tiny_ssd_mobilenet_v2"


def _dataset(annotations: Path) -> DatasetInfo:
    # The writer only needs the paths and class names; no files have to exist.
    return DatasetInfo(
        annotations_dir=annotations,
        label_map_path=annotations / "label_map.pbtxt",
        train_record=annotations / "train.record",
        eval_record=annotations / "test.record",
        class_names=CLASS_NAMES,
        n_train=64,
        n_eval=16,
        image_size=128,
    )


def _load(path: Path) -> pipeline_pb2.TrainEvalPipelineConfig:
    config = pipeline_pb2.TrainEvalPipelineConfig()
    text_format.Parse(path.read_text(), config)
    return config


def test_template_ships_with_the_package() -> None:
    assert TEMPLATE in available_templates()
    path = template_path(TEMPLATE)
    assert path.parent.name == "templates" and path.parent.parent.name == "odapi"
    assert "PATH/TO" in path.read_text()  # placeholders the writer must replace


def test_unknown_template_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=rf"no pipeline.config template named 'nope'.*{TEMPLATE}"):
        template_path("nope")


def test_layout_and_rendered_config(tmp_path: Path) -> None:
    root = tmp_path / "workspace" / "training_demo"
    dataset = _dataset(root / "annotations")
    path = init_workspace(root, dataset=dataset)

    assert path == root / "models" / "demo_tiny_ssd" / "pipeline.config"
    assert sorted(p.name for p in root.iterdir()) == sorted(SUBDIRS)
    config = _load(path)
    template = _load(template_path(TEMPLATE))
    assert config.model.ssd.num_classes == dataset.num_classes
    assert template.model.ssd.num_classes != dataset.num_classes  # the writer changed it
    assert config.train_input_reader.label_map_path == str(dataset.label_map_path)
    assert list(config.train_input_reader.tf_record_input_reader.input_path) == [
        str(dataset.train_record)]
    assert len(config.eval_input_reader) == len(template.eval_input_reader) >= 1
    for reader in config.eval_input_reader:
        assert reader.label_map_path == str(dataset.label_map_path)
        assert list(reader.tf_record_input_reader.input_path) == [str(dataset.eval_record)]
    assert "PATH/TO" not in path.read_text()

    # Everything else is the template's, unchanged.
    for field in ("train_config", "eval_config"):
        assert getattr(config, field) == getattr(template, field)
    config.model.ssd.num_classes = template.model.ssd.num_classes
    assert config.model == template.model


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = init_workspace(Path("ws"), dataset=_dataset(Path("ws/annotations")))
    assert path.is_absolute()
    config = _load(path)
    assert config.train_input_reader.label_map_path == str(
        tmp_path / "ws" / "annotations" / "label_map.pbtxt")
    assert config.eval_input_reader[0].tf_record_input_reader.input_path[0] == str(
        tmp_path / "ws" / "annotations" / "test.record")


def test_same_config_is_kept_as_the_user_formatted_it(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "annotations")
    path = init_workspace(tmp_path, dataset=dataset)
    # Same message, other formatting and a comment: it means the same, so it stays.
    reformatted = "# my notes\n" + text_format.MessageToString(_load(path), as_one_line=True)
    path.write_text(reformatted)
    assert init_workspace(tmp_path, dataset=dataset) == path
    assert path.read_text() == reformatted


def test_different_config_is_not_overwritten(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "annotations")
    path = init_workspace(tmp_path, dataset=dataset)
    config = _load(path)
    config.train_config.batch_size = 2  # the user's own edit
    mine = text_format.MessageToString(config)
    path.write_text(mine)

    with pytest.raises(ConfigError) as err:
        init_workspace(tmp_path, dataset=dataset)
    (problem,) = err.value.problems
    assert problem.file == str(path)
    assert "--force" in problem.fix
    assert path.read_text() == mine

    init_workspace(tmp_path, dataset=dataset, overwrite=True)
    template_batch = _load(template_path(TEMPLATE)).train_config.batch_size
    assert _load(path).train_config.batch_size == template_batch


def test_unparsable_existing_config_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "models" / "demo_tiny_ssd" / "pipeline.config"
    path.parent.mkdir(parents=True)
    path.write_text("not a { proto")
    with pytest.raises(ConfigError, match="exists and differs"):
        init_workspace(tmp_path, dataset=_dataset(tmp_path / "annotations"))
    assert path.read_text() == "not a { proto"


def test_other_model_names_get_their_own_folder(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "annotations")
    a = init_workspace(tmp_path, dataset=dataset)
    b = init_workspace(tmp_path, model_name="second", dataset=dataset)
    assert a != b and b.parent.name == "second" and _load(a) == _load(b)


@pytest.mark.parametrize("name", ["", "..", "a/b", "../escape"])
def test_model_name_must_be_a_plain_folder_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="`model_name` must be a plain folder name"):
        init_workspace(tmp_path, model_name=name, dataset=_dataset(tmp_path))


def test_with_a_real_dataset(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "annotations", n_train=2, n_eval=1, image_size=32)
    config = _load(init_workspace(tmp_path, dataset=dataset))
    assert Path(config.train_input_reader.tf_record_input_reader.input_path[0]).is_file()
    assert Path(config.eval_input_reader[0].label_map_path).is_file()
    assert render_pipeline_config(TEMPLATE, dataset) == text_format.MessageToString(config)


@pytest.mark.slow
def test_od_api_loads_the_rendered_config(tmp_path: Path) -> None:
    from sweep.odapi.compat import patch

    patch()
    from object_detection.utils import config_util, label_map_util

    dataset = make_dataset(tmp_path / "annotations", n_train=2, n_eval=1)
    configs = config_util.get_configs_from_pipeline_file(
        str(init_workspace(tmp_path, dataset=dataset)))
    assert configs["model"].ssd.num_classes == dataset.num_classes
    label_map = label_map_util.get_label_map_dict(configs["train_input_config"].label_map_path)
    assert label_map == {name: i for i, name in enumerate(dataset.class_names, start=1)}
