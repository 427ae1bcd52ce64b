"""`sweep validate`: one test per failure, each asserting the file, key and message."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.core.errors import ConfigError, Problem
from sweep.data.tfrecord import frame_record
from sweep.odapi.render import load_pipeline, render, write_pipeline
from sweep.run.validate import check, count_records, validate

ROOT = Path(__file__).resolve().parents[2]
_TINY = ROOT / "sweep/odapi/templates/tiny_ssd_mobilenet_v2.config"
TINY = _TINY if _TINY.exists() else Path("/work/shared/reference/tiny_ssd_mobilenet_v2.config")

GOOD_SPACE = """
parameters:
  num_steps: 40
  l2_weight: {loguniform: [1.0e-5, 1.0e-3]}
  box_coder.y_scale: {uniform: [5.0, 20.0]}
"""

FASTER_RCNN = """
model { faster_rcnn {
  num_classes: 3
  image_resizer { keep_aspect_ratio_resizer { min_dimension: 600 max_dimension: 1024 } }
  feature_extractor { type: 'faster_rcnn_resnet50_keras' }
} }
train_config { batch_size: 1 num_steps: 10
  optimizer { momentum_optimizer { learning_rate { constant_learning_rate {
    learning_rate: 0.01 } } } } }
"""

LABEL_MAP = "".join(f"item {{ id: {i} name: 'c{i}' }}\n" for i in (1, 2, 3))


def tfrecord(payloads: list[bytes]) -> bytes:
    return b"".join(frame_record(p) for p in payloads)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    """A valid space + pipeline + data; tests break one thing at a time."""
    (tmp_path / "label_map.pbtxt").write_text(LABEL_MAP)
    (tmp_path / "train.record").write_bytes(tfrecord([b"a" * 10, b"b" * 20, b"c"]))
    (tmp_path / "test.record").write_bytes(tfrecord([b"x" * 5]))
    cfg = render(load_pipeline(TINY), {
        "train_input_reader.label_map_path": str(tmp_path / "label_map.pbtxt"),
        "eval_input_reader[0].label_map_path": str(tmp_path / "label_map.pbtxt"),
        "train_input_reader.tf_record_input_reader.input_path": str(tmp_path / "train.record"),
        "eval_input_reader[0].tf_record_input_reader.input_path": str(tmp_path / "test.record"),
    })
    write_pipeline(cfg, tmp_path / "pipeline.config")
    (tmp_path / "space.yaml").write_text(GOOD_SPACE)
    return {"dir": tmp_path, "space": tmp_path / "space.yaml",
            "pipeline": tmp_path / "pipeline.config"}


def problems_for(setup: dict[str, Path], space: str | None = None, **kw) -> list[Problem]:
    if space is not None:
        setup["space"].write_text(space)
    return validate(setup["space"], setup["pipeline"], **kw)


def one(problems: list[Problem], key: str) -> Problem:
    found = [p for p in problems if p.key == key]
    assert len(found) == 1, f"expected one problem at {key}, got {problems}"
    return found[0]


def edit_pipeline(setup: dict[str, Path], params: dict) -> None:
    cfg = render(load_pipeline(setup["pipeline"]), params)
    write_pipeline(cfg, setup["pipeline"])


# --- the good case ---------------------------------------------------------------------------

def test_valid_setup_has_no_problems(setup) -> None:
    assert problems_for(setup) == []
    check(setup["space"], setup["pipeline"])  # does not raise


@pytest.mark.parametrize("space,base", [
    ("search_spaces/demo_tiny.yaml", TINY),
    ("search_spaces/ssd_resnet50_v1_fpn_640x640.yaml",
     "sweep/odapi/templates/ssd_resnet50_v1_fpn_640x640_coco17_tpu-8.config")])
def test_shipped_spaces_fit_their_base(space: str, base: str | Path) -> None:
    assert validate(ROOT / space, ROOT / base, check_data=False) == []


def test_check_raises_with_every_problem(setup) -> None:
    setup["space"].write_text("parameters:\n  batch_size: {uniform: [8, 4]}\n  x/y: 1\n")
    with pytest.raises(ConfigError) as e:
        check(setup["space"], setup["pipeline"])
    assert len(e.value.problems) == 2
    assert "inverted range" in str(e.value) and "must not contain '/'" in str(e.value)


# --- the space file --------------------------------------------------------------------------

def test_missing_space_file(setup) -> None:
    p = validate(setup["dir"] / "nope.yaml", setup["pipeline"])[0]
    assert p.file.endswith("nope.yaml") and "cannot read the search-space file" in p.problem


def test_yaml_syntax(setup) -> None:
    p = problems_for(setup, "parameters:\n  a: {uniform: [1, 2]\n  b: 1\n")[0]
    assert p.file == str(setup["space"])
    assert p.key.startswith("line 3") and "invalid YAML" in p.problem


def test_unknown_top_level_key(setup) -> None:
    p = one(problems_for(setup, GOOD_SPACE + "sampler: tpe\n"), "sampler")
    assert p.problem == "unknown top-level key" and "parameters" in p.fix


def test_unknown_spec_key(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  batch_size: {int: [1, 8], stpe: 2}\n"),
            "parameters.batch_size.stpe")
    assert "unknown key for a int parameter" in p.problem and "step" in p.fix


def test_spec_without_a_kind(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  batch_size: {low: 1, high: 8}\n"),
            "parameters.batch_size")
    assert "needs exactly one of uniform, loguniform" in p.problem


def test_bound_type(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  momentum: {uniform: [0.5, high]}\n"),
            "parameters.momentum.uniform")
    assert "bound 'high' is not a number nor a numeric parameter defined before" in p.problem


def test_value_type_against_the_field(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  batch_size: {categorical: [4, big]}\n"),
            "parameters.batch_size")
    assert p.problem == "value 'big': batch_size takes an integer, got 'big' (str)"


def test_inverted_range(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  momentum: {uniform: [0.99, 0.8]}\n"),
            "parameters.momentum.uniform")
    assert p.problem == "inverted range: low=0.99 > high=0.8" and "swap" in p.fix


def test_empty_range(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  batch_size: {int: [8, 8]}\n"),
            "parameters.batch_size.int")
    assert p.problem == "empty range: low == high == 8" and "batch_size: 8" in p.fix


def test_empty_categorical(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  batch_size: {categorical: []}\n"),
            "parameters.batch_size.categorical")
    assert "non-empty list" in p.problem


def test_loguniform_bound_not_positive(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  l2_weight: {loguniform: [0, 1.0e-3]}\n"),
            "parameters.l2_weight.loguniform")
    assert p.problem == "log-uniform bounds must be > 0, got 0" and "uniform" in p.fix


def test_slash_in_name(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  model/ssd/num_classes: 3\n"),
            "parameters.model/ssd/num_classes")
    assert "must not contain '/'" in p.problem and "use dots" in p.fix


def test_duplicate_name_across_options(setup) -> None:
    space = """
