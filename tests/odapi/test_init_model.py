"""`sweep init`: a pre-trained model's pipeline.config set up for converted data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sweep.cli import main
from sweep.core.errors import ConfigError
from sweep.data import annotations, convert
from sweep.odapi.render import load_pipeline
from sweep.odapi.workspace import TEMPLATES_DIR, init_model, model_source
from sweep.run.validate import check_pipeline
from tests.annotation_fixtures import make_voc


@pytest.fixture
def annotations_dir(tmp_path: Path) -> Path:
    make_voc(tmp_path / "voc", 10)
    out = tmp_path / "ws" / "annotations"
    convert.convert(annotations.read_voc(tmp_path / "voc"), out, shards=2, split=0.3,
                    progress=False)
    return out


def _zoo_model(tmp_path: Path) -> Path:
    """A model-zoo folder: pipeline.config + checkpoint/ckpt-0.{index,data-*}."""
    model = tmp_path / "pre-trained-models" / "tiny"
    (model / "checkpoint").mkdir(parents=True)
    shutil.copyfile(TEMPLATES_DIR / "tiny_ssd_mobilenet_v2.config", model / "pipeline.config")
    (model / "checkpoint" / "ckpt-0.index").write_bytes(b"")
    (model / "checkpoint" / "ckpt-0.data-00000-of-00001").write_bytes(b"")
    return model


def test_from_a_model_zoo_folder(tmp_path: Path, annotations_dir: Path) -> None:
    model = _zoo_model(tmp_path)
    pipeline, source, data = init_model(model, annotations_dir, "mine", batch_size=3)
    assert pipeline == tmp_path / "ws" / "models" / "mine" / "pipeline.config"
    cfg = load_pipeline(pipeline)
    assert cfg.model.ssd.num_classes == 3 == data.num_classes
    assert cfg.train_config.batch_size == 3
    assert cfg.train_config.fine_tune_checkpoint == str(model / "checkpoint" / "ckpt-0")
    assert cfg.train_config.fine_tune_checkpoint_type == "detection"
    assert cfg.train_config.use_bfloat16 is False
    assert list(cfg.train_input_reader.tf_record_input_reader.input_path) == [
        str(annotations_dir / "train.record-?????-of-00002")]
    assert list(cfg.eval_input_reader[0].tf_record_input_reader.input_path) == [
        str(annotations_dir / "test.record")]
    assert cfg.eval_input_reader[0].label_map_path == str(annotations_dir / "label_map.pbtxt")
    assert (data.n_train, data.n_eval) == (7, 3)
    check_pipeline(pipeline)  # what `sweep init` runs after writing


def test_shipped_template_trains_from_scratch(tmp_path: Path, annotations_dir: Path) -> None:
    source = model_source("ssd_resnet50_v1_fpn_640x640")
    assert source.checkpoint is None and source.config.name.startswith("ssd_resnet50_v1_fpn")
    pipeline, _, _ = init_model("ssd_resnet50_v1_fpn_640x640", annotations_dir, "r50")
    cfg = load_pipeline(pipeline)
    assert not cfg.train_config.fine_tune_checkpoint  # the template's placeholder is gone
    assert cfg.train_config.use_bfloat16 is False  # the template (a TPU config) had true
    assert cfg.model.ssd.num_classes == 3 and cfg.train_config.batch_size == 8
    check_pipeline(pipeline)


def test_never_replaces_a_different_config(tmp_path: Path, annotations_dir: Path) -> None:
    pipeline, _, _ = init_model("tiny_ssd_mobilenet_v2", annotations_dir, "m")
    assert init_model("tiny_ssd_mobilenet_v2", annotations_dir, "m")[0] == pipeline  # same: kept
    with pytest.raises(ConfigError, match="exists and differs.*batch size 2") as e:
        init_model("tiny_ssd_mobilenet_v2", annotations_dir, "m", batch_size=2)
    assert "pass --overwrite" in str(e.value) and "--force" not in str(e.value)  # init's option
    assert load_pipeline(pipeline).train_config.batch_size == 8
    edited = pipeline.read_text() + "# my own edit\n"
    pipeline.write_text(edited)
    init_model("tiny_ssd_mobilenet_v2", annotations_dir, "m", batch_size=2, overwrite=True)
    assert load_pipeline(pipeline).train_config.batch_size == 2
    kept = list(pipeline.parent.glob("pipeline.config.replaced-*"))
    assert [k.read_text() for k in kept] == [edited]  # the user's edits survive, beside it


def test_bad_inputs_say_what_to_do(tmp_path: Path, annotations_dir: Path) -> None:
    with pytest.raises(ConfigError, match="no model folder, pipeline.config or template"):
        init_model(tmp_path / "nowhere", annotations_dir, "m")
    (annotations_dir / "test.record").unlink()
    with pytest.raises(ConfigError, match=r"no test.record .*sweep data voc\|csv\|gtsrb"):
        init_model("tiny_ssd_mobilenet_v2", annotations_dir, "m")


def test_cli_init(tmp_path: Path, annotations_dir: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["init", "--pretrained", "ssd_resnet50_v1_fpn_640x640", "--annotations",
            str(annotations_dir), "--name", "r50", "--batch-size", "4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "training starts from scratch" in out and "ok: label map, TFRecords" in out
    (annotations_dir / "train.record-00001-of-00002").write_bytes(b"garbage, not a record")
    assert main([*args, "--overwrite"]) == 2
    assert "train.record-00001-of-00002: not a readable TFRecord" in capsys.readouterr().err


def test_init_takes_the_users_own_label_map(tmp_path: Path, annotations_dir: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """The records without label_map.pbtxt beside them: init says to pass --label-map (an
    option it has), and takes one from elsewhere; the config points at that file."""
    own = tmp_path / "mine" / "classes.pbtxt"
    own.parent.mkdir()
    shutil.move(annotations_dir / "label_map.pbtxt", own)
    args = ["init", "--pretrained", "tiny_ssd_mobilenet_v2", "--annotations",
            str(annotations_dir), "--name", "m"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no label_map.pbtxt here" in err and "--label-map FILE" in err, err
    assert not (annotations_dir.parent / "models").exists()  # a refusal writes nothing
    assert main([*args, "--label-map", str(own)]) == 0, capsys.readouterr().err
    cfg = load_pipeline(annotations_dir.parent / "models" / "m" / "pipeline.config")
    assert cfg.train_input_reader.label_map_path == str(own)
    assert cfg.eval_input_reader[0].label_map_path == str(own)
    assert main([*args, "--label-map", str(tmp_path / "nowhere.pbtxt"), "--overwrite"]) == 2
    assert "nowhere.pbtxt: cannot read the label map" in capsys.readouterr().err
