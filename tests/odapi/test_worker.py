"""The worker processes: the TF 2.15 patch is in place, and the eval job's checkpoint order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweep.core.experiment import EVALUATED, read_evaluated
from sweep.odapi import worker

REPO = Path(__file__).resolve().parents[2]


def _fake_tf(paths: list[str], existing: set[str]) -> SimpleNamespace:
    state = SimpleNamespace(all_model_checkpoint_paths=paths) if paths else None
    return SimpleNamespace(
        train=SimpleNamespace(get_checkpoint_state=lambda d: state),
        io=SimpleNamespace(gfile=SimpleNamespace(exists=lambda p: p in existing)))


def test_eval_job_takes_the_oldest_unevaluated_checkpoint() -> None:
    """Every checkpoint gets its evaluation (the scheduler's rungs), not just the newest."""
    paths = ["/m/ckpt-1", "/m/ckpt-2", "/m/ckpt-3"]
    tf = _fake_tf(paths, {p + ".index" for p in paths})
    assert worker._next_checkpoint(tf, Path("/m"), set()) == "/m/ckpt-1"
    assert worker._next_checkpoint(tf, Path("/m"), {"ckpt-1"}) == "/m/ckpt-2"
    assert worker._next_checkpoint(tf, Path("/m"), {"ckpt-1", "ckpt-2", "ckpt-3"}) is None


def test_eval_job_skips_checkpoints_already_rotated_away() -> None:
    tf = _fake_tf(["/m/ckpt-1", "/m/ckpt-2"], {"/m/ckpt-2.index"})
    assert worker._next_checkpoint(tf, Path("/m"), set()) == "/m/ckpt-2"
    assert worker._next_checkpoint(_fake_tf([], set()), Path("/m"), set()) is None


def test_evaluated_log_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / EVALUATED).write_text(
        '{"checkpoint": "ckpt-2", "step": 20, "metrics": {}, "time": 1}\n{"checkpoint": "ck')
    assert [r["step"] for r in read_evaluated(tmp_path)] == [20]


@pytest.mark.slow
def test_worker_processes_get_the_tf_slim_patch() -> None:
    """tf-slim calls control_flow_ops.case/cond, which TF 2.13+ moved: every worker patches
    them before the OD API's decoder runs (without it training fails at its first batch)."""
    code = ("from sweep.odapi import worker; worker._setup_tf(1)\n"
            "from tensorflow.python.ops import control_flow_ops as c\n"
            "import tf_slim.data.tfexample_decoder as d\n"
            "assert callable(c.case) and callable(c.cond)\n"
            "print('patched', c.case.__module__, c.cond.__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "patched tensorflow.python.ops.control_flow_case tensorflow.python.ops.cond" in out.stdout


@pytest.mark.slow
@pytest.mark.tf
def test_two_replica_training_under_mirrored_strategy_and_its_checkpoints_evaluate(
        tmp_path: Path) -> None:
    """`--gpus-per-trial 2` trains under MirroredStrategy as model_main_tf2.py does; on this
    CPU machine the same path runs over two logical CPU devices. The eval job (one device)
    evaluates the checkpoints the two replicas wrote, tracing its model once: a later
    checkpoint evaluated through the first trace scores its own weights (its loss moves).
    (A second, fresh eval job that scored step 10 the same to 1e-4 was dropped for the suite's
    time: one more TensorFlow start-up, ~1.5 min in CI.)"""
    from sweep.odapi.render import load_pipeline, render, write_pipeline
    from tests.conftest import make_workspace

    base = make_workspace(tmp_path, n_train=8, n_eval=4)
    model_dir = tmp_path / "trial"
    model_dir.mkdir()
    cfg = render(load_pipeline(base), {"num_steps": 10, "batch_size": 4,
                                       "cosine_decay_learning_rate.warmup_steps": 0})
    write_pipeline(cfg, model_dir / "pipeline.config")

    def start(kind: str, directory: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "sweep.odapi.worker", kind, "--pipeline",
             str(model_dir / "pipeline.config"), "--model-dir", str(directory), "--threads", "1",
             *extra], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)})

    def finish(job: subprocess.Popen) -> str:
        out, err = job.communicate(timeout=900)
        assert job.returncode == 0, out[-3000:] + err[-3000:]
        return out

    train = finish(start("train", model_dir, "--cpu-replicas", "2", "--checkpoint-every", "5",
                         "--steps-per-iteration", "5", "--keep", "3"))
    assert "train: 2 replica(s) (MirroredStrategy)" in train
    # The eval job warms up on step 0, then steps 5 and 10, all through its first trace.
    finish(start("eval", model_dir, "--poll", "0.2"))
    rows = read_evaluated(model_dir)
    assert [r["step"] for r in rows] == [0, 5, 10]  # ckpt-1 is train_loop's step-0 checkpoint
    assert [r["checkpoint"] for r in rows[:2]] == ["ckpt-1", "ckpt-2"]
    assert (model_dir / f"{rows[-1]['checkpoint']}.index").exists()
    assert "DetectionBoxes_Precision/mAP" in rows[-1]["metrics"]
    loss = "Loss/total_loss"
    # Step 10 through step 5's trace: its own weights, not those the trace was made with.
    assert rows[1]["metrics"][loss] != pytest.approx(rows[2]["metrics"][loss], rel=1e-3)


