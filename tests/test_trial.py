"""TrialRunner's policy, fast: a stand-in worker (tests/fake_worker.py) writes what the OD API
jobs write, so results, divergence, retries, stop and best-checkpoint logic run in seconds."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from sweep import errors
from sweep.experiment import COMPLETED, FAILED, STOPPED
from sweep.trial import TrialRunner, TrialSpec, plan_steps

REPO = Path(__file__).resolve().parent.parent


def _render(base: Path, params: dict, out: Path) -> int:
    steps = int(params.get("num_steps", 40))
    out.write_text(f"train_config {{\n  num_steps: {steps}\n}}\n")
    return steps


def _runner(tmp_path: Path, mode: str = "ok", *, max_failures: int = 2, name: str = "t1",
            params: dict | None = None, gpu_ids: list[str] | None = None,
            metric: str = "DetectionBoxes_Precision/mAP", metric_mode: str = "max",
            pause: bool = False) -> TrialRunner:
    (tmp_path / "base_pipeline.config").write_text("")
    spec = TrialSpec(experiment_root=tmp_path, eval_every=20, max_failures=max_failures,
                     metric=metric, mode=metric_mode, cwd=tmp_path, pause_at_rungs=pause,
                     poll=0.05, worker_module="tests.fake_worker",
                     extra_env={"FAKE_MODE": mode, "PYTHONPATH": str(REPO)})
    return TrialRunner(spec, name, params or {"lr": 0.1}, gpu_ids=gpu_ids, render=_render)


@pytest.mark.parametrize(("num_steps", "eval_every", "expected"), [
    (40, 20, (20, 10)), (40, 0, (40, 10)), (40, 100, (40, 10)), (100, 30, (25, 5)),
    (7, 3, (7, 7)), (25000, 5000, (5000, 10)),
])
def test_plan_steps_puts_evaluations_on_checkpoints(num_steps, eval_every, expected) -> None:  # noqa: ANN001
    every, per_iter = plan_steps(num_steps, eval_every)
    assert (every, per_iter) == expected
    assert num_steps % every == 0 and every % per_iter == 0


def test_plan_steps_rejects_no_steps() -> None:
    with pytest.raises(ValueError, match="num_steps must be > 0"):
        plan_steps(0, 10)


def test_a_result_per_evaluation_then_completed(tmp_path: Path) -> None:
    r = _runner(tmp_path, gpu_ids=["1"])
    r.start()
    first = r.next_result(timeout=30)
    assert first["step"] == 20 and first["done"] is False
    assert first["mAP"] == pytest.approx(0.2)
    assert first["total_loss"] == pytest.approx(2.0 / 3.0)
    second = r.next_result(timeout=30)
    assert second["step"] == 40 and second["done"] is True
    st = r.dir.status()
    assert st["state"] == COMPLETED and st["reported_step"] == 40
    assert st["cuda_visible_devices"] == "1"
    assert "CUDA_VISIBLE_DEVICES=1" in r.dir.train_log.read_text()
    # Jobs run where `sweep run` was started: the tutorial's pipeline.config has relative paths.
    assert f"cwd={tmp_path}" in r.dir.train_log.read_text()
    # Best by mAP (max) is the step-40 checkpoint, copied aside with its eval.
    best = json.loads((r.dir.path / "best" / "best.json").read_text())
    assert best["step"] == 40 and best["value"] == pytest.approx(0.4)
    assert (r.dir.path / "best" / (best["checkpoint"] + ".index")).read_text() == "40"
    assert json.loads(r.dir.params_path.read_text()) == {"lr": 0.1}


def test_best_by_total_loss_uses_the_training_loss(tmp_path: Path) -> None:
    """The eval job also writes a Loss/total_loss (eval loss); ranking must use the train one."""
    r = _runner(tmp_path, metric="Loss/total_loss", metric_mode="min")
    r.start()
    while not r.next_result(timeout=30)["done"]:
        pass
    best = json.loads((r.dir.path / "best" / "best.json").read_text())
    assert best["step"] == 40 and best["value"] == pytest.approx(2.0 / 5.0)


def test_nan_loss_fails_the_trial_as_diverged_and_ends_its_processes(tmp_path: Path) -> None:
    r = _runner(tmp_path, "nan")
    r.start()
    out = r.next_result(timeout=30)
    if out.get("step") == 20 and "sweep_failed" not in out:  # the eval of step 20 came first
        out = r.next_result(timeout=30)
    assert out["done"] is True and out["sweep_failed"] == errors.DIVERGED
    st = r.dir.status()
    assert st["state"] == FAILED and st["reason"] == "diverged"
    assert "nan" in st["detail"]
    assert not r.train_proc.alive() and not r.eval_proc.alive()


def test_a_killed_train_process_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    r = _runner(tmp_path, "crash_once")
    r.start()
    results = [r.next_result(timeout=30)]
    while not results[-1]["done"]:
        results.append(r.next_result(timeout=30))
    assert [x["step"] for x in results] == [20, 40]
    st = r.dir.status()
    assert st["state"] == COMPLETED and st["retries"] == 1
    assert st["last_failure"].startswith("killed: train process exited with -9")
    # The second attempt resumed at step 20: no step was trained twice.
    from sweep import metrics

    steps = [s.step for s in metrics.read_scalars(r.dir.path / "train", ["Loss/total_loss"])]
    assert steps == [10, 20, 30, 40]
    assert r.dir.train_log.read_text().count("start train") == 2


def test_retries_are_bounded_then_the_trial_fails_with_the_reason(tmp_path: Path) -> None:
    r = _runner(tmp_path, "crash_always", max_failures=1)
    r.start()
    out = r.next_result(timeout=30)
    while "sweep_failed" not in out:
        out = r.next_result(timeout=30)
    assert out["sweep_failed"] == errors.KILLED
    st = r.dir.status()
    assert st["state"] == FAILED and "gave up after 2 failures" in st["detail"]


def test_stop_ends_both_processes_within_seconds_and_marks_stopped(tmp_path: Path) -> None:
    r = _runner(tmp_path, "hang")
    r.start()
    pids = (r.train_proc.pid, r.eval_proc.pid)
    r.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    st = r.dir.status()
    assert st["state"] == STOPPED and "scheduler" in st["reason"]


def test_a_restarted_trial_keeps_its_first_parameters(tmp_path: Path) -> None:
    r = _runner(tmp_path, params={"lr": 0.1})
    r.start()
    r.stop()
    again = _runner(tmp_path, params={"lr": 0.5})  # what a restored actor would be given
    again.start()
    try:
        assert again.params == {"lr": 0.1}
        assert again.dir.status()["attempts"] == 2
    finally:
        again.stop()


def _train_steps(r: TrialRunner) -> list[int]:
    from sweep import metrics

    return [s.step for s in metrics.read_scalars(r.dir.path / "train", ["Loss/total_loss"])]


def test_the_train_job_waits_at_a_rung_until_the_next_result_is_asked_for(tmp_path: Path) -> None:
    r = _runner(tmp_path, pause=True)
    r.start()
    first = r.next_result(timeout=30)
    assert first["step"] == 20
    time.sleep(1.0)  # an ungated train job finishes its 40 steps in a fraction of this
    assert _train_steps(r) == [10, 20]  # waiting at the rung for the scheduler's decision
    r.stop()  # the scheduler stops it there
    st = r.dir.status()
    assert st["state"] == STOPPED and st["trained_steps"] == 20
    assert "checkpoint at step 20; waiting for the scheduler's decision" in r.dir.train_log.read_text()


def test_a_continued_trial_trains_past_the_rung_to_its_end(tmp_path: Path) -> None:
    r = _runner(tmp_path, pause=True)
    r.start()
    assert r.next_result(timeout=30)["step"] == 20
    last = r.next_result(timeout=30)  # asking again is the scheduler's "go on"
    assert last["step"] == 40 and last["done"] is True
    assert r.dir.status()["trained_steps"] == 40


def test_a_trial_stopped_after_its_last_step_is_completed_not_stopped(tmp_path: Path) -> None:
    r = _runner(tmp_path)  # FIFO-like: no gate, the train job runs to its end
    r.start()
    assert r.next_result(timeout=30)["step"] == 20
    assert not (r.dir.path / "train_gate.json").exists()
    while r.train_proc is not None and r.train_proc.alive():
        time.sleep(0.05)
    r.stop()
    st = r.dir.status()
    assert st["state"] == COMPLETED and st["trained_steps"] == 40
