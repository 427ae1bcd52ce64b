"""What `sweep run` costs before it launches anything, on a dataset of the user's size.

    .venv/bin/python benchmarks/preflight.py [--records 50000] [--record-kb 20] [--keep DIR]

Writes a TFRecord set of ``--records`` records (~1 GB at the defaults: 90% train in 10 shards,
10% eval) and a base pipeline.config that reads it, then measures side by side, in one run:

- before: the pre-flight as it was (validate counted every file with its framing, then the
  CLI's dataset count re-read every byte through a pure-Python CRC32C);
- after, --verify-data sample (the default): validate reads each file once, every record's
  framing and a sample of data checksums, and the counts go to the report as they are;
- after, --verify-data full: every data checksum, with the compiled CRC32C.

Results: a table on stdout, ``benchmarks/results/preflight.{md,json}`` with the machine, load
(``uptime``) and date. Goal (issue 9): the default path <= 20 s on 50,000 records / ~1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPACE = "parameters:\n  num_steps: 1000\n  l2_weight: {loguniform: [1.0e-5, 1.0e-3]}\n"


def make_data(root: Path, records: int, record_kb: int, seed: int = 0) -> Path:
    """Shards of random payloads (validation reads framing, not the examples inside)."""
    from sweep.data import tfrecord
    from sweep.odapi.render import load_pipeline, render, write_pipeline
    from sweep.odapi.workspace import template_path

    rng = random.Random(seed)
    blob = rng.randbytes(record_kb * 1024 + 4096)
    n_eval = records // 10
    plan = [(f"train-{i:05d}-of-00010.record", (records - n_eval) // 10) for i in range(10)]
    plan[-1] = (plan[-1][0], records - n_eval - 9 * ((records - n_eval) // 10))
    plan.append(("test.record", n_eval))
    for name, n in plan:
        with open(root / name, "wb") as f:
            for _ in range(n):
                start = rng.randrange(4096)
                f.write(tfrecord.frame_record(blob[start:start + record_kb * 1024]))
    (root / "label_map.pbtxt").write_text(
        "".join(f"item {{ id: {i} name: 'c{i}' }}\n" for i in (1, 2, 3)))
    cfg = render(load_pipeline(template_path("tiny_ssd_mobilenet_v2")), {
        "train_input_reader.label_map_path": str(root / "label_map.pbtxt"),
        "eval_input_reader[0].label_map_path": str(root / "label_map.pbtxt"),
        "train_input_reader.tf_record_input_reader.input_path":
            str(root / "train-?????-of-00010.record"),
        "eval_input_reader[0].tf_record_input_reader.input_path": str(root / "test.record"),
    })
    write_pipeline(cfg, root / "pipeline.config")
    (root / "space.yaml").write_text(SPACE)
    return root / "pipeline.config"


def before(root: Path) -> dict[str, int]:
    """The old path: validate (framing + first data checksum), then a full pure-Python read."""
    import glob

    from sweep.data import tfrecord
    from sweep.run import validate

    validate.check(root / "space.yaml", root / "pipeline.config", verify_data="sample")
    saved = tfrecord.COMPILED_CRC
    tfrecord.COMPILED_CRC = False  # the old CRC was the pure-Python loop
    try:
        counts = {}
        for key, pattern in (("train", "train-*.record"), ("eval", "test.record")):
            counts[key] = sum(sum(1 for _ in tfrecord.read_records(p, verify="all"))
                              for p in sorted(glob.glob(str(root / pattern))))
        return counts
    finally:
        tfrecord.COMPILED_CRC = saved


def after(root: Path, verify_data: str) -> dict[str, int]:
    from sweep.run import validate

    return validate.check(root / "space.yaml", root / "pipeline.config", verify_data=verify_data)


def drop_caches() -> bool:
    """Start each row with a cold page cache when allowed (root), as a first `sweep run` is."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(fn: Callable[[], dict[str, int]], cold: bool) -> tuple[float, dict[str, int], bool]:
    dropped = drop_caches() if cold else False
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out, dropped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--record-kb", type=int, default=20)
    p.add_argument("--keep", type=Path, help="make the data here and keep it")
    p.add_argument("--warm", action="store_true", help="do not drop the page cache between rows")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "preflight")
    a = p.parse_args(argv)

    root = a.keep or Path(tempfile.mkdtemp(prefix="sweep-preflight-"))
    root.mkdir(parents=True, exist_ok=True)
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    if not (root / "pipeline.config").exists():
        make_data(root, a.records, a.record_kb)
    make_s = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in root.glob("*.record"))
    from sweep.run import validate

    validate.validate(root / "space.yaml", root / "pipeline.config", check_data=False)  # imports
    rows = []
    try:
        for name, fn in (("after: --verify-data sample (default)", lambda: after(root, "sample")),
                         ("after: --verify-data full (compiled CRC32C)", lambda: after(root, "full")),
                         ("before: framing + full pure-Python CRC re-read", lambda: before(root))):
            seconds, counts, cold = timed(fn, not a.warm)
            rows.append({"row": name, "seconds": round(seconds, 2), "counts": counts,
                         "cold_cache": cold})
            print(f"{name:50s} {seconds:8.2f} s  {counts}", flush=True)
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    base = rows[2]["seconds"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "uptime_before": uptime_before, "uptime_after": uptime_after,
        "records": a.records, "bytes": size, "make_data_s": round(make_s, 1), "rows": rows,
        "ratio_default_vs_before": round(rows[0]["seconds"] / base, 4),
        "ratio_full_vs_before": round(rows[1]["seconds"] / base, 4),
        "goal": "default path <= 20 s on 50,000 records / ~1 GB",
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Pre-flight cost ({result['date']})", "",
             f"{a.records} records, {size / 1e9:.2f} GB (10 train shards + test.record); "
             f"{result['machine']}, {result['cpus']} CPUs; page cache dropped before each row: "
             f"{rows[0]['cold_cache']}.", "", f"- load before: `{uptime_before}`",
             f"- load after: `{uptime_after}`", "",
             "| path | seconds | vs before |", "| --- | ---: | ---: |"]
    lines += [f"| {r['row']} | {r['seconds']:.2f} | {r['seconds'] / base:.3f}x |" for r in rows]
    lines += ["", f"Goal: {result['goal']}: "
              f"{'met' if rows[0]['seconds'] <= 20 else 'NOT met'} ({rows[0]['seconds']:.1f} s)."]
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