parameters:
  learning_rate:
    choice:
      constant_learning_rate: {momentum: 0.9}
      cosine_decay_learning_rate: {momentum: 0.8}
"""
    p = one(problems_for(setup, space),
            "parameters.learning_rate.choice.cosine_decay_learning_rate.momentum")
    assert "defined twice" in p.problem


def test_derived_from_unknown(setup) -> None:
    space = "parameters:\n  cosine_decay_learning_rate.total_steps: {derived: num_steps}\n"
    p = one(problems_for(setup, space),
            "parameters.cosine_decay_learning_rate.total_steps.derived")
    assert "'num_steps' is not a parameter defined before this one" in p.problem


def test_point_outside_range(setup) -> None:
    p = one(problems_for(setup, GOOD_SPACE + "points:\n  - {box_coder.y_scale: 32.0}\n"),
            "points[0].box_coder.y_scale")
    assert p.problem == "value 32.0 is outside the parameter's range [5.0, 20.0]"


def test_point_unknown_and_inactive(setup) -> None:
    space = """
parameters:
  learning_rate:
    choice:
      constant_learning_rate:
        constant_learning_rate.learning_rate: {loguniform: [1.0e-4, 0.1]}
      cosine_decay_learning_rate: {}
points:
  - {learning_rate: cosine_decay_learning_rate, constant_learning_rate.learning_rate: 0.01}
  - {batch_size: 4}
"""
    problems = problems_for(setup, space)
    p = one(problems, "points[0].constant_learning_rate.learning_rate")
    assert p.problem == "only exists when learning_rate = 'constant_learning_rate'"
    assert one(problems, "points[1].batch_size").problem == "not a parameter of this space"


def test_space_can_render_invalid_trials(setup) -> None:
    space = """
parameters:
  cosine_decay_learning_rate.warmup_learning_rate: {loguniform: [1.0e-3, 0.5]}
