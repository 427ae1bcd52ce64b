"""TrialRunner against a stand-in as unkind as the real OD API jobs at scale (issue 27): an
evaluation's tags in several flushes, keep-last-N rotation racing the runner's copies, an eval
job that hangs or lags. Each drives the runner directly with tests/fake_worker.py (no Ray);
the ones that wait out a stall clock are marked slow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sweep.core import errors
from sweep.core.experiment import COMPLETED
from sweep.run import best
from tests.run.test_trial import _runner

EVAL_KEYS = ("mAP", "mAP_50", "mAP_75", "AR_100")


def _until_done(r, timeout: float = 30) -> list[dict]:  # noqa: ANN001 - a TrialRunner
    results = [r.next_result(timeout=timeout)]
    while not results[-1]["done"]:
        results.append(r.next_result(timeout=timeout))
    return results


def _complete_checkpoint(folder: Path, name: str) -> bool:
    """The index and every data shard of checkpoint ``name`` are in ``folder``."""
    shards = sorted(folder.glob(f"{name}.data-*"))
    return ((folder / f"{name}.index").exists() and bool(shards)
            and len(shards) == int(shards[0].name.rsplit("-of-", 1)[1]))


def test_a_result_reaches_ray_only_with_every_tag_of_its_evaluation(tmp_path: Path) -> None:
    """eval_split: mAP is on disk 0.6 s before AR@100; a rung must not see half a result."""
    r = _runner(tmp_path, "eval_split")
    r.start()
    results = _until_done(r)
    assert [x["step"] for x in results] == [20, 40]
    for x in results:
        assert all(k in x for k in EVAL_KEYS), (x["step"], sorted(x))
    assert results[0]["AR_100"] == results[0]["mAP"] / 2


def test_best_is_a_whole_checkpoint_while_rotation_races_the_copy(tmp_path: Path) -> None:
    """rotate: each checkpoint is deleted (index first, then shard by shard) as soon as its
    evaluation is recorded, which is when the runner copies it to best/ (mAP rises: every
    evaluation is a new best). The trial never errors, and best/ is never half a checkpoint."""
    r = _runner(tmp_path, "rotate", params={"num_steps": 100})
    r.start()
    results = [r.next_result(timeout=30)]
    kept_steps = []
    while True:
        kept = best.kept_best(r.dir)
        if kept:
            kept_steps.append(kept["step"])
            assert _complete_checkpoint(r.dir.path / best.BEST_DIR, kept["checkpoint"]), (
                results[-1]["step"], sorted(p.name for p in (r.dir.path / best.BEST_DIR).iterdir()))
            assert kept["value"] == {x["step"]: x["mAP"] for x in results}[kept["step"]]
        if results[-1]["done"]:
            break
        results.append(r.next_result(timeout=30))
    assert [x["step"] for x in results] == [20, 40, 60, 80, 100]
    assert r.dir.status()["state"] == COMPLETED
    assert kept_steps[-1] == 100  # the final checkpoint is never rotated: it is kept
    assert not list(r.dir.path.glob(".best.tmp*"))


def test_exploit_of_a_checkpoint_mid_rotation_keeps_the_clones_own(tmp_path: Path) -> None:
    """rotate: PBT hands b a's ckpt-1 while a's train job is deleting it (its index is gone,
    shards remain). b must not drop its own checkpoints for half of a's: it goes on as itself."""
    # Held at each evaluation (the train gate): ungated, a loaded machine's eval job started
    # after training had reached step 40 and its first result was step 40 (seen in a full run).
    b = _runner(tmp_path, name="b", params={"num_steps": 40}, pause=True)
    b.start()
    assert b.next_result(timeout=30)["step"] == 20
    b.stop()
    own = sorted(p.name for p in b.dir.path.glob("ckpt-*"))
    assert own
    a = _runner(tmp_path, "rotate", name="a", params={"num_steps": 100})
    a.start()
    try:
        deadline = time.time() + 30
        while not ((a.dir.path / "ckpt-1.data-00003-of-00004").exists()
                   and not (a.dir.path / "ckpt-1.index").exists()):
            assert time.time() < deadline, "a's ckpt-1 was never seen mid-rotation"
            time.sleep(0.005)
        b = _runner(tmp_path, name="b", params={"num_steps": 40, "lr": 0.2})
        b.exploit("a", 20, "ckpt-1")
    finally:
        a.stop()
    cloned = _complete_checkpoint(b.dir.path, "ckpt-1") and (
        b.dir.path / "ckpt-1.index").read_text() == "20" and b.dir.status().get("parent") == "a"
    kept_own = sorted(p.name for p in b.dir.path.glob("ckpt-*")) == own and (
        "exploit of a at step 20 skipped" in b.dir.status()["last_failure"])
    assert cloned or kept_own, (sorted(p.name for p in b.dir.path.iterdir()), b.dir.status())
    assert not (b.dir.path / ".exploit.tmp").exists()


@pytest.mark.slow  # waits out --stall-minutes (5 s here) on purpose
def test_a_hung_eval_job_is_restarted_at_the_gate_and_after_training_ended(
        tmp_path: Path) -> None:
    """eval_hang: each eval job evaluates once, then hangs. With the gate (an early-stopping
    scheduler) the train job waits at step 40 for an evaluation that never comes, and at 60
    training has ended: only the eval job's own progress clock can end either wait."""
    r = _runner(tmp_path, "eval_hang", params={"num_steps": 60}, pause=True, stall_s=5.0)
    r.start()
    results = _until_done(r, timeout=40)
    assert [x["step"] for x in results] == [20, 40, 60]
    st = r.dir.status()
    assert st["state"] == COMPLETED and st["restarts"] == 2, st
    assert st["last_failure"].startswith(f"{errors.STALLED}: the eval job"), st["last_failure"]


@pytest.mark.slow  # waits out --stall-minutes (5 s here) on purpose
def test_a_hung_eval_job_fails_the_trial_when_its_restarts_are_spent(tmp_path: Path) -> None:
    r = _runner(tmp_path, "eval_hang", params={"num_steps": 60}, max_failures=1, stall_s=5.0,
                pause=True)
    r.start()
    results = _until_done(r, timeout=40)
    assert results[-1]["sweep_failed"] == errors.STALLED
    st = r.dir.status()
    assert st["state"] == "FAILED" and "--max-failures 1" in st["detail"], st
    assert all(p is None or not p.alive() for p in (r.train_proc, r.eval_proc))


@pytest.mark.slow  # waits out --stall-minutes (5 s here) on purpose
def test_a_lagging_eval_job_that_makes_progress_is_never_stalled(tmp_path: Path) -> None:
    """eval_lag: training ends long before the eval job, which runs two checkpoints behind at
    1.5 s an evaluation: the oldest waiting checkpoint gets older than --stall-minutes, but
    the eval job keeps finishing evaluations, so it is not stalled."""
    r = _runner(tmp_path, "eval_lag", params={"num_steps": 100}, stall_s=5.0,
                env={"FAKE_EVAL_SLEEP": "1.5"})
    r.start()
    results = _until_done(r)
    assert [x["step"] for x in results] == [20, 40, 60, 80, 100]
    st = r.dir.status()
    assert st["state"] == COMPLETED and st.get("restarts", 0) == 0, st
