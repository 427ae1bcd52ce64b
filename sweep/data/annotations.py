"""Reading people's annotations: labelImg Pascal VOC XML, one-row-per-box CSV, and GTSRB.

Each reader turns a folder or file into ``Sample``s (an image path, its annotated size and its
boxes in pixels, each remembering the file and line it came from) plus ``Bad`` entries for what
could not be read. Only annotations are held in memory (tens of bytes per box); images are read
one at a time later, by ``sweep.data.convert``. Nothing here imports TensorFlow or opens an image.

Pixel boxes are checked here, against the annotated size, so that a bad annotation is reported
before any image is read; ``sweep.data.convert`` checks them again against the real image size.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from sweep.core.errors import ConfigError, Problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".gif", ".tif", ".tiff")

# GTSRB's 43 classes, by ClassId (label map id = ClassId + 1).
GTSRB_CLASSES: tuple[str, ...] = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)",
    "Speed limit (60km/h)", "Speed limit (70km/h)", "Speed limit (80km/h)",
    "End of speed limit (80km/h)", "Speed limit (100km/h)", "Speed limit (120km/h)",
    "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution",
    "Dangerous curve to the left", "Dangerous curve to the right", "Double curve",
    "Bumpy road", "Slippery road", "Road narrows on the right", "Road work", "Traffic signals",
    "Pedestrians", "Children crossing", "Bicycles crossing", "Beware of ice/snow",
    "Wild animals crossing", "End of all speed and passing limits", "Turn right ahead",
    "Turn left ahead", "Ahead only", "Go straight or right", "Go straight or left",
    "Keep right", "Keep left", "Roundabout mandatory", "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)

CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
GTSRB_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")


@dataclass(frozen=True)
class Box:
    """One object, in pixels, as annotated; ``where`` is its ``file:line``."""

    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    where: str
    difficult: int = 0
    truncated: int = 0


@dataclass(frozen=True)
class Sample:
    """One image and its boxes. ``group``: samples of one group land in the same split."""

    image: Path
    source_id: str  # unique per image in a dataset (COCO eval keys images by it)
    where: str  # file:line of the annotation that names the image
    width: int | None  # as annotated; None when the annotation does not say
    height: int | None
    boxes: tuple[Box, ...]
    group: str = ""


@dataclass(frozen=True)
class Bad:
    """An example that cannot be converted: where, what is wrong, how to fix it."""

    where: str
    problem: str
    fix: str
    image: str = ""  # the image it concerns, when known

    def as_problem(self) -> Problem:
        return Problem(self.where, "", self.problem, self.fix)


@dataclass
class Annotations:
    """What a reader found: the samples, the bad examples, and class names in file order."""

    samples: list[Sample] = field(default_factory=list)
    bad: list[Bad] = field(default_factory=list)
    class_names: tuple[str, ...] | None = None  # a fixed list (GTSRB); None: from the boxes


def box_problem(box: Box, width: int | None, height: int | None) -> str | None:
    """Why ``box`` is invalid in an image of that size (None: it is fine)."""
    if not box.label:
        return "the box has no class name"
    if not (box.xmin < box.xmax and box.ymin < box.ymax):
        return (f"box ({box.xmin:g}, {box.ymin:g}, {box.xmax:g}, {box.ymax:g}) of "
                f"'{box.label}' is inverted or empty (needs xmin < xmax and ymin < ymax)")
    if box.xmin < 0 or box.ymin < 0 or (width and box.xmax > width) or (
            height and box.ymax > height):
        return (f"box ({box.xmin:g}, {box.ymin:g}, {box.xmax:g}, {box.ymax:g}) of "
                f"'{box.label}' lies outside the {width}x{height} image")
    return None


def _check_boxes(sample: Sample, out: Annotations) -> None:
    for box in sample.boxes:
        why = box_problem(box, sample.width, sample.height)
        if why:
            out.bad.append(Bad(box.where, why, "correct the box or remove it from the annotation",
                               str(sample.image)))
            return
    out.samples.append(sample)


# --------------------------------------------------------------------------- Pascal VOC XML


@dataclass
class _Node:
    tag: str
    line: int
    text: str = ""
    children: list[_Node] = field(default_factory=list)

    def find(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def get(self, tag: str) -> str:
        node = self.find(tag)
        return node.text.strip() if node else ""


def _parse_xml(path: Path) -> _Node:
    """A tiny element tree that keeps line numbers (ElementTree's does not)."""
    parser = expat.ParserCreate()
    stack: list[_Node] = [_Node("", 0)]

    def start(tag: str, _attrs: dict) -> None:
        node = _Node(tag, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def data(text: str) -> None:
        stack[-1].text += text

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = data
    with open(path, "rb") as f:
        parser.ParseFile(f)
    return stack[0].children[0]


def _voc_image(xml: Path, root: Path, node: _Node) -> Path | None:
    # labelImg saves the XML next to the image; <path> is often from another machine.
    name = node.get("filename")
    candidates = [xml.parent / name, root / name] if name else []
    if node.get("path"):
        candidates.append(Path(node.get("path")))
    if not name:
        candidates += [xml.with_suffix(s) for s in IMAGE_SUFFIXES]
    return next((p for p in candidates if p.is_file()), None)


def _number(node: _Node, tag: str) -> float:
    return float(node.get(tag))


def read_voc(folder: Path) -> Annotations:
    """Every ``*.xml`` under ``folder`` (recursively, sorted), labelImg's Pascal VOC format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(Problem(str(folder), "", "is not a folder",
                                  "pass the folder holding your labelImg .xml files"))
    out = Annotations()
    xmls = sorted(folder.rglob("*.xml"))
    if not xmls:
        raise ConfigError(Problem(str(folder), "", "holds no .xml annotation files",
                                  "pass the folder where labelImg saved its Pascal VOC XML"))
    for xml in xmls:
        try:
            root = _parse_xml(xml)
        except expat.ExpatError as e:
            out.bad.append(Bad(f"{xml}:{e.lineno}", f"malformed XML ({expat.ErrorString(e.code)})",
                               "fix the file or remove it"))
            continue
        if root.tag != "annotation":
            out.bad.append(Bad(f"{xml}:{root.line}", f"root element is <{root.tag}>, not "
                               "<annotation>", "pass Pascal VOC XML files only"))
            continue
        where = f"{xml}:{(root.find('filename') or root).line}"
        image = _voc_image(xml, folder, root)
        if image is None:
            out.bad.append(Bad(where, f"image '{root.get('filename')}' not found next to the XML "
                               f"or in {folder}", "put the image next to its XML or fix "
                               "<filename>"))
            continue
        size = root.find("size")
        try:
            width = int(_number(size, "width")) if size and size.get("width") else None
            height = int(_number(size, "height")) if size and size.get("height") else None
            boxes = []
            for obj in (c for c in root.children if c.tag == "object"):
                bb = obj.find("bndbox")
                if bb is None:
                    raise ValueError(f"line {obj.line}: <object> has no <bndbox>")
                boxes.append(Box(obj.get("name"), _number(bb, "xmin"), _number(bb, "ymin"),
                                 _number(bb, "xmax"), _number(bb, "ymax"), f"{xml}:{obj.line}",
                                 difficult=int(obj.get("difficult") or 0),
                                 truncated=int(obj.get("truncated") or 0)))
        except ValueError as e:
            out.bad.append(Bad(where, f"unreadable number or element ({e})",
                               "each <object> needs <name> and <bndbox> with numeric "
                               "xmin/ymin/xmax/ymax"))
            continue
        rel = image.relative_to(folder) if image.is_relative_to(folder) else image
        _check_boxes(Sample(image, str(rel), where, width or None, height or None,
                            tuple(boxes)), out)
    return out


# --------------------------------------------------------------------------- CSV


def _csv_rows(path: Path, columns: tuple[str, ...], delimiter: str,
              out: Annotations) -> Iterable[tuple[int, dict[str, str]]]:
    """(line, row) of each data row; a missing column is an error for the whole file."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in columns if c not in header]
            if missing:
                raise ConfigError(Problem(f"{path}:1", "header", f"missing column(s) {missing} "
                                          f"(found {header})", "the header must name: "
                                          + delimiter.join(columns)))
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    out.bad.append(Bad(f"{path}:{reader.line_num}", f"{len(row)} fields, the "
                                       f"header has {len(header)}", "fix or remove the line"))
                    continue
                yield reader.line_num, dict(zip(header, (c.strip() for c in row), strict=True))
        except UnicodeDecodeError as e:  # decoded by the buffer: no reliable line number
            raise ConfigError(Problem(str(path), "", f"is not UTF-8 text ({e.reason})",
                                      "save the file as UTF-8 CSV text")) from e
        except csv.Error as e:
            raise ConfigError(Problem(f"{path}:{reader.line_num}", "", f"unreadable ({e})",
                                      "save the file as plain CSV text")) from e


def _group_rows(rows: Iterable[tuple[str, int, Box | None, int | None, int | None]],
                images_dir: Path, path: Path, out: Annotations,
                group: object = None) -> None:
    """Rows of (filename, line, box, width, height) -> one Sample per image, in first-seen order."""
    by_image: dict[str, list] = {}
    for filename, line, box, width, height in rows:
        entry = by_image.setdefault(filename, [line, width, height, []])
        if box is not None:
            entry[3].append(box)
    for filename, (line, width, height, boxes) in by_image.items():
        image = images_dir / filename
        where = f"{path}:{line}"
        if not image.is_file():
            out.bad.append(Bad(where, f"image '{filename}' not found in {images_dir}",
                               "put the image there or fix the filename", str(image)))
            continue
        source_id = str(image.relative_to(images_dir.parent)) if group else filename
        _check_boxes(Sample(image, source_id, where, width, height, tuple(boxes),
                            group(filename) if callable(group) else ""), out)


def read_csv(path: Path, images_dir: Path | None = None) -> Annotations:
    """The tutorials' one-row-per-box CSV: ``filename,width,height,class,xmin,ymin,xmax,ymax``.

    Images are looked up in ``images_dir`` (default: the CSV's folder).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(Problem(str(path), "", "no such CSV file", "pass the annotation CSV"))
    images_dir = Path(images_dir) if images_dir else path.parent
    out = Annotations()

    def rows() -> Iterable[tuple[str, int, Box | None, int | None, int | None]]:
        for line, r in _csv_rows(path, CSV_COLUMNS, ",", out):
            try:
                box = Box(r["class"], float(r["xmin"]), float(r["ymin"]), float(r["xmax"]),
                          float(r["ymax"]), f"{path}:{line}")
                yield r["filename"], line, box, int(float(r["width"])), int(float(r["height"]))
            except ValueError as e:
                out.bad.append(Bad(f"{path}:{line}", f"not a number ({e})",
                                   "width, height, xmin, ymin, xmax, ymax must be numbers",
                                   str(images_dir / r["filename"])))

    _group_rows(rows(), images_dir, path, out)
    _drop_images_with_bad_rows(out)
    return out


def _drop_images_with_bad_rows(out: Annotations) -> None:
    # A row that could not be read belongs to an image whose other boxes were read: keeping
    # that image would teach the model that the lost object is background.
    bad_images = {b.image for b in out.bad if b.image}
    kept = []
    for s in out.samples:
        if str(s.image) in bad_images:
            out.bad.append(Bad(s.where, "another row of this image is bad (above)",
                               "fix that row", str(s.image)))
        else:
            kept.append(s)
    out.samples = kept


# --------------------------------------------------------------------------- GTSRB


def _gtsrb_track(filename: str) -> str:
    # Training images are named TRACK_FRAME.ppm: 30 frames of one physical sign. Keeping a
    # track on one side of the split stops near-duplicates leaking from train into test.
    stem = Path(filename).stem
    return stem.split("_")[0] if "_" in stem else stem


def read_gtsrb(folder: Path) -> Annotations:
    """Every ``GT-*.csv`` under ``folder`` (GTSRB's ``Final_Training/Images/000NN/GT-000NN.csv``
    layout, or one folder such as ``Final_Test/Images`` with ``GT-final_test.csv``)."""
    folder = Path(folder)
    found = sorted(folder.rglob("GT-*.csv")) if folder.is_dir() else []
    # The test images ship with GT-final_test.test.csv, which has no ClassId; the labels come
    # separately (GTSRB_Final_Test_GT.zip: GT-final_test.csv).
    csvs = [p for p in found if not p.name.endswith(".test.csv")]
    if found and not csvs:
        raise ConfigError(Problem(str(found[0]), "", "has no ClassId column (GTSRB's test "
                                  "images come without labels)", "unpack GTSRB_Final_Test_GT.zip "
                                  f"(GT-final_test.csv) into {found[0].parent}"))
    if not csvs:
        raise ConfigError(Problem(str(folder), "", "holds no GTSRB ground-truth file (GT-*.csv)",
                                  "pass GTSRB's Final_Training/Images folder (or a folder with "
                                  "its GT-*.csv)"))
    out = Annotations(class_names=GTSRB_CLASSES)
    for path in csvs:
        def rows(path: Path = path) -> Iterable[tuple[str, int, Box | None, int, int]]:
            for line, r in _csv_rows(path, GTSRB_COLUMNS, ";", out):
                try:
                    cls = int(r["ClassId"])
                    label = GTSRB_CLASSES[cls] if 0 <= cls < len(GTSRB_CLASSES) else str(cls)
                    # Roi.X2/Y2 are inclusive pixel indices: the box ends after that pixel.
                    box = Box(label, float(r["Roi.X1"]), float(r["Roi.Y1"]),
                              float(r["Roi.X2"]) + 1, float(r["Roi.Y2"]) + 1, f"{path}:{line}")
                    yield r["Filename"], line, box, int(r["Width"]), int(r["Height"])
                except ValueError as e:
                    out.bad.append(Bad(f"{path}:{line}", f"not a number ({e})",
                                       "fix the line: Width, Height, Roi.* and ClassId are "
                                       "integers", str(path.parent / r["Filename"])))

        _group_rows(rows(), path.parent, path, out,
                    group=lambda name, d=path.parent.name: f"{d}/{_gtsrb_track(name)}")
    _drop_images_with_bad_rows(out)
    return out
