"""A small synthetic traffic-sign detection dataset for ``sweep demo``, made at run time.

Writes what the TF2 OD API tutorial keeps in ``annotations/``::

    label_map.pbtxt   4 classes: prohibitory, warning, mandatory, stop
    train.record      TFRecord of tf.train.Example in the OD API's keys (JPEG images)
    test.record       the eval split

TensorFlow is not imported: the Example protos come from a private descriptor pool (wire-
compatible with ``tensorflow.Example``, which is all a TFRecord reader sees) and the TFRecord
framing comes from ``sweep.data.tfrecord``, so making the data takes about a second and works in fast
tests.

Never clobbers: a target file that exists with different bytes is an error (``ConfigError``
naming the file) unless ``overwrite=True``; identical files are left alone, so running the demo
twice reuses the data.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from sweep.core.errors import ConfigError, Problem
from sweep.data.label_map import label_map_text
from sweep.data.tfrecord import crc32c, frame_record, masked_crc32c, read_records  # noqa: F401 - re-exported

# The TFRecord framing lives in sweep.data.tfrecord; these names stay importable from here.
iter_records = read_records  # yields every payload, both checksums of every record verified

CLASS_NAMES: tuple[str, ...] = ("prohibitory", "warning", "mandatory", "stop")
LABEL_MAP = "label_map.pbtxt"
TRAIN_RECORD = "train.record"
EVAL_RECORD = "test.record"  # the tutorial's name for the eval split
_JPEG_QUALITY = 90


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset is and what is in it; what the workspace writer needs."""

    annotations_dir: Path
    label_map_path: Path
    train_record: Path
    eval_record: Path
    class_names: tuple[str, ...]
    n_train: int
    n_eval: int
    image_size: int
    images_dir: Path | None = None
    reused: bool = False  # True when every file was already there, identical

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------- Example protos


