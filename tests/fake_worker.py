"""A fast stand-in for `sweep.odapi.worker` (no TensorFlow) to test TrialRunner's policy.

It writes what the OD API jobs write -- train/eval event files, ckpt-N files, the `checkpoint`
state file, eval/evaluated.jsonl, eval/groundtruth.json + eval/detections/ckpt-N.json -- at
the same argv, in milliseconds, and waits at the train gate (sweep.core.gate) after a checkpoint as
the real train job does. mAP scales with the trial's l2_weight (smaller is better) and, with
FAKE_SCORE_LR=1, its learning rate (up to 0.02), so schedulers see trials differ; FAKE_NOISE=s
adds seed-drawn training noise (the trial's ``_seed``), and detections are drawn per seed
(on FAKE_EVAL_IMAGES eval images, default 16). FAKE_MODE picks a
behaviour: ok | nan (loss becomes NaN at step 20; FAKE_NAN_L2=x: only for the trial whose
l2_weight is x) | crash_once (train dies with SIGKILL the
first time, after its first checkpoint) | crash_always | hang (train never progresses: no
summary, no checkpoint) | slow (a summary every FAKE_STEP_SLEEP s, default 0.5). As the real
eval job, the eval job has no clock unless given --timeout. FAKE_HOLD=<file>:<step>: training
pauses at step <step> while <file> exists (a test holds trials mid-run however loaded the
machine is, e.g. until `ray job stop` has landed, and lets them go by deleting the file).

Modes as unkind as the real jobs at scale (issue 27):

- ``eval_split``: each evaluation's tags reach disk in three flushes FAKE_SPLIT_GAP s apart
  (default 0.3; mAP first, then mAP@.50/.75, then AR@100 and the eval loss), as the OD API's
  summary writer flushes its queue; ``eval/evaluated.jsonl`` is appended after the last one, as
  sweep.odapi.worker does after ``writer.flush()``.
- ``rotate``: the train job keeps the last ``--keep`` checkpoints (4 data shards each) as TF's
  CheckpointManager does, deleting the oldest index first and then its shards one at a time,
  FAKE_ROTATE_GAP s apart (default 0.3: a network filesystem). The eval job lags as in
  ``eval_lag``, and the train job deletes a checkpoint as soon as its evaluation is recorded:
  the rotation races the runner's copy of that checkpoint (best/, PBT's exploit).
- ``eval_hang``: the eval job stops making progress (no output, no evaluation) after its first
  evaluation of a step > 0; a restarted eval job evaluates one more, then hangs again.
- ``eval_lag``: the eval job evaluates the oldest checkpoint it has not evaluated (as
  sweep.odapi.worker), but only once two newer ones exist or training has reached its last
  step, taking FAKE_EVAL_SLEEP s (default 0.2) per evaluation: it runs checkpoints behind.
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
from sweep.core.process import watch_parent  # noqa: E402
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
    l2 = l2_of(model_dir)
    q = 1.0 / (1.0 + 1000.0 * l2) if l2 is not None else 1.0
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


def l2_of(model_dir: Path) -> float | None:
    params = model_dir / "params.json"
    l2 = json.loads(params.read_text()).get("l2_weight") if params.exists() else None
    return float(l2) if isinstance(l2, int | float) else None


def train(a: argparse.Namespace) -> None:
    mode = os.environ.get("FAKE_MODE", "ok")
    if os.environ.get("FAKE_NAN_L2") and l2_of(a.model_dir) == float(os.environ["FAKE_NAN_L2"]):
        mode = "nan"  # one chosen config diverges in a sweep whose others train
    total = num_steps(a.pipeline)
    n, step = latest(a.model_dir)
    marker = a.model_dir / "crashed-once"
    pace = float(os.environ.get("FAKE_STEP_SLEEP", "0.5")) if mode == "slow" else 0.05
    gate.wait(a.model_dir, step, total, poll=0.05)  # a restarted job may resume at the rung
    hold_file, _, hold_step = os.environ.get("FAKE_HOLD", "").rpartition(":")
    while step < total:
        if mode == "hang" or (hold_file and step >= int(hold_step) and Path(hold_file).exists()):
            time.sleep(0.5)
            continue
        step += a.steps_per_iteration
        loss = float("nan") if mode == "nan" and step >= 20 else 2.0 / (1 + step / 10)
        append_event(a.model_dir / "train", step, {
            "Loss/total_loss": loss, "learning_rate": learning_rate(a.pipeline, step) or 0.01,
            "steps_per_sec": 100.0})
        if step % a.checkpoint_every == 0:
            n += 1
            shards = 4 if mode == "rotate" else 1
            for i in range(shards):
                (a.model_dir / f"ckpt-{n}.data-{i:05d}-of-{shards:05d}").write_text(str(step))
            (a.model_dir / f"ckpt-{n}.index").write_text(str(step))
            (a.model_dir / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{n}"\n')
            if mode == "rotate":
                rotate(a.model_dir, n - a.keep)
            gate.wait(a.model_dir, step, total, poll=0.05)  # as sweep.odapi.worker's CheckpointManager
            if mode == "crash_always" or (mode == "crash_once" and not marker.exists()):
                marker.write_text("1")
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(pace)


def evaluated_checkpoints(model_dir: Path) -> set[str]:
    log = model_dir / "eval" / "evaluated.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return {json.loads(x)["checkpoint"] for x in lines if x.strip()}


def rotate(model_dir: Path, old: int) -> None:
    """``rotate`` mode: delete ckpt-``old`` once its evaluation is recorded (the runner then
    copies it), index first and then one shard at a time, as a slow filesystem would."""
    if old < 1 or not (model_dir / f"ckpt-{old}.index").exists():
        return
    while f"ckpt-{old}" not in evaluated_checkpoints(model_dir):
        time.sleep(0.01)
    gap = float(os.environ.get("FAKE_ROTATE_GAP", "0.3"))
    (model_dir / f"ckpt-{old}.index").unlink(missing_ok=True)
    for shard in sorted(model_dir.glob(f"ckpt-{old}.data-*")):
        time.sleep(gap)
        shard.unlink(missing_ok=True)


def lagging_next(model_dir: Path, total: int, done: set[int]) -> tuple[int, int]:
    """``eval_lag``/``rotate``: (number, step) of the oldest checkpoint not evaluated, once two
    newer ones exist or training reached its last step; (0, 0) while there is none."""
    on_disk = []
    for index in model_dir.glob("ckpt-*.index"):
        try:
            on_disk.append((int(index.name[5:-6]), int(index.read_text())))
        except (OSError, ValueError):
            continue  # rotated away while listed
    on_disk.sort()
    # At its last step, or waiting at the gate for this evaluation: no newer one will come.
    finished = bool(on_disk) and (on_disk[-1][1] >= total
                                  or gate.paused(model_dir, on_disk[-1][1], total))
    for k, (n, step) in enumerate(on_disk):
        if step not in done and (len(on_disk) - 1 - k >= 2 or finished):
            return n, step
    return 0, 0


def evaluate(a: argparse.Namespace) -> None:
    total = num_steps(a.pipeline)
    done: set[int] = set()
    log = a.model_dir / "eval" / "evaluated.jsonl"
    if log.exists():
        done = {json.loads(x)["step"] for x in log.read_text().splitlines()}
    last_new = time.time()
    mode = os.environ.get("FAKE_MODE", "ok")
    evaluated_here = 0
    while True:
        if mode in ("eval_lag", "rotate"):
            n, step = lagging_next(a.model_dir, total, done)
        else:
            n, step = latest(a.model_dir)
        if a.timeout and time.time() - last_new > a.timeout:
            return
        if mode == "eval_hang" and evaluated_here:
            time.sleep(0.5)  # hung: no output, no evaluation, alive
            continue
        if step and step not in done:
            last_new = time.time()
            if mode == "eval_lag":
                time.sleep(float(os.environ.get("FAKE_EVAL_SLEEP", "0.2")))
            # Better with a smaller l2_weight (and with FAKE_SCORE_LR=1 a higher rate, up to
            # 0.02), so trials differ as schedulers and PBT need them to.
            lr = learning_rate(a.pipeline, step) if os.environ.get("FAKE_SCORE_LR") else None
            mAP = (min(1.0, step / 100) * quality(a.model_dir)
                   * (1.0 if lr is None else min(1.0, lr / 0.02)))
            # The real eval job writes its own Loss/* too (eval losses, not the training's).
            tags = {"DetectionBoxes_Precision/mAP": mAP, "DetectionBoxes_Recall/AR@100": mAP / 2,
                    "Loss/total_loss": 100.0 - step}
            if mode == "eval_split":  # the full set, in three flushes with gaps between
                gap = float(os.environ.get("FAKE_SPLIT_GAP", "0.3"))
                flushes = [{"DetectionBoxes_Precision/mAP": mAP},
                           {"DetectionBoxes_Precision/mAP@.50IOU": min(1.0, mAP * 1.5),
                            "DetectionBoxes_Precision/mAP@.75IOU": mAP * 0.8},
                           {"DetectionBoxes_Recall/AR@100": mAP / 2,
                            "Loss/total_loss": 100.0 - step}]
                for k, part in enumerate(flushes):
                    if k:
                        time.sleep(gap)
                    append_event(a.model_dir / "eval", step, part)
            else:
                append_event(a.model_dir / "eval", step, tags)
            # As the real eval job: the per-image detections behind this evaluation.
            gt = eval_groundtruth(int(os.environ.get("FAKE_EVAL_IMAGES", "16")))
            write_detections(a.model_dir, f"ckpt-{n}", gt,
                             detections_for(gt, mAP, seed=step + 1000 * seed_of(a.model_dir)))
            with open(log, "a") as f:
                f.write(json.dumps({"checkpoint": f"ckpt-{n}", "step": step,
                                    "metrics": {}, "time": time.time()}) + "\n")
            done.add(step)
            evaluated_here += 1
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
    p.add_argument("--keep", type=int, default=3)
    p.add_argument("--parent-pid", type=int, default=0)
    a, _ = p.parse_known_args()
    if a.parent_pid:  # as the real worker: an orphaned job ends (its actor or driver died)
        watch_parent(a.parent_pid)
    (a.model_dir / "eval").mkdir(parents=True, exist_ok=True)
    print(f"fake {a.job} CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')} "
          f"TF_FORCE_GPU_ALLOW_GROWTH={os.environ.get('TF_FORCE_GPU_ALLOW_GROWTH')} "
          f"cwd={os.getcwd()}", flush=True)
    train(a) if a.job == "train" else evaluate(a)


if __name__ == "__main__":
    main()