"""
    p = one(problems_for(setup, space),
            "parameters.cosine_decay_learning_rate.warmup_learning_rate")
    assert "renders an invalid config: warmup_learning_rate=" in p.problem
    assert "> learning_rate_base=0.03" in p.problem


# --- parameter paths against the architecture ------------------------------------------------

def test_box_coder_on_faster_rcnn(setup) -> None:
    setup["pipeline"].write_text(FASTER_RCNN)
    space = "parameters:\n  box_coder.y_scale: {uniform: [5.0, 40.0]}\n"
    p = one(problems_for(setup, space, check_data=False), "parameters.box_coder.y_scale")
    assert p.file == str(setup["space"])
    assert p.problem == ("this pipeline's model is faster_rcnn, which has no box_coder field "
                         "(Faster R-CNN hard-codes its box coder)")


def test_proto_path_of_another_architecture(setup) -> None:
    space = "parameters:\n  model.faster_rcnn.first_stage_max_proposals: 100\n"
    p = one(problems_for(setup, space), "parameters.model.faster_rcnn.first_stage_max_proposals")
    assert "this pipeline's model is ssd, so model.faster_rcnn does not exist" in p.problem


def test_unknown_proto_field(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  model.ssd.loss.classification_wieght: 2.0\n"),
            "parameters.model.ssd.loss.classification_wieght")
    assert p.problem == "model.ssd.loss (Loss) has no field 'classification_wieght'"
    assert "classification_weight" in p.fix


def test_unknown_name(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  lr: {uniform: [0.1, 0.2]}\n"),
            "parameters.lr")
    assert p.problem == "not a named parameter nor a proto path"


def test_unknown_augmentation(setup) -> None:
    p = one(problems_for(setup, "parameters:\n  augment.random_flip: true\n"),
            "parameters.augment.random_flip")
    assert "'random_flip' is not a data augmentation of the OD API" in p.problem


def test_bad_pipeline_syntax(setup) -> None:
    setup["pipeline"].write_text("model { ssd { num_classes: three } }\n")
    p = problems_for(setup)[0]
    assert p.file == str(setup["pipeline"]) and p.key == "line 1"
    assert "not a valid pipeline.config" in p.problem


# --- label maps ------------------------------------------------------------------------------

def test_label_map_vs_num_classes(setup) -> None:
    edit_pipeline(setup, {"model.ssd.num_classes": 43})
    p = one(problems_for(setup), "model.ssd.num_classes")
    assert p.file == str(setup["pipeline"])
    assert "is 43 but the label map" in p.problem and "has 3 classes (ids 1..3)" in p.problem
    assert "set model.ssd.num_classes: 3" in p.fix


def test_num_classes_constant_in_the_space_fixes_it(setup) -> None:
    edit_pipeline(setup, {"model.ssd.num_classes": 43})
    assert problems_for(setup, GOOD_SPACE + "  model.ssd.num_classes: 3\n") == []


def test_label_map_missing(setup) -> None:
    (setup["dir"] / "label_map.pbtxt").unlink()
    p = one(problems_for(setup), "train_input_reader.label_map_path")
    assert "cannot read label map" in p.problem and "No such file" in p.problem


def test_label_map_unparsable(setup) -> None:
    (setup["dir"] / "label_map.pbtxt").write_text("item { id: 1 nme: 'x' }\n")
    p = problems_for(setup)[0]
    assert p.file.endswith("label_map.pbtxt") and "not a label map" in p.problem


def test_label_map_bad_ids(setup) -> None:
    (setup["dir"] / "label_map.pbtxt").write_text(
        "item { id: 0 name: 'a' } item { id: 2 name: 'b' } item { id: 2 name: 'c' }")
    problems = problems_for(setup)
    assert any("ids start at 1" in p.problem for p in problems)
    assert any(p.problem == "duplicate ids [2]" for p in problems)


# --- TFRecords -------------------------------------------------------------------------------

def test_tfrecord_missing(setup) -> None:
    (setup["dir"] / "train.record").unlink()
    p = one(problems_for(setup), "train_input_reader.tf_record_input_reader.input_path")
    assert p.problem == f"no TFRecord file at '{setup['dir'] / 'train.record'}'"


def test_tfrecord_empty(setup) -> None:
    (setup["dir"] / "test.record").write_bytes(b"")
    p = one(problems_for(setup), "eval_input_reader[0].tf_record_input_reader.input_path")
    assert p.problem.endswith("is unreadable: the file is empty")


def test_tfrecord_torn(setup) -> None:
    data = tfrecord([b"a" * 100, b"b" * 100])
    (setup["dir"] / "train.record").write_bytes(data[:-30])
    p = one(problems_for(setup), "train_input_reader.tf_record_input_reader.input_path")
    assert "is unreadable: record at byte 116 is truncated (100 bytes announced)" in p.problem


def test_tfrecord_not_a_tfrecord(setup) -> None:
    (setup["dir"] / "train.record").write_bytes(b"\xff\xd8\xff JPEG, not a record" * 4)
    p = one(problems_for(setup), "train_input_reader.tf_record_input_reader.input_path")
    assert "bad length checksum at byte 0: not a TFRecord file" in p.problem


def test_tfrecord_glob_and_count(setup) -> None:
    for i in range(3):
        (setup["dir"] / f"shard-{i:05d}-of-00003.record").write_bytes(tfrecord([b"x"] * (i + 1)))
    edit_pipeline(setup, {"train_input_reader.tf_record_input_reader.input_path":
                          str(setup["dir"] / "shard-?????-of-00003.record")})
    assert problems_for(setup) == []
    assert count_records(setup["dir"] / "shard-00002-of-00003.record") == 3


def test_examples_are_counted_once_per_reader_and_full_verification(setup) -> None:
    """`check` returns what it counted (the report's dataset sizes: no second read); a
    corrupt record outside the default sample is found by --verify-data full."""
    for i in range(3):
        (setup["dir"] / f"shard-{i:05d}-of-00003.record").write_bytes(tfrecord([b"x"] * (i + 1)))
    edit_pipeline(setup, {"train_input_reader.tf_record_input_reader.input_path":
                          str(setup["dir"] / "shard-?????-of-00003.record")})
    assert check(setup["space"], setup["pipeline"]) == {
        "train_input_reader": 6, "eval_input_reader[0]": 1}
    data = bytearray(tfrecord([bytes([i]) * 8 for i in range(20)]))
    data[12 * 24 + 12 + 2] ^= 0xFF  # record 12's data (records are 24 bytes): not sampled
    (setup["dir"] / "test.record").write_bytes(bytes(data))
    assert check(setup["space"], setup["pipeline"])["eval_input_reader[0]"] == 20
    p = one(problems_for(setup, verify_data="full"),
            "eval_input_reader[0].tf_record_input_reader.input_path")
    assert "record 12 has a bad data checksum" in p.problem


def test_data_checks_can_be_skipped(setup) -> None:
    (setup["dir"] / "train.record").unlink()
    assert problems_for(setup, check_data=False) == []


# --- fine-tune checkpoints -------------------------------------------------------------------

def test_fine_tune_checkpoint_missing(setup) -> None:
    space = GOOD_SPACE + f"  fine_tune_checkpoint: {setup['dir']}/ckpt-5\n"
    p = one(problems_for(setup, space), "parameters.fine_tune_checkpoint")
    assert p.problem == f"no checkpoint at '{setup['dir']}/ckpt-5' (looked for " \
                        f"{setup['dir']}/ckpt-5.index)"


def test_fine_tune_checkpoint_in_pipeline(setup) -> None:
    edit_pipeline(setup, {"fine_tune_checkpoint": str(setup["dir"])})
    p = one(problems_for(setup), "train_config.fine_tune_checkpoint")
    assert p.file == str(setup["pipeline"]) and "is a folder, not a checkpoint prefix" in p.problem


def test_fine_tune_checkpoint_present(setup) -> None:
    (setup["dir"] / "ckpt-5.index").write_text("")
    space = GOOD_SPACE + (f"  fine_tune_checkpoint: {setup['dir']}/ckpt-5\n"
                          "  fine_tune_checkpoint_type: detection\n")
    assert problems_for(setup, space) == []


def test_fine_tune_checkpoint_type(setup) -> None:
    (setup["dir"] / "ckpt-5.index").write_text("")
    space = GOOD_SPACE + (f"  fine_tune_checkpoint: {setup['dir']}/ckpt-5\n"
                          "  fine_tune_checkpoint_type: detections\n")
    p = one(problems_for(setup, space), "parameters.fine_tune_checkpoint_type")
    assert "'detections' is not a checkpoint type the OD API loads" in p.problem


def test_fine_tune_from_an_experiment_that_does_not_exist(setup) -> None:
    space = GOOD_SPACE + "  fine_tune_checkpoint: 'best:my_model_6'\n"
    p = one(problems_for(setup, space, storage=setup["dir"]), "parameters.fine_tune_checkpoint")
    assert "'best:my_model_6': no experiment 'my_model_6'" in p.problem


@pytest.mark.parametrize(("batch", "ok"), [
    ("{categorical: [4, 8, 16]}", True), ("{categorical: [4, 6, 9]}", False),
    ("{int: [2, 16], step: 2}", True), ("{int: [2, 16]}", False), ("{int: [3, 15], step: 2}", False),
    ("8", True), ("5", False),
])
def test_batch_size_must_divide_by_the_replicas_of_a_multi_gpu_trial(setup, batch, ok) -> None:  # noqa: ANN001
    space = GOOD_SPACE + f"  batch_size: {batch}\n"
    assert problems_for(setup, space) == []  # one device: any batch size
    problems = problems_for(setup, space, replicas=2)
    if ok:
        assert problems == []
    else:
        p = one(problems, "parameters.batch_size")
        assert "do not divide by the 2 replicas of --gpus-per-trial 2" in p.problem
        assert "multiples of 2" in p.fix


def test_base_batch_size_must_divide_by_the_replicas(setup) -> None:
    edit_pipeline(setup, {"batch_size": 3})
    p = one(problems_for(setup, replicas=2), "train_config.batch_size")
    assert p.file == str(setup["pipeline"]) and "3 does not divide by the 2 replicas" in p.problem
    assert problems_for(setup, replicas=3) == []
