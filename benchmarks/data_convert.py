"""Conversion throughput of `sweep data` (images/s) on generated annotated sets. Run by hand:

    flock /work/tf.lock .venv/bin/python benchmarks/data_convert.py [--n 5000]
        [--out benchmarks/results/data_convert.md]

Generates, in a temp dir, ``--n`` images in each of two shapes, then converts each with the
same calls `sweep data` makes (``sweep.data.annotations.read_*`` + ``sweep.data.convert.convert``):

- voc:   labelImg VOC XML + 640x480 JPEGs with photo-like noise (bytes passed through; each
         image decoded once to check it, at 1/8 scale via JPEG draft mode)
- gtsrb: GT-*.csv + PPM images of 30-120 px as GTSRB has (decoded and encoded once as JPEG)

and times reading the annotations and the whole conversion, once with the TFRecord checksum
from google-crc32c's C extension (what ``sweep.data.tfrecord`` uses) and once with its pure-Python
fallback, side by side, plus the checksum's own speed on the bytes written. ``uptime`` is
recorded before and after: other jobs share this machine. Writes a Markdown table and JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sweep.data import (  # noqa: E402
    annotations,
    convert,
    tfrecord,  # noqa: E402
)
from tests.annotation_fixtures import draw_image, make_voc  # noqa: E402


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def make_gtsrb_like(root: Path, n: int, seed: int = 0) -> None:
    """GTSRB's layout with its spread of sizes: 43 class folders, tracks of 30 frames."""
    rng = random.Random(seed)
    per_class = max(1, n // 43)
    made = 0
    for cls in range(43):
        folder = root / f"{cls:05d}"
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        count = per_class if cls < 42 else n - made
        for i in range(count):
            side = rng.randint(30, 120)
            d = draw_image(folder / f"{i // 30:05d}_{i % 30:05d}.ppm", rng, [str(cls)],
                           size=(side, side + rng.randint(-3, 3)), n_boxes=1, noise=12.0)
            _, x0, y0, x1, y1 = d.boxes[0]
            rows.append(f"{d.path.name};{d.width};{d.height};{x0};{y0};{x1 - 1};{y1 - 1};{cls}")
        made += count
        (folder / f"GT-{cls:05d}.csv").write_text("\n".join(rows) + "\n")


def measure(kind: str, source: Path, out: Path, crc: str) -> dict:
    """One conversion, with the checksum from the C extension or pure Python (``crc``)."""
    read = {"voc": annotations.read_voc, "gtsrb": annotations.read_gtsrb}[kind]
    fast = tfrecord.crc32c
    crc32c = tfrecord.crc32c = fast if crc == "c" else tfrecord.crc32c_python
    try:
        return _measure(kind, read, source, out, crc, crc32c)
    finally:
        tfrecord.crc32c = fast


def _measure(kind: str, read: object, source: Path, out: Path, crc: str, crc32c: object) -> dict:
    t0 = time.perf_counter()
    found = read(source)
    t_read = time.perf_counter() - t0
    result = convert.convert(found, out, split=0.1, shards=4, progress=False)
    t_all = time.perf_counter() - t0
    files = result.train.files + result.test.files
    data = b"".join(f.read_bytes() for f in files)
    t1 = time.perf_counter()
    crc32c(data[: 4 << 20])  # 4 MiB sample of the written bytes
    crc_mb_s = (min(len(data), 4 << 20) / 2**20) / (time.perf_counter() - t1)
    n = result.train.examples + result.test.examples
    return {"kind": kind, "crc": crc, "images": n, "read_annotations_s": round(t_read, 2),
            "convert_s": round(t_all, 2), "images_per_s": round(n / t_all, 1),
            "passed_through": result.train.passed_through + result.test.passed_through,
            "encoded": result.train.encoded + result.test.encoded,
            "output_mb": round(len(data) / 2**20, 1),
            "output_kb_per_image": round(len(data) / 1024 / n, 1),
            "crc32c_mb_per_s": round(crc_mb_s, 1),
            "crc_share_est": round((len(data) / 2**20 / crc_mb_s) / t_all, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000, help="images per set [%(default)s]")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/data_convert.md")
    a = p.parse_args()
    before = _uptime()
    rows = []
    with tempfile.TemporaryDirectory(prefix="data_convert_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_voc(tmp / "voc", a.n, suffixes=(".jpg",), size=(640, 480), noise=12.0)
        make_gtsrb_like(tmp / "gtsrb" / "Final_Training" / "Images", a.n)
        gen_s = time.perf_counter() - t0
        for kind in ("voc", "gtsrb"):
            for crc in ("c", "python"):
                rows.append(measure(kind, tmp / kind, tmp / f"out_{kind}_{crc}", crc))
                print(json.dumps(rows[-1]), flush=True)
    after = _uptime()
    result = {"n": a.n, "generate_s": round(gen_s, 1), "uptime_before": before,
              "uptime_after": after, "rows": rows, "python": sys.version.split()[0]}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# `sweep data` conversion throughput ({a.n} images per set)", "",
             f"uptime before: `{before}`  ", f"uptime after: `{after}`", "",
             "| set | CRC32C | images | read annotations s | convert s (total) | images/s | passed through"
             " | encoded | output MB (KB/image) | CRC32C MB/s | est. CRC share |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['kind']} | {r['crc']} | {r['images']} | {r['read_annotations_s']} | {r['convert_s']} | "
              f"{r['images_per_s']} | {r['passed_through']} | {r['encoded']} | "
              f"{r['output_mb']} ({r['output_kb_per_image']}) | {r['crc32c_mb_per_s']} | "
              f"{r['crc_share_est']:.0%} |" for r in rows]
    lines += ["", "voc: 640x480 noisy JPEGs passed through (each decoded once at 1/8 scale to check "
              "it); gtsrb: PPMs of 30-120 px decoded and encoded once as JPEG (quality 95). "
              "--split 0.1, --shards 4. Generated by benchmarks/data_convert.py."]
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
