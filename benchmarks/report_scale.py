"""Does the report scale? (issue 27, item 5)

Builds a synthetic finished experiment at the user's scale (``--trials`` trials of
``--evals`` evaluations each, an eval set of ``--images`` images with each trial's kept
detections at its best evaluation, and the OD API eval's side-by-side pictures at every
evaluation: ``--pictures`` of ``--picture-kb`` KB each), then times ``sweep report`` on it in
a fresh process and reads that process's peak memory (ru_maxrss). ``--code DIR`` runs the
report of another checkout of this repository (e.g. a ``git worktree`` of an older commit)
on the same experiment, so before and after are measured side by side in one run.

    python benchmarks/report_scale.py                      # 200 x 50, 5,000 images
    python benchmarks/report_scale.py --code /tmp/before   # also the code of another checkout
    python benchmarks/report_scale.py --trials 20 --evals 5 --images 200 --out /tmp/x  # quick
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _bench import REPO, WORK, header, out_dir, start_record, uptime, write_results

MAP = "DetectionBoxes_Precision/mAP"


def build(root: Path, a: argparse.Namespace) -> Path:
    """The synthetic experiment (made once per shape; reused after)."""
    sys.path.insert(0, str(REPO / "tests"))
    from report_fixtures import detections_for, eval_groundtruth, write_events

    from sweep.core.experiment import Experiment, TrialDir, write_json
    from sweep.odapi.detections import write_detections

    name = f"scale-{a.trials}x{a.evals}-{a.images}img-{a.pictures}p{a.picture_kb}k"
    exp = Experiment(root / "experiments" / name)
    if (exp.root / "built").exists():
        return exp.root
    exp.trials_dir.mkdir(parents=True, exist_ok=True)
    base_cfg = (REPO / "sweep/odapi/templates/tiny_ssd_mobilenet_v2.config").read_text()
    exp.base_pipeline.write_text(base_cfg)
    gt = eval_groundtruth(n_images=a.images)
    rng = random.Random(0)
    steps = [100 * (i + 1) for i in range(a.evals)]
    pic = bytes(rng.getrandbits(8) for _ in range(a.picture_kb * 1024))
    for i in range(a.trials):
        t = TrialDir(exp.trials_dir / f"trial_{i:04d}")
        t.path.mkdir(exist_ok=True)
        params = {"l2_weight": rng.uniform(1e-5, 1e-3), "_seed": i}
        if i == 0:
            params["_base"] = True
        write_json(t.params_path, params)
        t.pipeline_path.write_text(base_cfg)
        skill = rng.uniform(0.2, 0.8)
        curve = {s: {MAP: skill * min(1.0, s / steps[-1] * 2) + rng.gauss(0, 0.01)} for s in steps}
        train = {s: {"Loss/total_loss": 2.0 / (1 + s / 100)} for s in steps}
        write_events(t.path / "train", train, 1000.0 + i, 0.1)
        write_events(t.path / "eval", curve, 1001.0 + i, 0.1)
        _pictures(t.path / "eval", steps, a.pictures, pic)
        best = max(steps, key=lambda s: curve[s][MAP])
        ckpt = f"ckpt-{steps.index(best) + 1}"
        write_detections(t.path, ckpt, gt, detections_for(gt, curve[best][MAP], seed=i))
        with open(t.path / "eval" / "evaluated.jsonl", "w") as f:
            for k, s in enumerate(steps):
                f.write(json.dumps({"checkpoint": f"ckpt-{k + 1}", "step": s}) + "\n")
        write_json(t.status_path, {"state": "COMPLETED", "num_steps": steps[-1], "seed": i,
                                   "created_at": 1000.0 + i, "started_at": 1000.0 + i,
                                   "ended_at": 2000.0 + i, "attempts": 1})
    write_json(exp.settings_path, {
        "name": name, "metrics": [MAP], "modes": ["max"], "num_trials": a.trials,
        "sampler": "tpe", "scheduler": "asha", "seed": 0, "finished": True,
        "storage_url": f"sqlite:///{exp.study_db}", "study_name": name})
    (exp.root / "built").write_text("")
    return exp.root


def _pictures(event_dir: Path, steps: list[int], n: int, data: bytes) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    with open(event_dir / "events.out.tfevents.0.pictures.v2", "wb") as f:
        writer = RecordWriter(f)
        for step in steps:
            values = [summary_pb2.Summary.Value(
                tag=f"eval_side_by_side_{i}_0",
                tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                              string_val=[b"640", b"480", data]))
                      for i in range(n)]
            writer.write(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=values))
                         .SerializeToString())


CHILD = """
import pathlib, resource, sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.time()
try:
    from sweep.core.experiment import Experiment
    from sweep.report.report import write_report