@pytest.mark.slow
@pytest.mark.tf
def test_a_seeded_deterministic_trial_repeats_exactly_and_another_seed_does_not(
        tmp_path: Path) -> None:
    """Two train jobs of one config with one seed and --deterministic log the same total_loss
    at every step and end with the same weights, bit for bit (CPU, tiny template; an eval job
    scores fixed weights on fixed records, so their evaluations agree too); a third with another
    seed trains a different curve and weights (initialisation, data order and augmentation
    follow the seed). The three run at once, as a sweep's trials do (one thread each)."""
    import numpy as np
    import tensorflow as tf

    from sweep.odapi import metrics
    from sweep.odapi.render import load_pipeline, render, write_pipeline
    from tests.conftest import make_workspace

    base = make_workspace(tmp_path, n_train=16, n_eval=4)
    cfg = render(load_pipeline(base), {"num_steps": 8, "batch_size": 4,
                                       "cosine_decay_learning_rate.warmup_steps": 0})

    def start(name: str, seed: int) -> subprocess.Popen:
        d = tmp_path / name
        d.mkdir()
        write_pipeline(cfg, d / "pipeline.config")
        extra = ["--seed", str(seed), "--deterministic", "--checkpoint-every", "8",
                 "--steps-per-iteration", "2"]
        return subprocess.Popen(
            [sys.executable, "-m", "sweep.odapi.worker", "train", "--pipeline",
             str(d / "pipeline.config"), "--model-dir", str(d), "--threads", "1", *extra],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)})

    def stage(jobs: list[subprocess.Popen]) -> None:
        for job in jobs:
            out, err = job.communicate(timeout=900)
            assert job.returncode == 0, out[-3000:] + err[-3000:]

    stage([start(n, s) for n, s in (("a", 7), ("b", 7), ("c", 8))])
    a, b, c = (metrics.read_trial(tmp_path / n) for n in ("a", "b", "c"))
    loss = {name: {s: r[metrics.TOTAL_LOSS] for s, r in tm.train.items() if metrics.TOTAL_LOSS in r}
            for name, tm in (("a", a), ("b", b), ("c", c))}
    assert len(loss["a"]) >= 4 and loss["a"] == loss["b"]  # bit for bit, every logged step
    assert loss["c"] != loss["a"]

    def weights(name: str) -> dict[str, np.ndarray]:
        prefix = tf.train.latest_checkpoint(str(tmp_path / name))
        assert tf.train.load_variable(prefix, "step/.ATTRIBUTES/VARIABLE_VALUE") == 8
        return {n: tf.train.load_variable(prefix, n) for n, _ in tf.train.list_variables(prefix)
                if n.startswith("model/")}

    wa, wb, wc = weights("a"), weights("b"), weights("c")
    assert len(wa) > 50 and wa.keys() == wb.keys() == wc.keys()
    assert [n for n in wa if not np.array_equal(wa[n], wb[n])] == []
    assert any(not np.array_equal(wa[n], wc[n]) for n in wa)


