"""`sweep data inspect`: what is in OD API TFRecords, and what is wrong with them.

Counts examples and boxes, boxes per class (named by the label map when one is given), image
sizes, and box sizes as COCO counts them (small < 32x32 px of area, medium < 96x96, large); flags
empty or corrupt files and examples whose image does not open or has another size than its
header says, boxes outside [0, 1] or inverted, and class ids the label map does not know.
Reads with ``sweep.data.tfrecord`` and opens only image headers: no TensorFlow, fast on large sets.
"""

from __future__ import annotations

import io
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sweep.core.errors import Problem
from sweep.data.dataset import decode_example
from sweep.data.tfrecord import TFRecordError, read_records

SMALL, MEDIUM = 32 * 32, 96 * 96  # COCO's area thresholds, in pixels
MAX_LISTED = 20


@dataclass
class RecordStats:
    files: list[Path]
    examples: int = 0
    boxes: int = 0
    no_boxes: int = 0  # examples without any box (negatives, or lost annotations)
    per_class: Counter = field(default_factory=Counter)  # (id, text) -> boxes
    image_sizes: Counter = field(default_factory=Counter)  # (width, height) -> examples
    box_sizes: Counter = field(default_factory=Counter)  # small / medium / large -> boxes
    box_sides: list[float] = field(default_factory=list)  # sqrt(area) px, for the plot
    formats: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    label_map: dict[int, str] | None = None

    def flag(self, where: str, problem: str, fix: str) -> None:
        self.problems.append(Problem(where, "", problem, fix))


def _feature(ex: dict, key: str, default: object = None) -> object:
    values = ex.get(key) or []
    return values[0] if values else default


def _check_example(ex: dict, where: str, stats: RecordStats) -> None:
    from PIL import Image

    width, height = _feature(ex, "image/width", 0), _feature(ex, "image/height", 0)
    encoded = _feature(ex, "image/encoded", b"")
    stats.formats[(_feature(ex, "image/format", b"?") or b"?").decode(errors="replace")] += 1
    if not encoded:
        stats.flag(where, "no image/encoded bytes", "re-create the record from the images")
    else:
        try:
            with Image.open(io.BytesIO(encoded)) as im:
                actual = im.size
            if (width, height) != actual:
                stats.flag(where, f"header says {width}x{height}, the image is "
                           f"{actual[0]}x{actual[1]}", "write image/width and image/height "
                           "from the image itself")
                width, height = actual
        except (OSError, ValueError) as e:
            stats.flag(where, f"the image does not open ({e})", "re-create the record")
    stats.image_sizes[(width, height)] += 1
    boxes = list(zip(*(ex.get(f"image/object/bbox/{k}", []) for k in
                       ("xmin", "ymin", "xmax", "ymax")), strict=False))
    labels = ex.get("image/object/class/label", [])
    texts = [t.decode(errors="replace") for t in ex.get("image/object/class/text", [])]
    if len(labels) != len(boxes):
        stats.flag(where, f"{len(boxes)} boxes but {len(labels)} class labels",
                   "write one image/object/class/label per box")
    if not boxes:
        stats.no_boxes += 1
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        stats.boxes += 1
        label = labels[i] if i < len(labels) else 0
        text = texts[i] if i < len(texts) else ""
        stats.per_class[(label, text)] += 1
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            stats.flag(where, f"box {i} ({x0:.3g}, {y0:.3g}, {x1:.3g}, {y1:.3g}) is outside "
                       "[0, 1] or inverted", "normalize boxes by the image size, xmin < xmax")
        if stats.label_map is not None and label not in stats.label_map:
            stats.flag(where, f"box {i}: class id {label} is not in the label map",
                       "convert again with this label map (--label-map), or fix the map")
        elif stats.label_map is not None and text and stats.label_map[label] != text:
            stats.flag(where, f"box {i}: class id {label} is '{stats.label_map[label]}' in the "
                       f"label map but the record says '{text}'", "use the label map the "
                       "records were written with")
        area = max(0.0, (x1 - x0) * width) * max(0.0, (y1 - y0) * height)
        stats.box_sizes["small" if area < SMALL else "medium" if area < MEDIUM else "large"] += 1
        stats.box_sides.append(area ** 0.5)


