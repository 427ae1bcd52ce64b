"""A fast stand-in for `sweep.odapi.worker` (no TensorFlow) to test TrialRunner's policy.

It writes what the OD API jobs write -- train/eval event files, ckpt-N files, the `checkpoint`
state file, eval/evaluated.jsonl, eval/groundtruth.json + eval/detections/ckpt-N.json -- at
the same argv, in milliseconds, and waits at the train gate (sweep.core.gate) after a checkpoint as
the real train job does. mAP scales with the trial's l2_weight (smaller is better) and, with
FAKE_SCORE_LR=1, its learning rate (up to 0.02), so schedulers see trials differ; FAKE_NOISE=s
adds seed-drawn training noise (the trial's ``_seed``), and detections are drawn per seed. FAKE_MODE picks a
behaviour: ok | nan (loss becomes NaN at step 20) | crash_once (train dies with SIGKILL the
first time, after its first checkpoint) | crash_always | hang (train never progresses: no
summary, no checkpoint) | slow (a summary every FAKE_STEP_SLEEP s, default 0.5). As the real
eval job, the eval job has no clock unless given --timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_fixtures import _scalar_value, detections_for, eval_groundtruth  # noqa: E402

from sweep.core import gate  # noqa: E402
from sweep.odapi.detections import write_detections  # noqa: E402


def append_event(event_dir: Path, step: int, tags: dict[str, float]) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    from sweep.data.tfrecord import frame_record  # TFRecord framing, as TF's writer frames events

    event_dir.mkdir(parents=True, exist_ok=True)
    path = event_dir / f"events.out.tfevents.fake.{os.getpid()}.v2"
    with open(path, "ab") as f:
        summary = summary_pb2.Summary(value=[_scalar_value(t, v, "tensor") for t, v in tags.items()])
        f.write(frame_record(event_pb2.Event(wall_time=time.time(), step=step,
                                             summary=summary).SerializeToString()))


def num_steps(pipeline: Path) -> int:
    for line in pipeline.read_text().splitlines():
        if line.strip().startswith("num_steps:"):
            return int(line.split(":")[1])
    raise SystemExit("no num_steps")


def quality(model_dir: Path) -> float:
    """A trial's mAP scale from its l2_weight (1 without one), so schedulers see differences;
    with FAKE_NOISE=s, times 1 + s * N(0, 1) drawn from the trial's seed (training noise: the
    same config retrained with another seed scores differently)."""
    params = model_dir / "params.json"
    p = json.loads(params.read_text()) if params.exists() else {}
    l2 = p.get("l2_weight")
    q = 1.0 / (1.0 + 1000.0 * float(l2)) if isinstance(l2, int | float) else 1.0
    noise = float(os.environ.get("FAKE_NOISE", "0") or 0)
    if noise:
        import random

        q *= max(0.05, 1.0 + noise * random.Random(p.get("_seed", 0)).gauss(0, 1))
    return min(q, 1.0)


def seed_of(model_dir: Path) -> int:
    params = model_dir / "params.json"
    return int(json.loads(params.read_text()).get("_seed") or 0) if params.exists() else 0


def latest(model_dir: Path) -> tuple[int, int]:
    """(checkpoint number, step) of the newest checkpoint, (0, 0) when none: from the
    `checkpoint` state file, as TensorFlow reads it (a PBT exploit rewrites it)."""
    state = model_dir / "checkpoint"
    if state.exists():
        name = re.search(r'model_checkpoint_path: "([^"]+)"', state.read_text())
        index = model_dir / f"{name.group(1)}.index" if name else None
        if index is not None and index.exists():
            return int(name.group(1).rsplit("-", 1)[1]), int(index.read_text())
    return 0, 0


def learning_rate(pipeline: Path, step: int) -> float | None:
    """The rate the config's schedule gives at ``step`` (constant or cosine's base, the two
    the fake tests use), so a PBT test can check which config trained after an exploit."""
    text = pipeline.read_text()
    m = re.search(r"learning_rate_base: ([0-9.e+-]+)", text) or re.search(
        r"constant_learning_rate \{\s*learning_rate: ([0-9.e+-]+)", text)
    return float(m.group(1)) if m else None


def train(a: argparse.Namespace) -> None:
    mode = os.environ.get("FAKE_MODE", "ok")
    total = num_steps(a.pipeline)
    n, step = latest(a.model_dir)
    marker = a.model_dir / "crashed-once"
    pace = float(os.environ.get("FAKE_STEP_SLEEP", "0.5")) if mode == "slow" else 0.05
    gate.wait(a.model_dir, step, total, poll=0.05)  # a restarted job may resume at the rung
    while step < total:
        if mode == "hang":
            time.sleep(0.5)
            continue
        step += a.steps_per_iteration
        loss = float("nan") if mode == "nan" and step >= 20 else 2.0 / (1 + step / 10)
        append_event(a.model_dir / "train", step, {
            "Loss/total_loss": loss, "learning_rate": learning_rate(a.pipeline, step) or 0.01,
            "steps_per_sec": 100.0})
        if step % a.checkpoint_every == 0:
            n += 1
            (a.model_dir / f"ckpt-{n}.index").write_text(str(step))
            (a.model_dir / f"ckpt-{n}.data-00000-of-00001").write_text(str(step))
            (a.model_dir / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{n}"\n')
            gate.wait(a.model_dir, step, total, poll=0.05)  # as sweep.odapi.worker's CheckpointManager
            if mode == "crash_always" or (mode == "crash_once" and not marker.exists()):
                marker.write_text("1")
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(pace)


def evaluate(a: argparse.Namespace) -> None:
    total = num_steps(a.pipeline)
    done: set[int] = set()
    log = a.model_dir / "eval" / "evaluated.jsonl"
    if log.exists():
        done = {json.loads(x)["step"] for x in log.read_text().splitlines()}
    last_new = time.time()
    while True:
        n, step = latest(a.model_dir)
        if a.timeout and time.time() - last_new > a.timeout:
            return
        if step and step not in done:
            last_new = time.time()
            # Better with a smaller l2_weight (and with FAKE_SCORE_LR=1 a higher rate, up to
            # 0.02), so trials differ as schedulers and PBT need them to.
            lr = learning_rate(a.pipeline, step) if os.environ.get("FAKE_SCORE_LR") else None
            mAP = (min(1.0, step / 100) * quality(a.model_dir)
                   * (1.0 if lr is None else min(1.0, lr / 0.02)))
            # The real eval job writes its own Loss/* too (eval losses, not the training's).
            append_event(a.model_dir / "eval", step, {"DetectionBoxes_Precision/mAP": mAP,
                                                      "DetectionBoxes_Recall/AR@100": mAP / 2,
                                                      "Loss/total_loss": 100.0 - step})
            # As the real eval job: the per-image detections behind this evaluation.
            gt = eval_groundtruth()
            write_detections(a.model_dir, f"ckpt-{n}", gt,
                             detections_for(gt, mAP, seed=step + 1000 * seed_of(a.model_dir)))
            with open(log, "a") as f:
                f.write(json.dumps({"checkpoint": f"ckpt-{n}", "step": step,
                                    "metrics": {}, "time": time.time()}) + "\n")
            done.add(step)
            if step >= total:
                return
        time.sleep(0.05)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("job")
    p.add_argument("--pipeline", type=Path)
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--steps-per-iteration", type=int, default=10)
    p.add_argument("--timeout", type=float, default=0.0)
    a, _ = p.parse_known_args()
    (a.model_dir / "eval").mkdir(parents=True, exist_ok=True)
    print(f"fake {a.job} CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')} "
          f"TF_FORCE_GPU_ALLOW_GROWTH={os.environ.get('TF_FORCE_GPU_ALLOW_GROWTH')} "
          f"cwd={os.getcwd()}", flush=True)
    train(a) if a.job == "train" else evaluate(a)


if __name__ == "__main__":
    main()
