"""The worker processes: the TF 2.15 patch is in place, and the eval job's checkpoint order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweep import worker
from sweep.experiment import EVALUATED, read_evaluated

REPO = Path(__file__).resolve().parent.parent


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
    code = ("from sweep import worker; worker._setup_tf(1)\n"
            "from tensorflow.python.ops import control_flow_ops as c\n"
            "import tf_slim.data.tfexample_decoder as d\n"
            "assert callable(c.case) and callable(c.cond)\n"
            "print('patched', c.case.__module__, c.cond.__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "patched tensorflow.python.ops.control_flow_case tensorflow.python.ops.cond" in out.stdout