except ImportError:  # a checkout from before the subpackages
    from sweep.experiment import Experiment
    from sweep.report import write_report
write_report(Experiment(pathlib.Path(sys.argv[2])), pathlib.Path(sys.argv[3]))
print(time.time() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def measure(code: Path, exp_root: Path, out: Path, timeout: float) -> dict[str, Any]:
    """``write_report`` of ``code``'s checkout on the experiment, in a fresh process, ended
    after ``timeout`` seconds (then the row says it took longer)."""
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(code), str(exp_root), str(out)],
                              capture_output=True, text=True, cwd=code, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"code": str(code), "error": f"longer than {timeout:.0f} s (ended)",
                "wall_s": time.time() - t0}
    wall = time.time() - t0
    if proc.returncode != 0:
        return {"code": str(code), "error": proc.stderr[-2000:], "wall_s": wall}
    seconds, rss_kb = proc.stdout.strip().splitlines()[-1].split()
    return {"code": str(code), "report_s": float(seconds), "wall_s": wall,
            "peak_mib": int(rss_kb) / 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=200, help="[%(default)s]")
    p.add_argument("--evals", type=int, default=50, help="evaluations per trial [%(default)s]")
    p.add_argument("--images", type=int, default=5000, help="eval images [%(default)s]")
    p.add_argument("--pictures", type=int, default=10,
                   help="side-by-side pictures per evaluation (eval_config.num_visualizations) "
                        "[%(default)s]")
    p.add_argument("--picture-kb", type=int, default=40, help="[%(default)s]")
    p.add_argument("--code", type=Path, action="append", default=[],
                   help="another checkout to measure beside this one (repeatable)")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds a report may take before it is ended [%(default)s]")
    p.add_argument("--work", type=Path, default=WORK / "report_scale", help="[%(default)s]")
    p.add_argument("--out", type=Path, default=None, help="results folder [benchmarks/results]")
    a = p.parse_args(argv)
    if min(a.trials, a.evals, a.images, a.picture_kb) < 1 or a.pictures < 0:
        p.error("sizes must be >= 1 (--pictures >= 0)")
    data = start_record(argv)
    sys.path.insert(0, str(REPO))
    t0 = time.time()
    exp_root = build(a.work.resolve(), a)
    data["build_s"] = time.time() - t0
    rows = [measure(c.resolve(), exp_root, a.work.resolve() / f"report-{i}", a.timeout)
            for i, c in enumerate([REPO, *a.code])]
    data.update(rows=rows, trials=a.trials, evals=a.evals, images=a.images,
                pictures=a.pictures, picture_kb=a.picture_kb, uptime_after=uptime(),
                own_peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    md = header("The report at scale (issue 27)", data) + [
        f"A synthetic finished experiment: {a.trials} trials x {a.evals} evaluations, "
        f"{a.images} eval images (each trial's detections kept at its best evaluation), "
        f"{a.pictures} side-by-side pictures of {a.picture_kb} KB at every evaluation. "
        "`write_report` in a fresh process; peak = its ru_maxrss. Goal: under 2 minutes and "
        "2 GiB.", "", "| code | report (s) | peak memory (MiB) |", "| --- | ---: | ---: |"]
    for r in rows:
        md.append(f"| `{r['code']}` | {r.get('report_s', 'failed'):.1f} | "
                  f"{r.get('peak_mib', 0):.0f} |" if "report_s" in r else
                  f"| `{r['code']}` | {r['error'][-200:]} | - |")
    write_results("report_scale", data, md, out_dir(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