@pytest.mark.parametrize(("choice", "gpus", "on"), [
    ("auto", 0, False), ("auto", 1, True), ("on", 0, True), ("off", 2, False)])
def test_graph_optimizer_runs_only_where_it_pays(choice: str, gpus: int, on: bool) -> None:
    assert worker.graph_optimizer_enabled(choice, gpus) is on


def test_graph_optimizer_choice_is_checked() -> None:
    with pytest.raises(ValueError, match="auto"):
        worker.graph_optimizer_enabled("fast", 0)


def test_eval_trace_is_made_once_per_python_function() -> None:
    """eager_eval_loop decorates the same inner function on every call: the eval job keeps the
    first tf.function made of it (one trace per process), and nothing else changes."""
    made: list[object] = []

    def function(func, **kwargs):  # noqa: ANN001, ANN003, ANN202 - a stand-in tf.function
        made.append(func)
        return ("traced", func, tuple(kwargs.items()))

    fake_tf = SimpleNamespace(function=function, float32="f32")
    module = SimpleNamespace(tf=fake_tf)
    worker._reuse_eval_trace(module)
    worker._reuse_eval_trace(module)  # idempotent: no proxy of a proxy

    def loop() -> object:  # a new closure on every call, like eager_eval_loop's
        @module.tf.function
        def compute_eval_dict() -> None:
            return None
        return compute_eval_dict

    first, second = loop(), loop()
    assert first is second and len(made) == 1
    assert module.tf.function(lambda: 1) is not first  # another function gets its own
    assert module.tf.function(jit_compile=True)(lambda: 2)[2] == (("jit_compile", True),)
    assert module.tf.float32 == "f32"


def test_od_api_functions_trace_as_written_and_the_fallback_knows_when_not(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """compat.trace_od_api_as_written: AutoGraph leaves object_detection's functions as they
    are (a fixed-cost cut of every trial), still converts what tf.function decorates, and a
    function that needs it fails in a way the worker recognises (needs_autograph: it then runs
    the job again with AutoGraph)."""
    import importlib.util
    import sys

    from sweep.odapi import compat
    from sweep.odapi.worker import needs_autograph

    compat.patch()
    import tensorflow as tf
    from tensorflow.python.autograph.core import config
    from tensorflow.python.autograph.impl import conversion

    monkeypatch.setattr(config, "CONVERSION_RULES", config.CONVERSION_RULES)  # undone after
    compat.trace_od_api_as_written()
    compat.trace_od_api_as_written()
    assert [r for r in config.CONVERSION_RULES if str(r).endswith(" object_detection")] \
        == [config.CONVERSION_RULES[0]]
    from object_detection.utils import shape_utils

    assert conversion.is_allowlisted(shape_utils.combined_static_and_dynamic_shape)

    (tmp_path / "probe.py").write_text("def relu(x):\n    if x > 0:\n        return x\n"
                                       "    return -x\n")

    def probe_step(name: str):  # noqa: ANN202 - a tf.function
        # A function of an object_detection module with Python control flow on a tensor, in a
        # fresh module each time (AutoGraph caches its decision per function).
        spec = importlib.util.spec_from_file_location(f"object_detection.{name}",
                                                      tmp_path / "probe.py")
        probe = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(probe)
        monkeypatch.setitem(sys.modules, probe.__name__, probe)

        @tf.function
        def step(x):  # noqa: ANN001, ANN202 - converted: the user asked for it
            for _ in tf.range(2):
                x = x + 1.0
            return probe.relu(x)

        return step

    with pytest.raises(Exception) as raised:  # noqa: PT011 - TF's error type is the point
        probe_step("sweep_probe_a")(tf.constant(1.0))
    assert needs_autograph(raised.value), repr(raised.value)
    assert not needs_autograph(ValueError("a different problem"))
    monkeypatch.setattr(config, "CONVERSION_RULES", config.CONVERSION_RULES[1:])
    # AutoGraph on (the worker's fallback): the same function converts and runs
    assert float(probe_step("sweep_probe_b")(tf.constant(-5.0))) == 3.0
