"""Small real annotated datasets on disk, in each format ``sweep data`` reads (used by
tests/data/test_convert.py and benchmarks/data_convert.py).

Each image is a plain background with filled rectangles; the rectangles are the boxes, so a
test can check that every box survived the conversion.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"cat": (200, 30, 30), "dog": (30, 30, 200), "bird": (30, 180, 30)}


@dataclass(frozen=True)
class Drawn:
    """One written image: its path, size and boxes ((class, xmin, ymin, xmax, ymax) pixels)."""

    path: Path
    width: int
    height: int
    boxes: tuple[tuple[str, int, int, int, int], ...]


def draw_image(path: Path, rng: random.Random, classes: list[str], *, size: tuple[int, int],
               n_boxes: int = 2, noise: float = 0.0) -> Drawn:
    """Write an image (format from the suffix: .jpg, .png, .ppm) with ``n_boxes`` rectangles.

    ``noise``: the std of Gaussian pixel noise (flat images compress far better than photos;
    the benchmark adds noise so its files have a photo's size).
    """
    w, h = size
    img = Image.new("RGB", (w, h), (120, 120, 120))
    draw = ImageDraw.Draw(img)
    boxes = []
    for _ in range(n_boxes):
        cls = rng.choice(classes)
        bw, bh = rng.randint(w // 6, w // 2), rng.randint(h // 6, h // 2)
        x0, y0 = rng.randint(0, w - bw), rng.randint(0, h - bh)
        draw.rectangle((x0, y0, x0 + bw - 1, y0 + bh - 1), fill=COLOURS.get(cls, (200, 200, 0)))
        boxes.append((cls, x0, y0, x0 + bw, y0 + bh))
    if noise:
        import numpy as np

        arr = np.asarray(img, dtype=np.float32)
        arr += np.random.default_rng(rng.randrange(2**32)).normal(0, noise, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return Drawn(path, w, h, tuple(boxes))


def voc_xml(d: Drawn) -> str:
    """labelImg's Pascal VOC XML for ``d``."""
    objects = "".join(
        f"""  <object>
    <name>{c}</name>
    <pose>Unspecified</pose>
    <truncated>0</truncated>
    <difficult>0</difficult>
    <bndbox>
      <xmin>{x0}</xmin>
      <ymin>{y0}</ymin>
      <xmax>{x1}</xmax>
      <ymax>{y1}</ymax>
    </bndbox>
  </object>
""" for c, x0, y0, x1, y1 in d.boxes)
    return f"""<annotation>
  <folder>{d.path.parent.name}</folder>
  <filename>{d.path.name}</filename>
  <path>/home/someone/else/{d.path.name}</path>
  <source><database>Unknown</database></source>
  <size>
    <width>{d.width}</width>
    <height>{d.height}</height>
    <depth>3</depth>
  </size>
  <segmented>0</segmented>
{objects}</annotation>
"""


def make_voc(folder: Path, n: int, *, seed: int = 0, suffixes: tuple[str, ...] = (".jpg", ".png"),
             size: tuple[int, int] = (96, 64), noise: float = 0.0) -> list[Drawn]:
    rng = random.Random(seed)
    drawn = []
    for i in range(n):
        d = draw_image(folder / f"img_{i:04d}{suffixes[i % len(suffixes)]}", rng,
                       ["cat", "dog", "bird"], size=size, n_boxes=1 + i % 3, noise=noise)
        d.path.with_suffix(".xml").write_text(voc_xml(d))
        drawn.append(d)
    return drawn


def make_csv(csv_path: Path, n: int, *, seed: int = 0,
             size: tuple[int, int] = (80, 60)) -> list[Drawn]:
    rng = random.Random(seed)
    drawn = [draw_image(csv_path.parent / f"pic_{i:04d}.jpg", rng, ["cat", "dog"], size=size,
                        n_boxes=1 + i % 2) for i in range(n)]
    lines = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    lines += [f"{d.path.name},{d.width},{d.height},{c},{x0},{y0},{x1},{y1}"
              for d in drawn for c, x0, y0, x1, y1 in d.boxes]
    csv_path.write_text("\n".join(lines) + "\n")
    return drawn


def make_gtsrb(images_root: Path, classes: int, tracks: int, frames: int, *, seed: int = 0,
               size: tuple[int, int] = (40, 36)) -> list[Drawn]:
    """``Final_Training/Images`` layout: 000NN/GT-000NN.csv and TRACK_FRAME.ppm, one sign each.

    The box is stored as GTSRB does: Roi.X2/Roi.Y2 are the last pixel inside (inclusive).
    """
    rng = random.Random(seed)
    drawn = []
    for cls in range(classes):
        folder = images_root / f"{cls:05d}"
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for t in range(tracks):
            for f in range(frames):
                d = draw_image(folder / f"{t:05d}_{f:05d}.ppm", rng, [str(cls)], size=size,
                               n_boxes=1)
                _, x0, y0, x1, y1 = d.boxes[0]
                rows.append(f"{d.path.name};{d.width};{d.height};{x0};{y0};{x1 - 1};{y1 - 1};{cls}")
                drawn.append(d)
        (folder / f"GT-{cls:05d}.csv").write_text("\n".join(rows) + "\n")
    return drawn
