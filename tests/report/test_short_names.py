"""Parameters as the space names them, grouped the way the space was written."""

from __future__ import annotations

from sweep.report import short_names as sn

DEMO = {  # a params.json of the demo space (search_spaces/demo_tiny.yaml)
    "num_steps": 40, "batch_size": 4, "momentum": 0.9, "l2_weight": 0.00012296072,
    "learning_rate": "cosine_decay_learning_rate",
    "cosine_decay_learning_rate.learning_rate_base": 0.013123,
    "cosine_decay_learning_rate.total_steps": 40,
    "cosine_decay_learning_rate.warmup_learning_rate": 0.0012,
    "cosine_decay_learning_rate.warmup_steps": 6,
    "augment.random_adjust_brightness": True,
    "augment.random_adjust_brightness.max_delta": 0.2,
    "model.ssd.loss.classification_weight": 1.5, "_base": True,
}


def test_choices_and_switches_are_grouped_with_their_parameters() -> None:
    assert sn.grouped(DEMO) == {
        "num_steps": "40", "batch_size": "4", "momentum": "0.9", "l2_weight": "1.23e-4",
        "learning_rate": "cosine(base 0.0131, total 40, warmup_lr 0.0012, warmup 6)",
        "augment.random_adjust_brightness": "true(max_delta 0.2)",
        "loss.classification_weight": "1.5"}


def test_changed_is_the_groups_that_differ() -> None:
    other = dict(DEMO, **{"cosine_decay_learning_rate.warmup_steps": 3, "batch_size": 4})
    assert sn.line(sn.changed(other, DEMO)) == (
        "learning_rate cosine(base 0.0131, total 40, warmup_lr 0.0012, warmup 3)")
    constant = {k: v for k, v in DEMO.items() if not k.startswith("cosine")}
    constant.update({"learning_rate": "constant_learning_rate",
                     "constant_learning_rate.learning_rate": 0.004})
    assert sn.changed(constant, DEMO) == {"learning_rate": "constant(lr 0.004)"}
    assert sn.changed(DEMO, DEMO) == {}


def test_column_names() -> None:
    assert sn.leaf_name("cosine_decay_learning_rate.learning_rate_base") == "cosine.base"
    assert sn.leaf_name("constant_learning_rate.learning_rate") == "constant.lr"
    assert sn.leaf_name("focal_loss.gamma") == "focal_loss.gamma"
    assert sn.leaf_name("model.ssd.box_coder.faster_rcnn_box_coder.y_scale") == \
        "faster_rcnn_box_coder.y_scale"
