"""Rendering trial configs through the OD API protos: seed rows, named parameters, proto paths."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_fixtures import write_events

from sweep.odapi.render import (
    ParamError,
    changed_fields,
    load_pipeline,
    num_steps,
    read_param,
    render,
    write_pipeline,
    write_trial,
)
from sweep.run.best import best_checkpoint
from sweep.search.space import (
    Categorical,
    Choice,
    IntRange,
    LogUniform,
    Param,
    SearchSpace,
    Stepped,
    Uniform,
    load_space,
    replay,
)

ROOT = Path(__file__).resolve().parents[2]
SSD = ROOT / "sweep/odapi/templates/ssd_resnet50_v1_fpn_640x640_coco17_tpu-8.config"
SSD_SPACE = ROOT / "search_spaces/ssd_resnet50_v1_fpn_640x640.yaml"
DEMO_SPACE = ROOT / "search_spaces/demo_tiny.yaml"
_TINY = ROOT / "sweep/odapi/templates/tiny_ssd_mobilenet_v2.config"
TINY = _TINY if _TINY.exists() else Path("/work/shared/reference/tiny_ssd_mobilenet_v2.config")

FE_L2 = "model.ssd.feature_extractor.conv_hyperparams.regularizer.l2_regularizer.weight"
BP_L2 = ("model.ssd.box_predictor.weight_shared_convolutional_box_predictor.conv_hyperparams."
         "regularizer.l2_regularizer.weight")
LR = "train_config.optimizer.momentum_optimizer.learning_rate"


def f32(x: float) -> float:
    import struct

    return struct.unpack("f", struct.pack("f", x))[0]


@pytest.fixture(scope="module")
def ssd():
    return load_pipeline(SSD)


@pytest.fixture(scope="module")
def tiny():
    return load_pipeline(TINY)


def seed_points(base) -> list[dict[str, Any]]:
    space = load_space(SSD_SPACE)
    return [replay(space, p) for p in space.points_to_evaluate(base)]


# --- the seed's rows -------------------------------------------------------------------------

def test_seed_box_coder_and_l2(ssd) -> None:
    params = seed_points(ssd)[1]  # my_ssd_resnet50_v1_fpn_3 (attempt 2)
    cfg = render(ssd, params)
    coder = cfg.model.ssd.box_coder.faster_rcnn_box_coder
    assert (coder.y_scale, coder.x_scale, coder.height_scale, coder.width_scale) == (32, 32, 3, 3)
    assert cfg.model.ssd.feature_extractor.conv_hyperparams.regularizer.l2_regularizer.weight \
        == f32(0.004)
    changed = changed_fields(ssd, cfg)
    assert changed == {
        "model.ssd.box_coder.faster_rcnn_box_coder.y_scale": "32.0",
        "model.ssd.box_coder.faster_rcnn_box_coder.x_scale": "32.0",
        "model.ssd.box_coder.faster_rcnn_box_coder.height_scale": "3.0",
        "model.ssd.box_coder.faster_rcnn_box_coder.width_scale": "3.0",
        FE_L2: "0.004",
        "train_config.num_steps": "40000",
        f"{LR}.cosine_decay_learning_rate.total_steps": "40000",
    }


def test_seed_exponential_decay(ssd) -> None:
    cfg = render(ssd, seed_points(ssd)[2])  # my_ssd_resnet50_v1_fpn_13
    lr = cfg.train_config.optimizer.momentum_optimizer.learning_rate
    assert lr.WhichOneof("learning_rate") == "exponential_decay_learning_rate"
    e = lr.exponential_decay_learning_rate
    assert (e.initial_learning_rate, e.decay_steps, e.decay_factor, e.min_learning_rate) == (
        f32(0.04), 200000, f32(0.95), f32(0.0001))
    changed = changed_fields(ssd, cfg)
    assert changed[f"{LR}.exponential_decay_learning_rate.initial_learning_rate"] == "0.04"
    assert changed[f"{LR}.exponential_decay_learning_rate.min_learning_rate"] == "0.0001"
    assert not any("cosine" in k for k in changed)


def test_seed_cosine_decay(ssd) -> None:
    cfg = render(ssd, seed_points(ssd)[3])  # my_ssd_resnet50_v1_fpn_14
    c = cfg.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert (c.learning_rate_base, c.total_steps, c.warmup_learning_rate, c.warmup_steps) == (
        f32(0.0001), 40000, f32(0.00005), 2000)
    assert num_steps(cfg) == 40000


def test_seed_rows_by_hand_without_a_space(ssd) -> None:
    """The 100000-step cosine run: any row is a flat dict of named parameters."""
    cfg = render(ssd, {"num_steps": 100000, "learning_rate": "cosine_decay_learning_rate",
                       "cosine_decay_learning_rate.learning_rate_base": 0.0001,
                       "cosine_decay_learning_rate.warmup_learning_rate": 0.00005,
                       "cosine_decay_learning_rate.warmup_steps": 2000})
    c = cfg.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert c.total_steps == 100000  # tied to num_steps, as in the base


def test_base_point_renders_the_base(ssd) -> None:
    cfg = render(ssd, seed_points(ssd)[0])
    assert changed_fields(ssd, cfg) == {"train_config.num_steps": "40000",
                                        f"{LR}.cosine_decay_learning_rate.total_steps": "40000"}


# --- named parameters and proto paths ----------------------------------------------------------

def test_render_is_pure(tiny) -> None:
    before = text_format.MessageToString(tiny)
    render(tiny, {"batch_size": 2, "l2_weight": 0.001, "augment.random_horizontal_flip": False})
    assert text_format.MessageToString(tiny) == before


def test_tied_and_separate_l2(tiny) -> None:
    cfg = render(tiny, {"l2_weight": 0.001})
    assert set(changed_fields(tiny, cfg)) == {FE_L2, BP_L2}
    cfg = render(tiny, {"l2_weight.box_predictor": 0.002})
    assert changed_fields(tiny, cfg) == {BP_L2: "0.002"}


def test_proto_path_without_code_change(tiny) -> None:
    cfg = render(tiny, {"model.ssd.loss.classification_weight": 2.5,
                        "eval_input_reader[0].label_map_path": "lm.pbtxt",
                        "train_input_reader.tf_record_input_reader.input_path": ["a", "b"],
                        "model.ssd.post_processing.score_converter": "SOFTMAX"})
    assert cfg.model.ssd.loss.classification_weight == 2.5
    assert cfg.eval_input_reader[0].label_map_path == "lm.pbtxt"
    assert list(cfg.train_input_reader.tf_record_input_reader.input_path) == ["a", "b"]
    assert changed_fields(tiny, cfg)["model.ssd.post_processing.score_converter"] == "SOFTMAX"


def test_optimizer_momentum_focal_batch(tiny) -> None:
    cfg = render(tiny, {"optimizer": "rms_prop_optimizer", "momentum": 0.8, "batch_size": 2,
                        "focal_loss.alpha": 0.5, "focal_loss.gamma": 1.5})
    opt = cfg.train_config.optimizer
    assert opt.WhichOneof("optimizer") == "rms_prop_optimizer"
    assert opt.rms_prop_optimizer.momentum_optimizer_value == f32(0.8)
    # the schedule moved over with the optimizer
    before = tiny.train_config.optimizer.momentum_optimizer.learning_rate
    assert opt.rms_prop_optimizer.learning_rate == before
    focal = cfg.model.ssd.loss.classification_loss.weighted_sigmoid_focal
    assert (focal.alpha, focal.gamma, cfg.train_config.batch_size) == (0.5, 1.5, 2)
    with pytest.raises(ParamError, match="adam_optimizer, which has no momentum"):
        render(tiny, {"optimizer": "adam_optimizer", "momentum": 0.9})


def test_schedules(tiny) -> None:
    cfg = render(tiny, {"learning_rate": "manual_step_learning_rate",
                        "manual_step_learning_rate.initial_learning_rate": 0.01,
                        "manual_step_learning_rate.schedule": [[10, 0.001], [20, 0.0001]]})
    m = cfg.train_config.optimizer.momentum_optimizer.learning_rate.manual_step_learning_rate
    assert [(s.step, round(s.learning_rate, 6)) for s in m.schedule] == [(10, 0.001), (20, 1e-4)]
    cfg = render(tiny, {"learning_rate": "constant_learning_rate",
                        "constant_learning_rate.learning_rate": 0.003})
    assert read_param(cfg, "learning_rate") == "constant_learning_rate"
    assert read_param(cfg, "constant_learning_rate.learning_rate") == 0.003
    with pytest.raises(ParamError, match="warmup_learning_rate=0.5 > learning_rate_base=0.03"):
        render(tiny, {"cosine_decay_learning_rate.warmup_learning_rate": 0.5})


def test_augmentation_on_off_and_parameters(tiny) -> None:
    cfg = render(tiny, {"augment.random_horizontal_flip": False,
                        "augment.random_adjust_brightness": True,
                        "augment.random_adjust_brightness.max_delta": 0.3,
                        "augment.random_vertical_flip": False,
                        "augment.random_vertical_flip.probability": 0.1})
    steps = [s.WhichOneof("preprocessing_step") for s in cfg.train_config.data_augmentation_options]
    assert steps == ["random_adjust_brightness"]
    assert cfg.train_config.data_augmentation_options[0].random_adjust_brightness.max_delta \
        == f32(0.3)
    assert changed_fields(tiny, cfg) == {
        "train_config.data_augmentation_options": "random_adjust_brightness { max_delta: 0.3 }"}


def test_type_errors_name_the_field(tiny) -> None:
    with pytest.raises(ParamError, match="batch_size takes an integer, got 'big'"):
        render(tiny, {"batch_size": "big"})
    with pytest.raises(ParamError, match="SsdFeatureExtractor\\) has no field 'nope'"):
        render(tiny, {"model.ssd.feature_extractor.nope": 1})


def test_write_and_reload(tmp_path: Path, tiny) -> None:
    params = {"batch_size": 2, "l2_weight": 0.001}
    cfg = write_trial(tmp_path / "t1", tiny, params)
    assert load_pipeline(tmp_path / "t1" / "pipeline.config") == cfg
    assert json.loads((tmp_path / "t1" / "params.json").read_text()) == params
    write_pipeline(cfg, tmp_path / "p.config")
    assert load_pipeline(tmp_path / "p.config") == cfg


# --- warm start from an earlier experiment -----------------------------------------------------

def make_experiment(root: Path, name: str, trials: dict[str, float]) -> Path:
    exp = root / name
    exp.mkdir(parents=True)
    (exp / "experiment.json").write_text(json.dumps(
        {"metrics": ["DetectionBoxes_Precision/mAP"], "modes": ["max"]}))
    for trial, value in trials.items():
        best = exp / "trials" / trial / "best"
        best.mkdir(parents=True)
        (best / "ckpt-3.index").write_text("")
        (best / "best.json").write_text(json.dumps(
            {"step": 300, "metric": "DetectionBoxes_Precision/mAP", "value": value,
             "checkpoint": "ckpt-3"}))
        # What the eval job leaves: the metric at step 300 and which checkpoint that was.
        write_events(best.parent / "eval", {300: {"DetectionBoxes_Precision/mAP": value}},
                     start_wall=1.0, seconds_per_step=1.0)
        (best.parent / "ckpt-4.index").write_text("")  # a later checkpoint, not the best
        (best.parent / "eval" / "evaluated.jsonl").write_text(
            json.dumps({"checkpoint": "ckpt-3", "step": 300}) + "\n")
    return exp


def test_fine_tune_from_best_of_an_earlier_experiment(tmp_path: Path, tiny) -> None:
    exp = make_experiment(tmp_path, "my_model_6", {"a": 0.2, "b": 0.5, "c": 0.1})
    assert best_checkpoint("my_model_6", tmp_path) == exp / "trials/b/best/ckpt-3"
    resolve = functools.partial(best_checkpoint, storage=tmp_path)
    cfg = render(tiny, {"fine_tune_checkpoint": "best:my_model_6"}, resolve_best=resolve)
    assert cfg.train_config.fine_tune_checkpoint == str(exp / "trials/b/best/ckpt-3")
    assert cfg.train_config.fine_tune_checkpoint_type == "detection"
    with pytest.raises(FileNotFoundError, match="no experiment 'nope'"):
        render(tiny, {"fine_tune_checkpoint": "best:nope"}, resolve_best=resolve)
    # Without a resolver (validation renders before any experiment exists) it stays as written.
    assert render(tiny, {"fine_tune_checkpoint": "best:nope"}).train_config.fine_tune_checkpoint \
        == "best:nope"


# --- property: any sample of a shipped space renders into a config that parses -----------------

def draw_point(data: st.DataObject, params: tuple[Param, ...], point: dict[str, Any]) -> None:
    """Draw a value for every active parameter, straight from its distribution."""
    def bound(b: Any) -> float:
        return point[b] if isinstance(b, str) else b

    for p in params:
        d = p.dist
        if isinstance(d, Categorical | Choice):
            value = data.draw(st.sampled_from(d.choices), label=p.name)
        elif isinstance(d, IntRange):
            lo, hi = int(bound(d.low)), int(bound(d.high))
            value = lo + d.step * data.draw(st.integers(0, (hi - lo) // d.step), label=p.name)
        elif isinstance(d, Stepped):
            lo, hi = bound(d.low), bound(d.high)
            value = lo + d.step * data.draw(st.integers(0, int((hi - lo) // d.step)), label=p.name)
        elif isinstance(d, Uniform | LogUniform):
            value = data.draw(st.floats(bound(d.low), bound(d.high)), label=p.name)
        else:
            continue
        point[p.name] = value
        if isinstance(d, Choice):
            draw_point(data, d.branch(value), point)


@pytest.mark.parametrize("space_path,base_path", [(SSD_SPACE, SSD), (DEMO_SPACE, TINY)],
                         ids=["ssd_resnet50", "demo_tiny"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_sample_renders_and_parses(space_path: Path, base_path: Path, data) -> None:
    space: SearchSpace = load_space(space_path)
    base = load_pipeline(base_path)
    point: dict[str, Any] = {}
    draw_point(data, space.params, point)
    cfg = render(base, replay(space, point))
    text = text_format.MessageToString(cfg)
    reparsed = text_format.Parse(text, type(cfg)())
    assert reparsed == cfg
    for name, value in point.items():
        if name.startswith("augment.") or name == "learning_rate":
            continue
        if isinstance(value, float):
            assert read_param(cfg, name) == pytest.approx(value, rel=1e-6, abs=1e-30)
        else:
            assert read_param(cfg, name) == value


# --- slow: the OD API itself loads and builds what we render -----------------------------------

@pytest.mark.slow
def test_rendered_configs_load_with_config_util(tmp_path: Path, ssd, tiny) -> None:
    from sweep.odapi.compat import patch

    patch()
    from object_detection.utils import config_util

    for base, params in [(ssd, seed_points(ssd)[2]), (tiny, replay(
            load_space(DEMO_SPACE), load_space(DEMO_SPACE).points_to_evaluate(tiny)[0]))]:
        write_pipeline(render(base, params), tmp_path / "pipeline.config")
        configs = config_util.get_configs_from_pipeline_file(str(tmp_path / "pipeline.config"))
        assert configs["train_config"].num_steps == params["num_steps"]


@pytest.mark.slow
def test_rendered_demo_config_builds_the_model(tiny) -> None:
    from sweep.odapi.compat import patch

    patch()
    from object_detection.builders import model_builder

    space = load_space(DEMO_SPACE)
    point = {**space.points_to_evaluate(tiny)[0], "learning_rate": "constant_learning_rate",
             "constant_learning_rate.learning_rate": 0.01, "augment.random_horizontal_flip": False,
             "box_coder.y_scale": 12.0, "focal_loss.gamma": 1.5}
    point = {k: v for k, v in point.items() if not k.startswith("cosine")}
    cfg = render(tiny, replay(space, point))
    model = model_builder.build(cfg.model, is_training=True)
    assert model.num_classes == 3
