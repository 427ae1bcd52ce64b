"""Annotations (``sweep.data.annotations``) -> the OD API tutorial's ``annotations/`` folder::

    label_map.pbtxt                     class names, ids from 1
    train.record  (or train.record-00000-of-0000N ... with --shards N)
    test.record   (or test.record-0000k-of-0000N)

Streaming: images are read, checked and written one at a time (round-robin over the shards),
so memory does not grow with the dataset. JPEG and PNG bytes are written as they are; other
formats (GTSRB's PPM) are decoded once and encoded once as JPEG (or PNG). Every image is decoded
once to prove it is readable: a corrupt image would otherwise stop training at its first batch.

Deterministic given ``seed``: the split (by group, so GTSRB tracks stay on one side) and the
order of the training examples (shuffled: GTSRB is sorted by class) depend on nothing else.
Records are written to temporary files and renamed at the end, so a failed or interrupted run
leaves what was there before; existing outputs are replaced only with ``overwrite``.
"""

from __future__ import annotations

import io
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sweep.core.errors import ConfigError, Problem
from sweep.data.annotations import Annotations, Bad, Sample, box_problem
from sweep.data.dataset import EVAL_RECORD, LABEL_MAP, TRAIN_RECORD, detection_example
from sweep.data.label_map import label_map_text, read_label_map
from sweep.data.tfrecord import frame_record

Encoding = Literal["jpeg", "png"]
PASS_THROUGH = {"JPEG": ("jpeg", {"RGB", "L"}), "PNG": ("png", {"RGB", "RGBA", "L", "LA", "P"})}
JPEG_QUALITY = 95
MAX_LISTED = 20  # problems printed; the rest are counted (all go to skipped.txt)


@dataclass
class SplitResult:
    files: list[Path]
    pattern: str  # what input_path in a pipeline.config should say
    examples: int = 0
    boxes: int = 0
    passed_through: int = 0  # image bytes written as they were
    encoded: int = 0  # images decoded and encoded once
    tmp_files: list[Path] = field(default_factory=list, repr=False)  # renamed to files at the end


@dataclass
class ConvertResult:
    out: Path
    label_map: Path
    class_names: tuple[str, ...]
    train: SplitResult
    test: SplitResult | None
    skipped: list[Bad] = field(default_factory=list)
    skipped_file: Path | None = None

    def summary(self) -> str:
        lines = [f"label map: {self.label_map} ({len(self.class_names)} classes)"]
        for name, split in (("train", self.train), ("test", self.test)):
            if split is not None:
                lines.append(f"{name}: {split.pattern}  {split.examples} images, {split.boxes} "
                             f"boxes ({split.passed_through} passed through, {split.encoded} "
                             "encoded)")
        if self.test is None:
            lines.append("test: none written (--split 0 and no test set): evaluation needs one")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad example(s), listed in "
                         f"{self.skipped_file}:")
            lines += [f"  - {b.as_problem()}" for b in self.skipped[:MAX_LISTED]]
            if len(self.skipped) > MAX_LISTED:
                lines.append(f"  ... and {len(self.skipped) - MAX_LISTED} more")
        return "\n".join(lines)


# --------------------------------------------------------------------------- label maps


def _class_ids(found: Annotations, extra: Sequence[Annotations],
               label_map: Path | None) -> tuple[dict[str, int], str]:
    """``{name: id}`` and the label map text to write: imposed, fixed by the format, or the
    class names found in the annotations, sorted, ids from 1."""
    if label_map is not None:
        return read_label_map(label_map), Path(label_map).read_text()
    names = found.class_names or sorted({b.label for a in (found, *extra)
                                         for s in a.samples for b in s.boxes})
    if not names:
        raise ConfigError(Problem("", "", "the annotations hold no boxes, so no class names",
                                  "annotate some objects, or pass --label-map"))
    return {n: i for i, n in enumerate(names, start=1)}, label_map_text(names)


def _unknown_classes(ann: Annotations, ids: dict[str, int], label_map: Path | None) -> None:
    keep = []
    for s in ann.samples:
        unknown = next((b for b in s.boxes if b.label not in ids), None)
        if unknown is None:
            keep.append(s)
            continue
        ann.bad.append(Bad(unknown.where, f"unknown class '{unknown.label}'",
                           f"use a class of {label_map or 'the label map'} "
                           f"({', '.join(list(ids)[:8])}{', ...' if len(ids) > 8 else ''})",
                           str(s.image)))
    ann.samples = keep


# --------------------------------------------------------------------------- split


