"""TrialRunner's policy, fast: a stand-in worker (tests/fake_worker.py) writes what the OD API
jobs write, so results, divergence, retries, stop and best-checkpoint logic run in seconds."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from sweep.core import errors
from sweep.core.experiment import COMPLETED, FAILED, STOPPED
from sweep.run.trial import TrialRunner, TrialSpec, plan_steps

REPO = Path(__file__).resolve().parents[2]


def _render(base: Path, params: dict, out: Path) -> int:
    steps = int(params.get("num_steps", 40))
    out.write_text(f"train_config {{\n  num_steps: {steps}\n}}\n")
    return steps


def _runner(tmp_path: Path, mode: str = "ok", *, max_failures: int = 2, name: str = "t1",
            params: dict | None = None, gpu_ids: list[str] | None = None,
            metric: str = "DetectionBoxes_Precision/mAP", metric_mode: str = "max",
            render=_render, env: dict | None = None, pause: bool = False,
            **spec_kw) -> TrialRunner:  # noqa: ANN001
    (tmp_path / "base_pipeline.config").write_text("")
    spec = TrialSpec(experiment_root=tmp_path, eval_every=20, max_failures=max_failures,
                     metric=metric, mode=metric_mode, cwd=tmp_path, pause_at_rungs=pause,
                     poll=0.05, worker_module="tests.fake_worker",
                     extra_env={"FAKE_MODE": mode, "PYTHONPATH": str(REPO), **(env or {})},
                     **spec_kw)
    return TrialRunner(spec, name, params or {"lr": 0.1}, gpu_ids=gpu_ids, render=render)


def _until_done(r: TrialRunner) -> list[dict]:
    results = [r.next_result(timeout=60)]
    while not results[-1]["done"]:
        results.append(r.next_result(timeout=60))
    return results


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
    assert st["state"] == COMPLETED and st["restarts"] == 1
    assert st["last_failure"].startswith("killed: train process exited with -9")
    # The second attempt resumed at step 20: no step was trained twice.
    from sweep.odapi import metrics

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
    assert "--max-failures 1" in st["detail"]


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
    r.stop_processes()  # its actor lost mid-run (status RUNNING): Ray restores the trial
    again = _runner(tmp_path, params={"lr": 0.5})  # what a restored actor would be given
    again.start()
    try:
        assert again.params == {"lr": 0.1}
        assert again.dir.status()["attempts"] == 2
    finally:
        again.stop()


# --- no clock kills a healthy trial; a stalled one is caught by its lack of progress -----------

@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
def test_a_slow_trial_with_progress_is_never_stalled(tmp_path: Path) -> None:
    """12 s from start to its only checkpoint, a summary every 3 s: longer without a
    checkpoint than the stall setting (8 s, with room for a slow start on a loaded machine),
    but training is visibly alive, so it completes."""
    r = _runner(tmp_path, "slow", stall_s=8.0, env={"FAKE_STEP_SLEEP": "3"})
    r.spec = dataclasses.replace(r.spec, eval_every=0)  # one checkpoint, at step 40
    r.start()
    results = _until_done(r)
    assert [x["step"] for x in results] == [40] and "sweep_failed" not in results[-1]
    st = r.dir.status()
    assert st["state"] == COMPLETED and st.get("restarts", 0) == 0


def test_a_hung_training_job_is_stalled_restarted_then_failed(tmp_path: Path) -> None:
    r = _runner(tmp_path, "hang", stall_s=1.0, max_failures=1)
    r.start()
    first_pid = r.train_proc.pid
    out = r.next_result(timeout=60)
    assert out["done"] is True and out["sweep_failed"] == errors.STALLED
    st = r.dir.status()
    assert st["state"] == FAILED and st["reason"] == errors.STALLED
    assert "no summary or checkpoint" in st["detail"] and "--stall-minutes" in st["detail"]
    assert st["restarts"] == 1 and st["last_failure"].startswith("stalled")
    assert r.dir.train_log.read_text().count("start train") == 2  # restarted once, as policy
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)
    assert not r.train_proc.alive() and not r.eval_proc.alive()


def test_stall_detection_off(tmp_path: Path) -> None:
    r = _runner(tmp_path, "hang", stall_s=0)
    r.start()
    try:
        with pytest.raises(TimeoutError):
            r.next_result(timeout=2.5)
    finally:
        r.stop()


# --- honest failure accounting and one retry budget -------------------------------------------

def test_a_trial_whose_config_does_not_render_fails_with_the_reason(tmp_path: Path) -> None:
    def broken(base: Path, params: dict, out: Path) -> int:
        raise ValueError("cosine_decay_learning_rate.warmup_steps 500 > total_steps 40")

    r = _runner(tmp_path, render=broken)
    r.start()  # never raises: the failure is the trial's, reported as its result
    out = r.next_result(timeout=5)
    assert out["done"] is True and out["sweep_failed"] == errors.SETUP
    st = r.dir.status()
    assert st["state"] == FAILED and st["reason"] == errors.SETUP
    assert "warmup_steps 500" in st["detail"] and r.train_proc is None


def test_actor_deaths_and_process_crashes_share_one_restart_budget(tmp_path: Path) -> None:
    """--max-failures 1: a process crash uses the one restart; the Ray actor then dying (the
    same run finds the trial RUNNING) is the second failure, and the trial fails."""
    r = _runner(tmp_path, "crash_once", max_failures=1, run_id="run-1")
    r.start()
    out = r.next_result(timeout=30)
    assert r.dir.status()["restarts"] == 1 and "sweep_failed" not in out
    r.stop_processes()  # the actor dies without cleanup: status.json still says RUNNING
    again = _runner(tmp_path, max_failures=1, run_id="run-1")
    again.start()
    out = again.next_result(timeout=5)
    assert out["sweep_failed"] == errors.ACTOR_DIED
    st = again.dir.status()
    assert st["state"] == FAILED and "gave up after 2 restarts" in st["detail"]


def test_a_resumed_driver_is_not_a_trial_failure(tmp_path: Path) -> None:
    r = _runner(tmp_path, max_failures=0, run_id="run-1")
    r.start()
    r.stop_processes()  # the driver was killed (status RUNNING); a resumed run has a new id
    again = _runner(tmp_path, max_failures=0, run_id="run-2")
    again.start()
    results = _until_done(again)
    assert results[-1]["step"] == 40 and again.dir.status()["state"] == COMPLETED
    assert again.dir.status()["restarts"] == 0


@pytest.mark.parametrize(("eval_device", "eval_gpus"), [("gpu", "3"), ("cpu", "")])
def test_eval_job_runs_on_one_device(tmp_path: Path, eval_device: str, eval_gpus: str) -> None:
    r = _runner(tmp_path, gpu_ids=["3", "5"], eval_device=eval_device)
    r.start()
    _until_done(r)
    assert "CUDA_VISIBLE_DEVICES=3,5 " in r.dir.train_log.read_text()
    assert f"CUDA_VISIBLE_DEVICES={eval_gpus} " in r.dir.eval_log.read_text()
    # Both jobs may share a GPU: TF must take its memory as needed, not all of it at start.
    for log in (r.dir.train_log, r.dir.eval_log):
        assert "TF_FORCE_GPU_ALLOW_GROWTH=true" in log.read_text()
def _train_steps(r: TrialRunner) -> list[int]:
    from sweep.odapi import metrics

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


def test_a_waiting_trial_wakes_on_an_evaluation_or_a_job_exit_not_a_poll_later(
        tmp_path: Path) -> None:
    """Between full reads (one a poll) the runner looks for news every WAKE_S: the eval job
    appending to eval/evaluated.jsonl, or a job exiting. With a 60 s poll both wake it within
    seconds (broken, each sleep would last the full minute)."""
    import sys
    import threading

    from sweep.core.experiment import append_evaluated
    from sweep.core.process import start

    r = _runner(tmp_path)
    (r.dir.path / "eval").mkdir(parents=True)
    threading.Timer(0.3, append_evaluated, (r.dir.path, {"checkpoint": "ckpt-1", "step": 20})
                    ).start()
    t0 = time.time()
    r._sleep_until_news(60.0)
    assert time.time() - t0 < 30.0
    assert r.dir.evaluated()[-1]["step"] == 20

    r.eval_proc = start("eval", [sys.executable, "-c", "import time; time.sleep(0.3)"],
                        r.dir.eval_log)
    t0 = time.time()
    r._sleep_until_news(60.0)
    assert time.time() - t0 < 30.0 and not r.eval_proc.alive()


@pytest.mark.parametrize("mode", ["completed", "stopped", "failed"])
def test_a_restored_trial_whose_folder_ended_replays_its_end_and_changes_nothing(
        tmp_path: Path, mode: str) -> None:
    """Ray's saved state can predate a trial's end (a driver killed within Ray's save
    interval): the resumed run starts it again. The folder is the truth: no job starts, the
    folder is untouched, and the result says what the folder says."""
    r = _runner(tmp_path, {"failed": "nan", "stopped": "slow"}.get(mode, "ok"),
                env={"FAKE_STEP_SLEEP": "1"})
    r.start()
    first = r.next_result(timeout=30)
    if mode == "stopped":
        r.stop()
    elif mode == "completed":
        _until_done(r)
    files = {p: p.read_bytes() for p in sorted(r.dir.path.rglob("*")) if p.is_file()}
    again = _runner(tmp_path, "ok", run_id="resumed")
    again.start()
    assert again.train_proc is None and again.eval_proc is None
    out = again.next_result(timeout=5)
    assert out["done"] is True
    if mode == "failed":
        assert out["sweep_failed"] == errors.DIVERGED
    else:
        assert out["trained_to_end"] is (mode == "completed")
        assert out["step"] == (40 if mode == "completed" else first["step"])
        assert out["mAP"] == pytest.approx(0.4 if mode == "completed" else first["mAP"])
    again.stop()  # Ray's cleanup after the result
    assert {p: p.read_bytes() for p in sorted(r.dir.path.rglob("*")) if p.is_file()} == files


def test_an_interrupted_sweep_stops_the_trial_at_once_and_reports_nothing_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's interrupt (the stop file) reaches a runner waiting for its next result:
    its jobs end at once and it says INTERRUPTED; no result reaches Ray (Ray ends the actor).
    A stop file older than the runner (an earlier run's) changes nothing."""
    from sweep.core.experiment import INTERRUPTED, write_json
    from sweep.run import trial

    monkeypatch.setattr(trial, "INTERRUPT_WAIT_S", 1.0)
    stale = _runner(tmp_path, name="old")
    write_json(stale.exp.stop_path, {"kind": "interrupted", "signal": "SIGINT",
                                     "at": time.time() - 60})
    stale.start()
    assert _until_done(stale)[-1]["done"] and stale.dir.status()["state"] == COMPLETED

    r = _runner(tmp_path, "slow", env={"FAKE_STEP_SLEEP": "1"})
    r.start()
    assert r.next_result(timeout=30)["step"] == 20
    pids = (r.train_proc.pid, r.eval_proc.pid)
    write_json(r.exp.stop_path, {"kind": "interrupted", "signal": "SIGINT", "at": time.time()})
    t0 = time.time()
    with pytest.raises(RuntimeError, match="stopping"):
        r.next_result(timeout=30)
    assert time.time() - t0 < 10
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    st = r.dir.status()
    assert st["state"] == INTERRUPTED and st["reported_step"] == 20, st