def _example_classes() -> tuple[Any, Any]:
    """Build ``Example`` and ``Feature`` messages equal on the wire to TF's ``example.proto``.

    A private pool, so the names never clash with TensorFlow's own when both are loaded.
    """
    fd = descriptor_pb2.FileDescriptorProto(
        name="sweep/example.proto", package="sweep_example", syntax="proto3"
    )
    F = descriptor_pb2.FieldDescriptorProto
    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    for name, ftype in (("BytesList", F.TYPE_BYTES), ("FloatList", F.TYPE_FLOAT),
                        ("Int64List", F.TYPE_INT64)):
        m = fd.message_type.add(name=name)
        m.field.add(name="value", number=1, type=ftype, label=rep)  # proto3: packed
    feature = fd.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name in enumerate(("bytes_list", "float_list", "int64_list"), start=1):
        type_name = ".sweep_example." + name.title().replace("_", "")
        feature.field.add(name=name, number=number, type=F.TYPE_MESSAGE, label=opt,
                          type_name=type_name, oneof_index=0)
    features = fd.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt,
                    type_name=".sweep_example.Feature")
    features.field.add(name="feature", number=1, type=F.TYPE_MESSAGE, label=rep,
                       type_name=".sweep_example.Features.FeatureEntry")
    example = fd.message_type.add(name="Example")
    example.field.add(name="features", number=1, type=F.TYPE_MESSAGE, label=opt,
                      type_name=".sweep_example.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    get = message_factory.GetMessageClass  # protobuf 4's (MessageFactory.GetPrototype warns)
    return get(pool.FindMessageTypeByName("sweep_example.Example")), get(
        pool.FindMessageTypeByName("sweep_example.Feature")
    )


Example, Feature = _example_classes()


def _feature(values: Sequence[Any] | Any) -> Any:
    if not isinstance(values, list | tuple):
        values = [values]
    f = Feature()
    if all(isinstance(v, bytes) for v in values) and values:
        f.bytes_list.value.extend(values)
    elif all(isinstance(v, int) for v in values) and values:
        f.int64_list.value.extend(values)
    else:
        f.float_list.value.extend(float(v) for v in values)
    return f


def encode_example(features: dict[str, Any]) -> bytes:
    """Serialize ``{key: bytes | int | float | list of one kind}`` as a ``tf.train.Example``."""
    ex = Example()
    for key, values in features.items():
        ex.features.feature[key].CopyFrom(_feature(values))
    return ex.SerializeToString(deterministic=True)


def decode_example(data: bytes) -> dict[str, list[Any]]:
    """Parse a serialized ``tf.train.Example`` into ``{key: list of values}``."""
    ex = Example.FromString(data)
    out: dict[str, list[Any]] = {}
    for key, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        out[key] = list(getattr(f, kind).value) if kind else []
    return out


# --------------------------------------------------------------------------- drawing

# Pillow is imported inside the drawing code: only making a dataset needs it.
RED, WHITE, BLUE, BLACK = (200, 20, 30), (245, 245, 245), (20, 70, 180), (15, 15, 15)


def _octagon(cx: float, cy: float, half: float) -> list[tuple[float, float]]:
    # Vertices at 22.5 + 45k degrees: flat sides at the box edges, so the box is exact.
    r = half / math.cos(math.pi / 8)
    return [(cx + r * math.cos(math.pi / 8 + k * math.pi / 4),
             cy + r * math.sin(math.pi / 8 + k * math.pi / 4)) for k in range(8)]


def _draw_sign(draw: Any, cls: int, x0: float, y0: float, s: float) -> tuple[float, float]:
    """Draw sign ``cls`` with its box's top-left at (x0, y0), width s; return (width, height).

    Pixel boxes are continuous coordinates: a shape drawn on pixels x0..x0+s-1 spans [x0, x0+s].
    """
    x1, y1 = x0 + s - 1, y0 + s - 1
    cx, cy = x0 + (s - 1) / 2, y0 + (s - 1) / 2
    ring = max(2.0, s * 0.14)
    name = CLASS_NAMES[cls]
    if name == "prohibitory":
        draw.ellipse((x0, y0, x1, y1), fill=RED)
        draw.ellipse((x0 + ring, y0 + ring, x1 - ring, y1 - ring), fill=WHITE)
        return s, s
    if name == "mandatory":
        draw.ellipse((x0, y0, x1, y1), fill=BLUE)
        w = s * 0.12  # a white up-arrow
        draw.rectangle((cx - w, cy - s * 0.05, cx + w, y1 - s * 0.2), fill=WHITE)
        draw.polygon([(cx, y0 + s * 0.18), (cx - s * 0.25, cy), (cx + s * 0.25, cy)], fill=WHITE)
        return s, s
    if name == "warning":
        h = round(s * math.sqrt(3) / 2)
        yb = y0 + h - 1
        draw.polygon([(cx, y0), (x1, yb), (x0, yb)], fill=RED)
        inset = ring * 1.6
        draw.polygon([(cx, y0 + inset * 1.2), (x1 - inset, yb - ring * 0.8),
                      (x0 + inset, yb - ring * 0.8)], fill=WHITE)
        bar = max(1.0, s * 0.05)  # "!"
        draw.rectangle((cx - bar, y0 + h * 0.4, cx + bar, y0 + h * 0.68), fill=BLACK)
        draw.rectangle((cx - bar, y0 + h * 0.74, cx + bar, y0 + h * 0.8), fill=BLACK)
        return s, h
    # stop
    draw.polygon(_octagon(cx, cy, (s - 1) / 2), fill=RED)
    draw.polygon(_octagon(cx, cy, (s - 1) / 2 - ring * 0.5), outline=WHITE)
    draw.rectangle((x0 + s * 0.22, cy - s * 0.08, x1 - s * 0.22, cy + s * 0.08), fill=WHITE)
    return s, s


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


@dataclass(frozen=True)
class Scene:
    """How hard the synthetic images are: what the demo's detector must learn.

    The default is sized so the demo's tiny SSD, trained from scratch on two CPU cores, reaches
    COCO mAP@.50 >= 0.5 in a few hundred steps: GTSRB-like scenes of one or two large signs on
    a street-coloured background with a little clutter. Smaller signs and more clutter make a
    harder task (and a detector that needs thousands of steps)."""

    signs: tuple[int, int] = (1, 2)  # signs per image, both ends included
    sign_size: tuple[float, float] = (0.3, 0.6)  # a sign's side, as a fraction of the image side
    clutter: tuple[int, int] = (0, 2)  # background rectangles and ellipses per image
    noise: float = 4.0  # sensor noise, standard deviation in grey levels


def render_image(rng: np.random.Generator, size: int, scene: Scene = Scene()
                 ) -> tuple[bytes, list[tuple[int, tuple]]]:
    """One JPEG of ``scene``; returns (jpeg bytes, [(class index, (x0, y0, x1, y1) px)])."""
    from PIL import Image, ImageDraw

    # Background: a random two-colour vertical gradient plus muted clutter (buildings, trees).
    top, bottom = rng.integers(40, 220, 3), rng.integers(30, 180, 3)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    bg = (top * (1 - t) + bottom * t) * np.ones((size, size, 3))
    img = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(scene.clutter[0], scene.clutter[1] + 1))):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(size // 10, size // 3, 2)
        colour = tuple(int(c) for c in rng.integers(50, 200, 3))
        shape = draw.rectangle if rng.random() < 0.6 else draw.ellipse
        shape((int(x), int(y), int(x + w), int(y + h)), fill=colour)

    boxes: list[tuple[int, tuple]] = []
    lo = max(12, int(size * scene.sign_size[0]))
    hi = max(lo, min(size, int(size * scene.sign_size[1])))
    for _ in range(int(rng.integers(scene.signs[0], scene.signs[1] + 1))):
        for _attempt in range(20):  # place without heavy overlap; give up on this sign if crowded
            cls = int(rng.integers(len(CLASS_NAMES)))
            s = int(rng.integers(lo, hi + 1))
            x0, y0 = (int(v) for v in rng.integers(0, size - s + 1, 2))
            box = (x0, y0, x0 + s, y0 + s)
            if all(_iou(box, other) < 0.05 for _, other in boxes):
                break
        else:
            continue
        if rng.random() < 0.5:  # a pole, from behind the sign to the ground
            pole = max(1, s // 12)
            draw.rectangle((x0 + s // 2 - pole, y0 + s // 2, x0 + s // 2 + pole, size),
                           fill=(110, 110, 110))
        w, h = _draw_sign(draw, cls, x0, y0, s)
        boxes.append((cls, (x0, y0, x0 + w, y0 + h)))

    # Mild sensor noise and exposure change, applied over the signs too.
    arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.8, 1.15)
    arr += rng.normal(0.0, scene.noise, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue(), boxes


def detection_example(image: bytes, fmt: str, width: int, height: int, filename: str,
                      source_id: str, boxes: Sequence[tuple[float, float, float, float]],
                      class_names: Sequence[str], class_ids: Sequence[int],
                      extra: dict[str, Any] | None = None) -> bytes:
    """A serialized ``tf.train.Example`` in the OD API's keys (what its TfExampleDecoder reads).

    ``boxes`` are (xmin, ymin, xmax, ymax) normalized to [0, 1]; ``fmt`` is "jpeg" or "png";
    ``class_ids`` are label map ids (from 1). ``extra``: more keys, e.g. object/difficult.
    An image without boxes has no object keys (an empty list has no type on the wire).
    """
    features = {
        "image/encoded": image,
        "image/format": fmt.encode(),
        "image/height": height,
        "image/width": width,
        "image/filename": filename.encode(),
        "image/source_id": source_id.encode(),
        "image/object/bbox/xmin": [b[0] for b in boxes],
        "image/object/bbox/xmax": [b[2] for b in boxes],
        "image/object/bbox/ymin": [b[1] for b in boxes],
        "image/object/bbox/ymax": [b[3] for b in boxes],
        "image/object/class/text": [n.encode() for n in class_names],
        "image/object/class/label": list(class_ids),
        **(extra or {}),
    }
    return encode_example({k: v for k, v in features.items() if v != []})


def _example(jpeg: bytes, boxes: list[tuple[int, tuple]], filename: str, size: int) -> bytes:
    # Boxes are normalized and clipped to [0, 1], as the OD API expects.
    def norm(v: float) -> float:
        return min(1.0, max(0.0, v / size))

    return detection_example(
        jpeg, "jpeg", size, size, filename, filename,
        [tuple(norm(v) for v in b) for _, b in boxes],
        [CLASS_NAMES[c] for c, _ in boxes],
        [c + 1 for c, _ in boxes])  # label map ids start at 1


def _split(split: str, n: int, size: int, seed: int, scene: Scene
           ) -> tuple[bytes, dict[str, bytes]]:
    # One generator per split, so changing n_train does not change the eval images.
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    records, images = [], {}
    for i in range(n):
        filename = f"{split}_{i:04d}.jpg"
        jpeg, boxes = render_image(rng, size, scene)
        records.append(frame_record(_example(jpeg, boxes, filename, size)))
        images[filename] = jpeg
    return b"".join(records), images


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def make_dataset(
    annotations_dir: Path,
    *,
    n_train: int = 256,
    n_eval: int = 64,
    image_size: int = 128,
    seed: int = 0,
    images_dir: Path | None = None,
    overwrite: bool = False,
    scene: Scene = Scene(),
) -> DatasetInfo:
    """Write label_map.pbtxt, train.record and test.record (and JPEGs if ``images_dir``).

    Deterministic given the arguments. Files that already exist with the same bytes are kept;
    any that differ raise ``ConfigError`` naming each one, unless ``overwrite`` is true.
    """
    for name, value, low in (("n_train", n_train, 1), ("n_eval", n_eval, 1),
                             ("image_size", image_size, 32)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"`{name} >= {low}` must hold, but got {name}={value!r}")
    annotations_dir = Path(annotations_dir).absolute()
    train_bytes, train_images = _split("train", n_train, image_size, seed, scene)
    eval_bytes, eval_images = _split("test", n_eval, image_size, seed, scene)
    targets: dict[Path, bytes] = {
        annotations_dir / LABEL_MAP: label_map_text(CLASS_NAMES).encode(),
        annotations_dir / TRAIN_RECORD: train_bytes,
        annotations_dir / EVAL_RECORD: eval_bytes,
    }
    if images_dir is not None:
        images_dir = Path(images_dir).absolute()
        for split, images in (("train", train_images), ("test", eval_images)):
            targets.update({images_dir / split / name: data for name, data in images.items()})

    existing = {p: p.read_bytes() for p in targets if p.is_file()}
    differ = [p for p, data in targets.items() if p in existing and existing[p] != data]
    if differ and not overwrite:
        settings = f"n_train={n_train}, n_eval={n_eval}, image_size={image_size}, seed={seed}"
        raise ConfigError([
            Problem(str(p), "", "exists and differs from the demo data sweep would write "
                    f"({settings}); it was made with other settings or by someone else",
                    "pass --force (overwrite=True) to replace it, or use another workspace")
            for p in differ
        ])
    to_write = [p for p in targets if existing.get(p) != targets[p]]
    for path in to_write:
        _write_atomic(path, targets[path])
    return DatasetInfo(
        annotations_dir=annotations_dir,
        label_map_path=annotations_dir / LABEL_MAP,
        train_record=annotations_dir / TRAIN_RECORD,
        eval_record=annotations_dir / EVAL_RECORD,
        class_names=CLASS_NAMES,
        n_train=n_train,
        n_eval=n_eval,
        image_size=image_size,
        images_dir=images_dir,
        reused=not to_write,
    )