def split_samples(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample],
                                                                               list[Sample]]:
    """(train, test): whole groups go to test until it holds ``fraction`` of the images."""
    if not 0 <= fraction < 1:
        raise ValueError(f"`0 <= split < 1` must hold, but got split={fraction!r}")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.group or s.source_id, []).append(i)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    want = round(fraction * len(samples))
    if fraction > 0 and len(samples) > 1:
        want = max(1, want)
    test_idx: set[int] = set()
    for g in order:
        if len(test_idx) >= want:
            break
        test_idx.update(groups[g])
    test = [s for i, s in enumerate(samples) if i in test_idx]
    train = [s for i, s in enumerate(samples) if i not in test_idx]
    return train, test


# --------------------------------------------------------------------------- images


def load_image(path: Path, encoding: Encoding = "jpeg") -> tuple[bytes, str, int, int, bool]:
    """(bytes to store, "jpeg"/"png", width, height, re-encoded?) of the image at ``path``.

    Raises ``OSError``/``ValueError`` when it is missing or cannot be decoded to its end.
    """
    from PIL import Image

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        fmt, modes = PASS_THROUGH.get(im.format or "", ("", set()))
        if fmt and im.mode in modes:
            if fmt == "jpeg":
                im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))  # fast full read
            im.load()  # decodes to the end: a truncated or corrupt file raises here
            return data, fmt, width, height, False
        rgb = im.convert("RGB")
    buf = io.BytesIO()
    if encoding == "png":
        rgb.save(buf, format="PNG")
    else:
        rgb.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), encoding, width, height, True


def _example(sample: Sample, ids: dict[str, int], encoding: Encoding) -> tuple[bytes, bool]:
    """The serialized Example of ``sample``; raises ``_BadImage`` naming what is wrong."""
    try:
        data, fmt, width, height, encoded = load_image(sample.image, encoding)
    except FileNotFoundError as e:
        raise _BadImage(Bad(sample.where, f"image '{sample.image}' not found",
                            "restore the image or remove its annotation",
                            str(sample.image))) from e
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for bad files
        raise _BadImage(Bad(sample.where, f"image '{sample.image}' is unreadable ({e})",
                            "re-export or remove the image", str(sample.image))) from e
    if (sample.width, sample.height) != (None, None) and (
            sample.width, sample.height) != (width, height):
        raise _BadImage(Bad(sample.where, f"annotated as {sample.width}x{sample.height} but "
                            f"'{sample.image}' is {width}x{height}",
                            "annotate the image as it is (was it resized?)", str(sample.image)))
    for box in sample.boxes:
        why = box_problem(box, width, height)
        if why:
            raise _BadImage(Bad(box.where, why, "correct the box or remove it",
                                str(sample.image)))
    boxes = [(b.xmin / width, b.ymin / height, b.xmax / width, b.ymax / height)
             for b in sample.boxes]
    extra: dict[str, Any] = {}
    if any(b.difficult or b.truncated for b in sample.boxes):
        extra = {"image/object/difficult": [b.difficult for b in sample.boxes],
                 "image/object/truncated": [b.truncated for b in sample.boxes]}
    return detection_example(data, fmt, width, height, sample.image.name, sample.source_id,
                             boxes, [b.label for b in sample.boxes],
                             [ids[b.label] for b in sample.boxes], extra), encoded


class _BadImage(Exception):
    def __init__(self, bad: Bad) -> None:
        super().__init__(str(bad.as_problem()))
        self.bad = bad


# --------------------------------------------------------------------------- writing


def record_names(base: str, shards: int) -> list[str]:
    """``train.record`` or ``train.record-00000-of-00004`` ... (what the OD API globs)."""
    if shards == 1:
        return [base]
    return [f"{base}-{i:05d}-of-{shards:05d}" for i in range(shards)]


def record_pattern(out: Path, base: str, shards: int) -> str:
    return str(out / (base if shards == 1 else f"{base}-?????-of-{shards:05d}"))


def _ours(out: Path, base: str) -> list[Path]:
    """Existing record files of a split in any shard count (replaced together)."""
    return [p for p in out.glob(f"{base}*") if p.name == base
            or (p.name.startswith(f"{base}-") and "-of-" in p.name)]


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True,
                disable=not enabled or total == 0, leave=True)


