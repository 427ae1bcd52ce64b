"""Search-space format: loading into typed objects, conditionals, define-by-run, points."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sweep.search.space import (
    BasePoint,
    Categorical,
    Choice,
    Constant,
    Derived,
    IntRange,
    LogUniform,
    Stepped,
    Uniform,
    load_space,
    random_samples,
    replay,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


SPACE = """
description: test
parameters:
  num_steps: 1000
  batch_size: {categorical: [4, 8]}
  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}
  box_coder.y_scale: {uniform: [5, 40]}
  focal_loss.gamma: {stepped: [1.0, 3.0, 0.5]}
  exponential_decay_learning_rate.decay_steps: {int: [1000, 200000], log: true}
  learning_rate:
    choice:
      cosine_decay_learning_rate:
        cosine_decay_learning_rate.learning_rate_base: {loguniform: [1.0e-4, 0.1]}
        cosine_decay_learning_rate.total_steps: {derived: num_steps}
        cosine_decay_learning_rate.warmup_learning_rate:
          loguniform: [1.0e-6, cosine_decay_learning_rate.learning_rate_base]
        cosine_decay_learning_rate.warmup_steps: {derived: num_steps, scale: 0.05}
      constant_learning_rate: {}
points:
  - {learning_rate: constant_learning_rate, batch_size: 4}
  - base
  - base: {batch_size: 8}
"""


def test_loads_typed_objects(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, SPACE))
    kinds = {p.name: type(p.dist) for p, _ in space.walk()}
    assert kinds["num_steps"] is Constant
    assert kinds["batch_size"] is Categorical
    assert kinds["l2_weight"] is LogUniform
    assert kinds["box_coder.y_scale"] is Uniform
    assert kinds["focal_loss.gamma"] is Stepped
    assert kinds["exponential_decay_learning_rate.decay_steps"] is IntRange
    assert kinds["learning_rate"] is Choice
    assert kinds["cosine_decay_learning_rate.total_steps"] is Derived
    assert space.description == "test"
    assert "num_steps" not in space.param_names()
    assert "cosine_decay_learning_rate.learning_rate_base" in space.param_names()
    assert space.constants() == {"num_steps": 1000}
    assert space.points[1] == BasePoint({}) and space.points[2] == BasePoint({"batch_size": 8})


def test_define_by_run_is_conditional(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, SPACE))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        fixed = space.define_by_run(trial)
        study.tell(trial, 0.0)
        params = trial.params
        seen.add(params["learning_rate"])
        assert fixed["num_steps"] == 1000
        cosine = params["learning_rate"] == "cosine_decay_learning_rate"
        assert ("cosine_decay_learning_rate.learning_rate_base" in params) == cosine
        if cosine:
            assert fixed["cosine_decay_learning_rate.total_steps"] == 1000
            assert fixed["cosine_decay_learning_rate.warmup_steps"] == 50
            assert (params["cosine_decay_learning_rate.warmup_learning_rate"]
                    <= params["cosine_decay_learning_rate.learning_rate_base"])
        else:
            assert "cosine_decay_learning_rate.total_steps" not in fixed
        assert all("/" not in k for k in {**params, **fixed})
        assert params["focal_loss.gamma"] in (1.0, 1.5, 2.0, 2.5, 3.0)
        assert isinstance(params["exponential_decay_learning_rate.decay_steps"], int)
    assert seen == {"cosine_decay_learning_rate", "constant_learning_rate"}


def test_points_and_replay(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, SPACE))
    # Without a base pipeline, only the explicit points.
    assert space.points_to_evaluate() == [
        {"learning_rate": "constant_learning_rate", "batch_size": 4}]
    full = {"batch_size": 8, "l2_weight": 0.001, "box_coder.y_scale": 10.0,
            "focal_loss.gamma": 2.0, "exponential_decay_learning_rate.decay_steps": 5000,
            "learning_rate": "constant_learning_rate"}
    assert replay(space, full) == {**full, "num_steps": 1000}


def test_points_from_base(tmp_path: Path) -> None:
    from sweep.odapi.render import load_pipeline

    base = load_pipeline(ROOT / "sweep/odapi/templates/ssd_resnet50_v1_fpn_640x640_coco17_tpu-8.config")
    space = load_space(write(tmp_path, SPACE))
    _, from_base, overridden = space.points_to_evaluate(base)
    assert "batch_size" not in from_base  # the zoo's 64 is outside the space: left to Optuna
    assert from_base["box_coder.y_scale"] == 10.0
    assert from_base["learning_rate"] == "cosine_decay_learning_rate"
    assert from_base["cosine_decay_learning_rate.learning_rate_base"] == 0.04
    assert overridden["batch_size"] == 8


def test_random_samples_are_reproducible(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, SPACE))
    assert random_samples(space, 3, seed=7) == random_samples(space, 3, seed=7)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spaces_load(path: Path) -> None:
    space = load_space(path)
    assert space.param_names()
    assert space.points


@pytest.mark.slow  # imports Ray (~9 s)
def test_ray_optuna_search_accepts_define_by_run(tmp_path: Path) -> None:
    """Ray merges {**trial.params, **returned} and splits keys on '/': names must survive."""
    from ray.tune.search.optuna import OptunaSearch

    space = load_space(write(tmp_path, SPACE))
    search = OptunaSearch(space=space.define_by_run, metric="m", mode="max",
                          points_to_evaluate=space.points_to_evaluate())
    config = search.suggest("t1")
    assert config["learning_rate"] == "constant_learning_rate" and config["batch_size"] == 4
    assert config["num_steps"] == 1000
