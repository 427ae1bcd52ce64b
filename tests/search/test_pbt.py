"""Population-based training (`--scheduler pbt`): what may be perturbed, explored configs stay
in the space, lineage words; and a real Ray PBT sweep through the stand-in worker in which the
worse trial continues from the better one's checkpoint with a perturbed learning rate."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sweep.core.experiment import COMPLETED, Experiment
from sweep.odapi import metrics
from sweep.report import lineage
from sweep.run import schedulers
from sweep.search import pbt
from sweep.search.space import load_space
from tests.conftest import run_cli

LR = "cosine_decay_learning_rate.learning_rate_base"
SPACE = f"""\
parameters:
  num_steps: 80
  {LR}: {{loguniform: [0.006, 0.05]}}
  l2_weight: {{loguniform: [1.0e-5, 1.0e-3]}}
  augment.random_horizontal_flip: {{categorical: [true, false]}}
perturb: [{LR}, l2_weight]
points:
  - {{{LR}: 0.04, l2_weight: 0.0001, augment.random_horizontal_flip: true}}
  - {{{LR}: 0.006, l2_weight: 0.0001, augment.random_horizontal_flip: true}}
"""


def test_what_may_be_perturbed() -> None:
    for ok in (LR, "exponential_decay_learning_rate.decay_steps", "l2_weight",
               "l2_weight.box_predictor", "augment.random_horizontal_flip", "momentum"):
        assert pbt.perturb_problem(ok) is None, ok
    for bad in ("batch_size", "num_steps", "box_coder.y_scale", "learning_rate",
                "model.ssd.num_classes"):
        assert pbt.perturb_problem(bad), bad


def test_explored_configs_stay_in_the_space(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SPACE)
    space = load_space(tmp_path / "s.yaml")
    explore = pbt.explore_fn(space)
    out = explore({"num_steps": 80, LR: 0.05 * 1.2, "l2_weight": 1e-5 * 0.8,
                   "augment.random_horizontal_flip": False, "not.in.space": 3})
    assert out[LR] == pytest.approx(0.05) and out["l2_weight"] == pytest.approx(1e-5)
    assert "not.in.space" not in out and out["num_steps"] == 80
    muts = schedulers.mutations(space)
    assert set(muts) == {LR, "l2_weight"}


def test_perturbing_an_architecture_field_is_refused_before_launch(tmp_path: Path) -> None:
    from tests.conftest import make_workspace

    pipeline = make_workspace(tmp_path, n_train=4, n_eval=2)
    (tmp_path / "s.yaml").write_text(SPACE.replace(f"perturb: [{LR}, l2_weight]",
                                                   "perturb: [box_coder.y_scale]")
                                     + "  \n")
    (tmp_path / "s.yaml").write_text((tmp_path / "s.yaml").read_text().replace(
        "  l2_weight: {loguniform", "  box_coder.y_scale: {uniform: [5.0, 20.0]}\n"
        "  l2_weight: {loguniform"))
    out = run_cli(["validate", str(tmp_path / "s.yaml"), str(pipeline)], tmp_path, timeout=120)
    assert out.returncode == 2
    assert "perturb.box_coder.y_scale: cannot be perturbed" in out.stderr


def test_lineage_in_the_seeds_words() -> None:
    status = {"lineage": [
        pbt.segment(0, {LR: 0.006, "l2_weight": 1e-4}, (LR, "l2_weight")),
        pbt.segment(20, {LR: 0.048, "l2_weight": 1e-4}, (LR, "l2_weight"),
                    {"trial": "trial_a", "step": 20, "checkpoint": "ckpt-3"})]}
    assert pbt.describe(status) == ("default settings + fine tune (trial_a at step 20): "
                                    "learning_rate_base 0.048")
    assert pbt.parent(status) == "trial_a"


# Slow enough that both trials are alive at the first perturbation (PBT compares only
# unfinished trials): 10 steps every 3 s.
PBT_FAKE = {"SWEEP_WORKER_MODULE": "tests.fake_worker", "FAKE_MODE": "slow",
            "FAKE_STEP_SLEEP": "3", "FAKE_SCORE_LR": "1"}


@pytest.fixture(scope="module")
def pbt_sweeps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Side by side on one Ray (the stand-in's trials mostly sleep): a `--scheduler pbt` and a
    `--scheduler pb2` sweep run to their end ({scheduler: (folder, finished process)}), and a
    pbt sweep killed mid-run and resumed ("killed": see _killed_then_resumed)."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import finish_cli, local_ray

    with local_ray(6, PBT_FAKE) as address, ThreadPoolExecutor(1) as pool:
        killed = pool.submit(_killed_then_resumed, tmp_path_factory.mktemp("killed"), address)
        roots = {scheduler: tmp_path_factory.mktemp(scheduler) for scheduler in ("pbt", "pb2")}
        procs = {scheduler: _pbt_run(root, "pbt", address, scheduler, [])
                 for scheduler, root in roots.items()}
        done: dict[str, Any] = {s: (roots[s], finish_cli(proc)) for s, proc in procs.items()}
        done["killed"] = killed.result(timeout=1200)
        yield done


def _pbt_run(root: Path, name: str, address: str, scheduler: str, extra: list[str],
             **popen: Any) -> subprocess.Popen:
    """`sweep run` of SPACE (2 trials, perturbations every 20 steps) on the Ray at ``address``."""
    from tests.conftest import make_workspace, start_cli

    pipeline = make_workspace(root, n_train=4, n_eval=2)
    (root / "s.yaml").write_text(SPACE)
    return start_cli(
        ["run", "--space", str(root / "s.yaml"), "--pipeline", str(pipeline), "--name", name,
         "--no-dashboard", "--scheduler", scheduler, "--eval-every", "10",
         "--perturbation-interval", "20", "--num-trials", "2", "--max-concurrent", "2",
         "--address", address, *extra], root, **popen)


def _killed_then_resumed(root: Path, address: str) -> dict[str, Any]:
    """kill -9 of a pbt sweep's driver once a clone has happened; once its trials' processes
    are gone, `sweep resume`. Returns the resume's process and each trial's lineage before."""
    import signal
    import time

    from tests.conftest import run_cli
    from tests.run.test_resume import _kill_tree, _wait_gone

    log = open(root / "run.log", "w")  # noqa: SIM115 - the child writes it
    driver = _pbt_run(root, "pr", address, "pbt", ["--no-report"], stdout=log,
                      stderr=subprocess.STDOUT)
    exp = Experiment(root / "experiments" / "pr")
    try:
        deadline = time.time() + 600
        while time.time() < deadline and driver.poll() is None:
            if any(t.status().get("parent") for t in exp.trials()) and not all(
                    t.status().get("state") == COMPLETED for t in exp.trials()):
                break
            time.sleep(0.25)
        alive = driver.poll() is None
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        log.close()
    # Ray ends a dead driver's actors, and their jobs follow their actor: wait for all of them.
    pids = [p for t in exp.trials() for k in ("pid", "train_pid", "eval_pid")
            if (p := t.status().get(k))]
    _kill_tree(_wait_gone(pids, 60))
    before = {t.name: t.status().get("lineage") for t in exp.trials()}
    res = run_cli(["resume", "pr", "--no-dashboard", "--no-report", "--address", address], root,
                  timeout=600)
    return {"root": root, "alive_at_kill": alive, "before": before, "resume": res,
            "log": (root / "run.log").read_text()}


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["pbt", "pb2"])
def test_pbt_sweep_clones_the_better_trial_and_trains_with_the_perturbed_rate(
        pbt_sweeps: dict[str, Any], scheduler: str) -> None:
    tmp_path, out = pbt_sweeps[scheduler]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = Experiment(tmp_path / "experiments" / "pbt")
    clones = [t for t in exp.trials() if t.status().get("parent")]
    assert clones, [t.status() for t in exp.trials()]
    for t in exp.trials():
        assert t.status()["state"] == COMPLETED
    clone = clones[0]
    st = clone.status()
    seg = st["lineage"][-1]
    source = exp.trial(seg["cloned_from"]["trial"])
    step = seg["cloned_from"]["step"]
    assert step % 20 == 0 and step > 0
    # The source kept its own checkpoint files (copied, never moved).
    assert (source.path / f"{seg['cloned_from']['checkpoint']}.index").exists() or (
        source.path / "best" / f"{seg['cloned_from']['checkpoint']}.index").exists()
    # After the switch the clone trained with its new (perturbed) rate, from that step on.
    new_lr = clone.params()[LR]
    assert seg["params"][LR] == pytest.approx(new_lr)
    tm = metrics.read_trial(clone.path)
    after = {s: r[metrics.LEARNING_RATE] for s, r in tm.train.items()}
    assert min(after) > step and all(v == pytest.approx(new_lr, rel=1e-6) for v in after.values())
    # Its first segment (its own, worse start) is kept aside, whole.
    old = metrics.read_scalars(clone.path / "lineage" / "segment-0" / "train")
    first_lr = st["lineage"][0]["params"][LR]
    assert old and all(s.value == pytest.approx(first_lr, rel=1e-6)
                       for s in old if s.tag == metrics.LEARNING_RATE)
    assert len(exp.trials()) == 2
    assert json.loads((clone.path / "params.json").read_text())[LR] == new_lr
    assert "fine tune (" in pbt.describe(st)
    # The lineage of the clone's weights: the source up to the clone step, then the clone.
    links = lineage.chain(exp, clone.name)
    assert [(t.name, start) for t, _, start, _ in links] == [(source.name, 0), (clone.name, step)]
    history = lineage.learning_rate_history(exp, clone.name)
    src_lr = source.status()["lineage"][0]["params"][LR]
    assert all(v == pytest.approx(src_lr, rel=1e-6) for s, v in history if s <= step)
    assert all(v == pytest.approx(new_lr, rel=1e-6) for s, v in history if s > step)
    replay = lineage.replay_params(history)
    assert replay["manual_step_learning_rate.initial_learning_rate"] == pytest.approx(src_lr)
    changed = abs(new_lr - src_lr) > 0.02 * src_lr  # PB2 may keep the rate and move l2_weight
    assert replay["manual_step_learning_rate.schedule"] == ([[
        min(s for s, _ in history if s > step), pytest.approx(new_lr)]] if changed else [])
    from sweep.odapi.render import load_pipeline

    replayed = load_pipeline(tmp_path / "reports" / "pbt" / "best" / "replay_pipeline.config")
    lr = replayed.train_config.optimizer.momentum_optimizer.learning_rate
    assert lr.WhichOneof("learning_rate") == "manual_step_learning_rate"
    assert "steps 0-" in (tmp_path / "reports" / "pbt" / "best" / "replay.md").read_text()
    # The report: the lineage figure, and the clone's row in the seed's own words.
    report = (tmp_path / "reports" / "pbt" / "report.md").read_text()
    assert "lineage.png" in report and (tmp_path / "reports/pbt/plots/lineage.png").stat().st_size
    assert "default settings + fine tune (" in report
    assert f"fine tune ({source.name} at step {step})" in report
    status = run_cli(["status", "pbt"], tmp_path, timeout=120)
    assert "cloned from" in status.stdout
    row = next(line for line in status.stdout.splitlines() if line.startswith(clone.name))
    assert row.split()[1] == source.name


def _cosine(step: int, base: float, total: int, warmup_lr: float, warmup: int) -> float:
    """The OD API's cosine_decay_with_warmup (object_detection.utils.learning_schedules)."""
    import math

    if step > total:
        return 0.0
    if step < warmup:
        return (base - warmup_lr) / warmup * step + warmup_lr
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.slow
@pytest.mark.tf
def test_real_pbt_clone_resumes_the_source_and_trains_with_the_perturbed_values(
        tmp_path: Path) -> None:
    """A real OD API PBT sweep through Ray (`--scheduler pbt --pbt-sync`): 2 trials of 40 steps,
    compared at step 20, where the worse one is cloned from the better one with a perturbed
    learning_rate_base and momentum. The clone's copied checkpoint holds the source's step-20
    weights and step; the clone trained on from there (global step and optimizer iterations
    20 -> 40, its weights nearer the source's than its own first stretch's); the learning rate
    it logged is the perturbed cosine schedule's at each step and the momentum it trained with
    (saved in its step-40 checkpoint) is the perturbed one, not the source's."""
    import numpy as np
    import tensorflow as tf

    from sweep.odapi.render import load_pipeline
    from tests.conftest import make_workspace

    pipeline = make_workspace(tmp_path, n_train=8, n_eval=4)
    (tmp_path / "s.yaml").write_text(f"""\
parameters:
  num_steps: 40
  {LR}: {{loguniform: [0.006, 0.05]}}
  momentum: {{uniform: [0.5, 0.95]}}
perturb: [{LR}, momentum]
points:
  - {{{LR}: 0.02, momentum: 0.9}}
  - {{{LR}: 0.008, momentum: 0.7}}
""")
    out = run_cli(["run", "--space", str(tmp_path / "s.yaml"), "--pipeline", str(pipeline),
                   "--name", "rp", "--no-dashboard", "--no-report", "--scheduler", "pbt",
                   "--pbt-sync", "--eval-every", "20", "--perturbation-interval", "20",
                   "--num-trials", "2", "--max-concurrent", "2"], tmp_path, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = Experiment(tmp_path / "experiments" / "rp")
    assert [t.status()["state"] for t in exp.trials()] == [COMPLETED, COMPLETED]
    clones = [t for t in exp.trials() if t.status().get("parent")]
    assert len(clones) == 1, [t.status() for t in exp.trials()]  # synchronous: one clone at 20
    clone = clones[0]
    origin = clone.status()["lineage"][-1]["cloned_from"]
    source = exp.trial(origin["trial"])
    assert origin["step"] == 20 and len(source.status()["lineage"]) == 1
    new, old = clone.params(), source.params()
    assert new[LR] != pytest.approx(old[LR]) and new["momentum"] != pytest.approx(old["momentum"])

    def value(prefix: Path, name: str) -> np.ndarray:
        return tf.train.load_variable(str(prefix), name)

    # The weights right after the exploit: the checkpoint the clone restored is the source's.
    copied = clone.path / origin["checkpoint"]
    at_source = next(p / origin["checkpoint"] for p in (source.path, source.path / "best")
                     if (p / f"{origin['checkpoint']}.index").exists())
    weights = [n for n, _ in tf.train.list_variables(str(copied))
               if n.startswith("model/") and "OPTIMIZER_SLOT" not in n]
    assert len(weights) > 50
    for n in weights:
        assert np.array_equal(value(copied, n), value(at_source, n)), n
    step, iters = "step/.ATTRIBUTES/VARIABLE_VALUE", "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"
    momentum = "optimizer/momentum/.ATTRIBUTES/VARIABLE_VALUE"
    assert value(copied, step) == 20 and value(copied, momentum) == pytest.approx(old["momentum"])
    # ... and the clone trained on from them, with the perturbed momentum in force.
    final = Path(tf.train.latest_checkpoint(str(clone.path)))
    assert value(final, step) == 40 and value(final, iters) == 40
    assert value(final, momentum) == pytest.approx(new["momentum"], rel=1e-6)
    own = next((clone.path / "lineage" / "segment-0" / "best").glob("ckpt-*.index")).with_suffix("")
    assert value(own, step) == 20  # its own first stretch, kept aside

    def distance(a: Path, b: Path) -> float:
        return sum(float(np.sum((value(a, n) - value(b, n)) ** 2)) for n in weights)

    assert distance(final, at_source) < distance(final, own)
    cfg = load_pipeline(clone.pipeline_path)
    mo = cfg.train_config.optimizer.momentum_optimizer
    assert mo.momentum_optimizer_value == pytest.approx(new["momentum"])
    cos = mo.learning_rate.cosine_decay_learning_rate
    assert cos.learning_rate_base == pytest.approx(new[LR]) and cos.total_steps == 40
    # The learning rate training logged after the switch: the perturbed schedule's, from step 20.
    tm = metrics.read_trial(clone.path)
    assert min(tm.train) > 20 and max(tm.train) == 40
    for s, row in tm.train.items():
        expected = [_cosine(t, new[LR], 40, cos.warmup_learning_rate, cos.warmup_steps)
                    for t in (s - 1, s)]  # logged after the iteration's last step
        assert any(row[metrics.LEARNING_RATE] == pytest.approx(e, rel=1e-4) for e in expected), (
            s, row[metrics.LEARNING_RATE], expected)


@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
def test_pbt_without_perturbable_parameters_is_refused_before_launch(tmp_path: Path) -> None:
    from tests.conftest import make_workspace

    pipeline = make_workspace(tmp_path, n_train=4, n_eval=2)
    (tmp_path / "s.yaml").write_text(SPACE.replace(f"perturb: [{LR}, l2_weight]\n", ""))
    out = run_cli(["run", "--space", str(tmp_path / "s.yaml"), "--pipeline", str(pipeline),
                   "--scheduler", "pbt", "--eval-every", "10", "--name", "p"], tmp_path,
                  timeout=120)
    assert out.returncode == 2 and "s.yaml: perturb: --scheduler pbt needs" in out.stderr
    assert "see docs/pbt.md" in out.stderr  # tests/test_docs.py: that page exists
    assert not (tmp_path / "experiments" / "p").exists()


def test_pb2_refuses_a_categorical_to_perturb(tmp_path: Path) -> None:
    from tests.conftest import make_workspace

    pipeline = make_workspace(tmp_path, n_train=4, n_eval=2)
    (tmp_path / "s.yaml").write_text(SPACE.replace(
        f"perturb: [{LR}, l2_weight]", f"perturb: [{LR}, augment.random_horizontal_flip]"))
    out = run_cli(["run", "--space", str(tmp_path / "s.yaml"), "--pipeline", str(pipeline),
                   "--scheduler", "pb2", "--eval-every", "10", "--name", "p"], tmp_path,
                  timeout=120)
    assert out.returncode == 2, out.stderr
    assert "perturb.augment.random_horizontal_flip: pb2 explores continuous ranges" in out.stderr
    assert not (tmp_path / "experiments" / "p").exists()


@pytest.mark.slow
def test_a_pbt_sweep_killed_mid_run_resumes_to_its_end(pbt_sweeps: dict[str, Any]) -> None:
    """kill -9 of the driver once a clone has happened; `sweep resume` continues the same PBT
    sweep: both trials end COMPLETED at their last step, the clone's lineage is kept, and no
    trial is started anew."""
    k = pbt_sweeps["killed"]
    assert k["alive_at_kill"], k["log"][-3000:]
    res = k["resume"]
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    trials = Experiment(k["root"] / "experiments" / "pr").trials()
    assert len(trials) == 2
    for t in trials:
        st = t.status()
        assert st["state"] == COMPLETED and metrics.read_trial(t.path).last_train_step == 80
        # What the lineage said before the kill is still its beginning.
        assert st.get("lineage")[:len(k["before"][t.name])] == k["before"][t.name]


@pytest.mark.slow
def test_pbt_keeps_every_ray_checkpoint_a_clone_may_be_restored_from(tmp_path: Path) -> None:
    """A clone that has not saved since its exploit is restored, after the driver's death, from
    its source's checkpoint of then: a retention limit had deleted it (the resumed sweep failed
    that trial, seen in a full run). Without PBT, no Ray checkpoints at all."""
    from sweep.run.settings import SweepSettings
    from sweep.run.tune_backend import _checkpoint_config

    def config(scheduler: str):  # noqa: ANN202
        return _checkpoint_config(SweepSettings(name="k", space=tmp_path / "s.yaml",
                                                pipeline=tmp_path / "p", storage=tmp_path,
                                                scheduler=scheduler))

    for scheduler in ("pbt", "pb2"):
        assert config(scheduler).num_to_keep is None and config(scheduler).checkpoint_frequency == 1
    assert config("asha").checkpoint_frequency == 0 and not config("asha").checkpoint_at_end


@pytest.mark.parametrize("moving_average", [False, True])
def test_a_restore_keeps_the_perturbed_momentum(tmp_path: Path, moving_average: bool) -> None:
    """The OD API's optimizer (tf.compat.v1 Keras: the legacy OptimizerV2) saves `momentum` in
    its checkpoints as a variable. A clone builds its optimizer from its config (perturbed
    momentum 0.5) and restores the source's checkpoint (trained with 0.9): with a plain
    tf.train.Checkpoint (what train_loop uses) 0.9 is back in force; through the train job's
    checkpoint class the update after the restore uses 0.5 with the restored velocity. The
    perturbed constant learning rate is in force either way."""
    from sweep.odapi import compat

    compat.patch()
    import numpy as np
    import tensorflow as tf
    from google.protobuf import text_format
    from object_detection.builders import optimizer_builder
    from object_detection.protos import optimizer_pb2

    from sweep.odapi.worker import momentum_keeping_checkpoint

    grad = np.array([[0.5], [0.25]], dtype=np.float32)

    def build(momentum: float, lr: float):  # noqa: ANN202 - a model, its optimizer, its step
        cfg = text_format.Parse(
            "momentum_optimizer { learning_rate { constant_learning_rate { learning_rate: "
            f"{lr} }} }} momentum_optimizer_value: {momentum} }} use_moving_average: "
            f"{str(moving_average).lower()}", optimizer_pb2.Optimizer())
        step = tf.Variable(0, dtype=tf.int64)
        model = tf.keras.Sequential([tf.keras.layers.Dense(1, use_bias=False)])
        model.build((None, 2))
        optimizer, _ = optimizer_builder.build(cfg, global_step=step)
        if moving_average:
            optimizer.shadow_copy(model)  # as train_loop does
        return model, optimizer, step

    model, optimizer, step = build(0.9, 0.1)
    for _ in range(3):
        optimizer.apply_gradients([(tf.constant(grad), model.weights[0])])
        step.assign_add(1)
    path = tf.train.Checkpoint(step=step, model=model, optimizer=optimizer).save(
        str(tmp_path / "ckpt"))
    saved = dict(tf.train.list_variables(path))
    assert any(k.endswith("/momentum/.ATTRIBUTES/VARIABLE_VALUE") and "OPTIMIZER_SLOT" not in k
               for k in saved), saved  # the hyperparameter itself is in the checkpoint
    velocity = tf.train.load_variable(path, next(k for k in saved if "OPTIMIZER_SLOT" in k
                                                 and "momentum" in k))

    def first_update(checkpoint_class: type) -> np.ndarray:
        model, optimizer, step = build(0.5, 0.2)  # the clone's perturbed config
        checkpoint_class(step=step, model=model, optimizer=optimizer).restore(path)
        assert int(step.numpy()) == 3
        before = model.weights[0].numpy()
        optimizer.apply_gradients([(tf.constant(grad), model.weights[0])])
        return model.weights[0].numpy() - before

    def expected(momentum: float, lr: float) -> np.ndarray:  # v = m * v - lr * g; w += v
        return momentum * velocity - lr * grad

    # The trap: the checkpoint's momentum is back in force (a constant rate is no variable).
    assert np.allclose(first_update(tf.train.Checkpoint), expected(0.9, 0.2))
    assert np.allclose(first_update(momentum_keeping_checkpoint(tf)), expected(0.5, 0.2))
    assert not np.allclose(expected(0.5, 0.2), expected(0.9, 0.2))


def _source_and_clone(tmp_path: Path) -> tuple:
    """Trial "a" (stand-in worker) trained to its end at step 40, best checkpoint at step 20
    (mode min on mAP, which grows with steps); a runner for trial "b" with PBT's perturbed
    copy of a's values."""
    from tests.run.test_trial import _runner, _until_done

    a = _runner(tmp_path, name="a", params={"num_steps": 40, LR: 0.02}, metric_mode="min",
                perturb=(LR,))
    a.start()
    _until_done(a)
    b = _runner(tmp_path, name="b", params={"num_steps": 40, LR: 0.024}, metric_mode="min",
                perturb=(LR,))
    return a, b, _until_done


def test_a_trial_cloned_before_it_ever_ran_continues_at_the_sources_step(
        tmp_path: Path) -> None:
    """b never ran (no folder, no checkpoint of its own) when it is cloned from a's step-20
    checkpoint, which keep-last-N already rotated out of a's folder (only a's best/ has it):
    b continues from it at step 20 with its own values, and a keeps its files."""
    a, b, until_done = _source_and_clone(tmp_path)
    assert a.dir.evaluated()[0]["checkpoint"] == "ckpt-1"
    for f in a.dir.path.glob("ckpt-1.*"):
        f.unlink()  # rotated away; best/ keeps it
    b.exploit("a", 20, "ckpt-1")
    assert (b.dir.path / "ckpt-1.index").read_text() == "20"  # the source's step-20 files
    b.start()
    results = until_done(b)
    assert [r["step"] for r in results] == [40]  # the step-20 evaluation is the source's
    assert min(metrics.read_trial(b.dir.path).train) == 30  # trained from 20 on, not from 0
    st = b.dir.status()
    assert st["state"] == COMPLETED and st["parent"] == "a"
    assert st["lineage"] == [pbt.segment(20, {LR: 0.024}, (LR,),
                                         {"trial": "a", "step": 20, "checkpoint": "ckpt-1"})]
    assert b.dir.params()[LR] == 0.024
    assert (a.dir.path / "best" / "ckpt-1.index").read_text() == "20"  # copied, not moved


def test_a_clone_with_nothing_to_continue_from_goes_on_as_itself(tmp_path: Path) -> None:
    """PBT hands b a source checkpoint that does not exist (the source had not been evaluated
    when Ray saved it, or keep-last-N and best/ both dropped it), or the source's final one
    (nothing left to train; the clone would wait for an evaluation that never comes): no
    clone. b goes on from its own step-20 checkpoint with its own values; the skip is in its
    status."""
    from tests.run.test_trial import _runner

    a, b, until_done = _source_and_clone(tmp_path)
    for f in [*a.dir.path.glob("ckpt-1.*"), *(a.dir.path / "best").glob("ckpt-1.*")]:
        f.unlink()
    b.start()
    assert b.next_result(timeout=60)["step"] == 20
    b.stop()  # PBT pauses it to clone it
    assert b.dir.status()["state"] == "PAUSED"
    for step, checkpoint, why in (
            (20, None, "a had no evaluated checkpoint yet"),
            (20, "ckpt-1", "ckpt-1 is no longer on disk"),
            (40, "ckpt-2", "ckpt-2 is a's last (step 40): nothing is left to train")):
        b = _runner(tmp_path, name="b", params={"num_steps": 40, LR: 0.03}, metric_mode="min",
                    perturb=(LR,))  # the new actor, with the perturbed values
        b.exploit("a", step, checkpoint)
        assert f"exploit of a at step {step} skipped: {why}" in b.dir.status()["last_failure"]
    b.start()
    assert [r["step"] for r in until_done(b)] == [40]
    st = b.dir.status()
    assert st["state"] == COMPLETED and not st.get("parent") and len(st["lineage"]) == 1
    assert b.dir.params()[LR] == 0.024 and not (b.dir.path / "lineage").exists()
    assert (b.dir.path / "ckpt-1.index").read_text() == "20"  # its own, kept