def _write_split(samples: list[Sample], out: Path, base: str, shards: int,
                 ids: dict[str, int], encoding: Encoding, skip_bad: bool,
                 skipped: list[Bad], progress: bool) -> SplitResult:
    shards = max(1, min(shards, len(samples)))
    tmps = [out / f".{base}-{i:05d}.{os.getpid()}.tmp" for i in range(shards)]
    result = SplitResult([], "", tmp_files=tmps)
    files = [open(t, "wb") for t in tmps]  # noqa: SIM115 - closed in finally
    ok = False
    try:
        with _progress(len(samples), base, progress) as bar:
            for sample in samples:
                bar.update(1)
                try:
                    example, encoded = _example(sample, ids, encoding)
                except _BadImage as e:
                    if not skip_bad:
                        raise ConfigError(Problem(
                            e.bad.where, "", e.bad.problem,
                            e.bad.fix + ", or pass --skip-bad to leave such images out")) from e
                    skipped.append(e.bad)
                    continue
                files[result.examples % shards].write(frame_record(example))
                result.examples += 1
                result.boxes += len(sample.boxes)
                result.encoded += encoded
                result.passed_through += not encoded
        ok = True
    finally:
        for f in files:
            f.close()
        if not ok:
            for t in tmps:
                t.unlink(missing_ok=True)
    if result.examples == 0:
        for t in tmps:
            t.unlink(missing_ok=True)
        first = skipped[-len(samples)].as_problem() if skipped else ""
        raise ConfigError(Problem(str(out / base), "", f"none of its {len(samples)} images "
                                  f"could be converted (the first: {first})",
                                  "fix the images and annotations"))
    # Round-robin fills shards 0..k-1 first: with fewer examples than shards (bad ones
    # skipped), the empty ones go and the names count the rest (an empty file is no record).
    kept = min(shards, result.examples)
    for t in tmps[kept:]:
        t.unlink()
    result.tmp_files = tmps[:kept]
    result.files = [out / n for n in record_names(base, kept)]
    result.pattern = record_pattern(out, base, kept)
    return result


def convert(found: Annotations, out: Path, *, test: Annotations | None = None,
            split: float = 0.1, label_map: Path | None = None, shards: int = 1, seed: int = 0,
            skip_bad: bool = False, overwrite: bool = False, encoding: Encoding = "jpeg",
            progress: bool = True) -> ConvertResult:
    """Write label_map.pbtxt and the train/test records for ``found`` into ``out``.

    ``test``: a separate test set (else ``split`` of ``found``'s images, by group). Bad
    annotations are all reported (``ConfigError``) before any image is read, unless
    ``skip_bad``, which leaves each bad example out and lists it in ``out/skipped.txt``.
    """
    if shards < 1:
        raise ValueError(f"`shards >= 1` must hold, but got shards={shards!r}")
    if encoding not in ("jpeg", "png"):
        raise ValueError(f"encoding must be 'jpeg' or 'png', not {encoding!r}")
    out = Path(out).absolute()
    extra = [test] if test is not None else []
    ids, label_map_out = _class_ids(found, extra, label_map)
    for ann in (found, *extra):
        _unknown_classes(ann, ids, label_map)
    bad = found.bad + (test.bad if test else [])
    if bad and not skip_bad:
        listed = f" (the first {MAX_LISTED} above)" if len(bad) > MAX_LISTED else ""
        raise ConfigError([b.as_problem() for b in bad[:MAX_LISTED]] + [Problem(
            str(out), "", f"{len(bad)} bad example(s){listed}; nothing was written",
            "fix them, or pass --skip-bad to leave them out")])
    train_samples, test_samples = ((list(found.samples), test.samples) if test is not None
                                   else split_samples(found.samples, split, seed))
    random.Random(seed).shuffle(train_samples)  # GTSRB comes sorted by class
    if not train_samples:
        raise ConfigError(Problem(str(out), "", "no training images left to write",
                                  "check the input folder (and --split)"))

    existing = _ours(out, TRAIN_RECORD) + _ours(out, EVAL_RECORD) + [
        p for p in (out / LABEL_MAP,) if p.exists()]
    if existing and not overwrite:
        raise ConfigError([Problem(str(p), "", "already exists",
                                   "pass --overwrite to replace it, or choose another --out")
                           for p in existing])
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[Bad] = list(bad)
    results: list[SplitResult] = []
    try:
        # The test split gets shards in proportion to its size (at least one).
        test_shards = max(1, round(shards * len(test_samples) / len(train_samples)))
        for base, samples, n in ((TRAIN_RECORD, train_samples, shards),
                                 (EVAL_RECORD, test_samples, test_shards)):
            if samples:
                results.append(_write_split(samples, out, base, n, ids, encoding,
                                            skip_bad, skipped, progress))
    except BaseException:
        for r in results:
            for t in r.tmp_files:
                t.unlink(missing_ok=True)
        raise
    # Everything is written: now replace what was there.
    for p in existing:
        p.unlink()
    for r in results:
        for t, final in zip(r.tmp_files, r.files, strict=True):
            os.replace(t, final)
    lm = out / LABEL_MAP
    lm.write_text(label_map_out)
    skipped_file = None
    (out / "skipped.txt").unlink(missing_ok=True)  # a previous run's list
    if skipped:
        skipped_file = out / "skipped.txt"
        skipped_file.write_text("".join(f"{b.as_problem()}\n" for b in skipped))
    names = tuple(sorted(ids, key=ids.__getitem__))
    return ConvertResult(out, lm, names, results[0], results[1] if len(results) > 1 else None,
                         skipped, skipped_file)