def inspect_records(paths: list[Path], label_map: Path | None = None) -> RecordStats:
    """Read every example of ``paths``; never raises for bad records (they are flagged)."""
    from sweep.data.label_map import read_label_map

    stats = RecordStats([Path(p) for p in paths])
    if label_map is not None:
        stats.label_map = {i: n for n, i in read_label_map(label_map).items()}
    for path in stats.files:
        n = 0
        try:
            for n, data in enumerate(read_records(path), start=1):  # noqa: B007 - n after loop
                where = f"{path}: example {n - 1}"
                try:
                    ex = decode_example(data)
                except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError
                    stats.flag(where, f"not a tf.train.Example ({e})", "re-create the record")
                    continue
                stats.examples += 1
                _check_example(ex, f"{where} ({_feature(ex, 'image/source_id', b'').decode()})",
                               stats)
        except FileNotFoundError:
            stats.flag(str(path), "no such file", "pass existing .record files")
        except TFRecordError as e:
            stats.flag(str(path), f"corrupt after {n} examples: {e.reason}",
                       "re-create the file (convert again)")
        if n == 0 and path.exists():
            stats.flag(str(path), "holds no examples", "convert again, or drop it from "
                       "input_path")
    texts: dict[int, set[str]] = {}
    for i, text in stats.per_class:
        texts.setdefault(i, set()).add(text)
    for i, names in sorted(texts.items()):
        if len(names - {""}) > 1:
            where = str(stats.files[0]) if len(stats.files) == 1 else "the records given"
            stats.flag(where, f"class id {i} is named "
                       f"{sorted(names - {''})} in different examples", "convert every split "
                       "with one label map (--label-map)")
    return stats


def render_table(stats: RecordStats) -> str:
    """The report printed by `sweep data inspect`."""
    lines = [f"{len(stats.files)} file(s): {stats.examples} examples, {stats.boxes} boxes"
             f" ({stats.no_boxes} examples without boxes); formats: "
             + ", ".join(f"{k} {v}" for k, v in stats.formats.most_common())]
    names = stats.label_map or {}
    lines += ["", "boxes per class:", f"  {'id':>4}  {'class':<40} {'boxes':>8} {'share':>6}"]
    ids = sorted({i for i, _ in stats.per_class} | set(names))
    for i in ids:
        count = sum(v for (j, _), v in stats.per_class.items() if j == i)
        text = names.get(i) or next((t for (j, t) in stats.per_class if j == i and t), "")
        mark = "" if not names or i in names else "  (not in the label map)"
        lines.append(f"  {i:>4}  {text[:40]:<40} {count:>8} "
                     f"{count / max(1, stats.boxes):>6.1%}{mark}")
    if stats.image_sizes:
        widths = [w for (w, _), n in stats.image_sizes.items() for _ in range(n)]
        heights = [h for (_, h), n in stats.image_sizes.items() for _ in range(n)]
        lines += ["", "image sizes (width x height): "
                  f"min {min(widths)}x{min(heights)}, median {statistics.median(widths):g}x"
                  f"{statistics.median(heights):g}, max {max(widths)}x{max(heights)}; most "
                  "common: " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in
                                         stats.image_sizes.most_common(3))]
    if stats.boxes:
        lines += ["", "box sizes (COCO: small < 32x32 px area, medium < 96x96, large):"]
        lines += [f"  {k:<7} {stats.box_sizes[k]:>8} {stats.box_sizes[k] / stats.boxes:>6.1%}"
                  for k in ("small", "medium", "large")]
    if stats.problems:
        lines += ["", f"{len(stats.problems)} problem(s):"]
        lines += [f"  - {p}" for p in stats.problems[:MAX_LISTED]]
        if len(stats.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(stats.problems) - MAX_LISTED} more")
    else:
        lines += ["", "no problems found"]
    return "\n".join(lines)


def plot(stats: RecordStats, path: Path) -> Path | None:
    """``path`` (PNG): boxes per class, box sizes, image sizes."""
    names = stats.label_map or {}
    per_class: Counter = Counter()
    for (i, text), n in stats.per_class.items():
        per_class[f"{i} {names.get(i) or text}"] += n
    sizes = [s for s, n in stats.image_sizes.items() for _ in range(n)]
    return dataset_overview(dict(sorted(per_class.items(), key=lambda kv: int(
        kv[0].split()[0]))), stats.box_sides, sizes, Path(path))


def dataset_overview(per_class: Mapping[str, int], box_sides: Sequence[float],
                     image_sizes: Sequence[tuple[int, int]], path: Path) -> Path | None:
    """Boxes per class, box size (sqrt of area, px, COCO's 32/96 marked) and image sizes."""
    if not per_class and not image_sizes:
        return None
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, max(4.0, 0.22 * len(per_class))))
    names = list(per_class)
    axes[0].barh(range(len(names)), [per_class[n] for n in names])
    axes[0].set_yticks(range(len(names)), names, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].set_title("boxes per class")
    axes[1].hist(box_sides, bins=40)
    for edge in (32, 96):
        axes[1].axvline(edge, color="k", linestyle="--", linewidth=0.8)
    axes[1].set_title("box size: sqrt(area) px (small | medium | large)")
    if image_sizes:
        w, h = np.array(image_sizes).T
        axes[2].scatter(w, h, s=6, alpha=0.4)
    axes[2].set_xlabel("width px")
    axes[2].set_ylabel("height px")
    axes[2].set_title("image sizes")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=96, bbox_inches="tight")
    plt.close(fig)
    return path
