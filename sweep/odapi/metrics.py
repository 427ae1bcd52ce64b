"""The one reader of the OD API's event files.

Training (``model_lib_v2.train_loop``) writes ``<model_dir>/train/events.out.tfevents.*`` and the
eval job writes ``<model_dir>/eval/events.out.tfevents.*``; both hold TF2 tensor summaries.
Trials, ``sweep status``, reports and tests all read metrics through this module, so a number
in a report is the number in the event file.

It reads the TFRecord framing with ``sweep.data.tfrecord`` instead of importing TensorFlow (an 8 s
import) or TensorBoard's loader (which imports TensorFlow when it is installed), and stops
cleanly at a record that is still being written.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.data.tfrecord import read_records, scan_records

# Tags the OD API writes (model_lib_v2); the names are the OD API's own.
TOTAL_LOSS = "Loss/total_loss"
CLASSIFICATION_LOSS = "Loss/classification_loss"
LOCALIZATION_LOSS = "Loss/localization_loss"
REGULARIZATION_LOSS = "Loss/regularization_loss"
LEARNING_RATE = "learning_rate"
STEPS_PER_SEC = "steps_per_sec"
MAP = "DetectionBoxes_Precision/mAP"
MAP50 = "DetectionBoxes_Precision/mAP@.50IOU"
MAP75 = "DetectionBoxes_Precision/mAP@.75IOU"
AR100 = "DetectionBoxes_Recall/AR@100"

TRAIN_TAGS = (TOTAL_LOSS, CLASSIFICATION_LOSS, LOCALIZATION_LOSS, REGULARIZATION_LOSS,
              LEARNING_RATE, STEPS_PER_SEC)
EVAL_TAGS = (MAP, MAP50, MAP75, AR100)


@dataclass(frozen=True)
class Scalar:
    """One summary value: the stream every consumer reads."""

    step: int
    tag: str
    value: float
    wall_time: float


def _value_of(value) -> float | None:  # noqa: ANN001 - a tensorboard Summary.Value proto
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor"):
        t = value.tensor
        if t.float_val:
            return float(t.float_val[0])
        if t.double_val:
            return float(t.double_val[0])
        if t.int64_val:
            return float(t.int64_val[0])
        if t.int_val:
            return float(t.int_val[0])
        if t.tensor_content:
            # 1 = DT_FLOAT, 2 = DT_DOUBLE, 3 = DT_INT32, 9 = DT_INT64 (types.proto)
            fmt = {1: "<f", 2: "<d", 3: "<i", 9: "<q"}.get(t.dtype)
            if fmt and len(t.tensor_content) == struct.calcsize(fmt):
                return float(struct.unpack(fmt, t.tensor_content)[0])
    return None


def event_files(event_dir: Path) -> list[Path]:
    """Event files of one directory, oldest first (a resumed job adds a new file)."""
    if not event_dir.is_dir():
        return []
    return sorted(event_dir.glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name))


def _varint(b: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        x = b[i]
        i += 1
        value |= (x & 0x7F) << shift
        if x < 0x80:
            return value, i
        shift += 7


def _fields(b: bytes, i: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field of the message ``b[i:end]``; a
    length-delimited field's start and end are its bytes', others' are the value's."""
    while i < end:
        key, i = _varint(b, i)
        kind = key & 7
        if kind == 0:
            _, j = _varint(b, i)
        elif kind == 1:
            j = i + 8
        elif kind == 5:
            j = i + 4
        elif kind == 2:
            n, i = _varint(b, i)
            j = i + n
        else:  # groups: not in event files
            raise ValueError(kind)
        yield key >> 3, kind, i, j
        i = j


DT_STRING = 7  # types.proto


def _pictures_only(payload: bytes) -> bool:
    """The event holds summary values and every one is a picture (an image, or a string tensor
    as TF2's image summary writes it): no scalar in it, so it need not be decoded. Checked on
    the wire format, skipping the pictures' bytes; the OD API eval's pictures are most of an
    eval event file's bytes. False whenever unsure (then the event is decoded as usual)."""
    try:
        summary = next(((a, z) for f, k, a, z in _fields(payload, 0, len(payload))
                        if f == 5 and k == 2), None)  # Event.summary
        if summary is None:
            return False
        values = 0
        for f, k, a, z in _fields(payload, *summary):
            if f != 1 or k != 2:  # Summary.value
                continue
            values += 1
            picture = False
            for vf, vk, va, vz in _fields(payload, a, z):
                if vf == 2:  # simple_value
                    return False
                if vf == 4:  # image
                    picture = True
                elif vf == 8 and vk == 2:  # tensor: its dtype
                    dtype = next((_varint(payload, ta)[0] for tf, tk, ta, _ in
                                  _fields(payload, va, vz) if tf == 1 and tk == 0), None)
                    if dtype != DT_STRING:
                        return False
                    picture = True
            if not picture:
                return False
        return values > 0
    except (IndexError, ValueError):
        return False


def _scalars_of(payload: bytes, wanted: set[str] | None) -> Iterator[Scalar]:
    from tensorboard.compat.proto import event_pb2  # protobuf only; no TensorFlow

    if len(payload) > 4096 and _pictures_only(payload):  # scalar events are small
        return
    event = event_pb2.Event()
    try:
        event.ParseFromString(payload)
    except Exception:  # noqa: BLE001 - a corrupt record must not kill a status call
        return
    if not event.HasField("summary"):
        return
    for value in event.summary.value:
        if wanted is not None and value.tag not in wanted:
            continue
        v = _value_of(value)
        if v is not None:
            yield Scalar(int(event.step), value.tag, v, float(event.wall_time))


def _read_from(path: Path, offset: int, wanted: set[str] | None) -> tuple[list[Scalar], int]:
    """Scalars of the complete records from byte ``offset`` on, and the offset after them."""
    out: list[Scalar] = []
    with open(path, "rb") as f:
        f.seek(offset)
        for payload in scan_records(f, path, verify="none", torn_tail_ok=True):
            offset = f.tell()  # the scanner is suspended right after this record's bytes
            out.extend(_scalars_of(payload, wanted))
    return out, offset


def read_scalars(event_dir: Path | str, tags: Iterable[str] | None = None) -> list[Scalar]:
    """All scalar summaries in ``event_dir`` (e.g. ``<model_dir>/eval``), in file order."""
    wanted = set(tags) if tags is not None else None
    out: list[Scalar] = []
    for path in event_files(Path(event_dir)):
        out.extend(_read_from(path, 0, wanted)[0])
    return out


SIDE_BY_SIDE = "eval_side_by_side_"  # the OD API eval's pictures: detections | ground truth


def read_images_near(event_dir: Path | str, step: int, prefix: str = SIDE_BY_SIDE
                     ) -> tuple[int, dict[str, bytes]] | None:
    """The image summaries of the one evaluation nearest ``step`` (``(its step, {tag: encoded
    image})``), or None. Two passes over the event files: the first notes which steps have
    pictures, the second keeps only that step's bytes, so memory holds one evaluation's
    pictures however many evaluations a long trial has."""
    from tensorboard.compat.proto import event_pb2

    def events() -> Iterator[Any]:
        for path in event_files(Path(event_dir)):
            for payload in read_records(path, verify="none", torn_tail_ok=True):
                event = event_pb2.Event()
                try:
                    event.ParseFromString(payload)
                except Exception:  # noqa: BLE001 - as read_scalars
                    continue
                yield event

    def pictures(event: Any) -> Iterator[Any]:
        return (v for v in event.summary.value
                if v.tag.startswith(prefix) and len(v.tensor.string_val) > 2)

    steps = {int(e.step) for e in events() if any(True for _ in pictures(e))}
    if not steps:
        return None
    at = min(steps, key=lambda s: (abs(s - step), s))
    out: dict[str, bytes] = {}
    for e in events():
        if int(e.step) == at:
            out.update((v.tag, v.tensor.string_val[2]) for v in pictures(e))
    return at, out


def by_step(scalars: Iterable[Scalar]) -> dict[int, dict[str, float]]:
    """``{step: {tag: value}}``; a later write of the same (step, tag) wins (a retried chunk)."""
    table: dict[int, dict[str, float]] = {}
    for s in scalars:
        table.setdefault(s.step, {})[s.tag] = s.value
    return dict(sorted(table.items()))


@dataclass(frozen=True)
class TrialMetrics:
    """What one trial's event files say: train curve, eval curve, and the latest of each."""

    train: dict[int, dict[str, float]]
    eval: dict[int, dict[str, float]]
    train_wall: tuple[float, float] | None  # first and last wall time of train summaries
    train_wall_at: dict[int, float] = field(default_factory=dict)  # step -> its summary's wall

    def train_seconds(self, up_to: int | None = None) -> float | None:
        """Wall seconds from the first train summary to the last one at or before ``up_to``
        (to the last one when None): a trial's training time to a step."""
        steps = [s for s in self.train_wall_at if up_to is None or s <= up_to]
        if not steps or self.train_wall is None:
            return None
        return self.train_wall_at[max(steps)] - self.train_wall[0]

    @property
    def last_train_step(self) -> int | None:
        return max(self.train) if self.train else None

    @property
    def last_eval_step(self) -> int | None:
        return max(self.eval) if self.eval else None

    def last_train(self) -> dict[str, float]:
        return self.train[max(self.train)] if self.train else {}

    def last_eval(self) -> dict[str, float]:
        return self.eval[max(self.eval)] if self.eval else {}


def read_trial(model_dir: Path | str) -> TrialMetrics:
    """Metrics of one OD API ``model_dir`` (train/ and eval/ subfolders)."""
    model_dir = Path(model_dir)
    train_scalars = read_scalars(model_dir / "train")
    walls = [s.wall_time for s in train_scalars]
    wall_at: dict[int, float] = {}
    for s in train_scalars:
        wall_at[s.step] = max(wall_at.get(s.step, s.wall_time), s.wall_time)
    return TrialMetrics(
        train=by_step(train_scalars),
        eval=by_step(read_scalars(model_dir / "eval")),
        train_wall=(min(walls), max(walls)) if walls else None,
        train_wall_at=wall_at,
    )


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class TrialWatch:
    """A trial's metrics read incrementally: each ``read()`` parses only what the OD API jobs
    appended since the last one. A trial polls every second for hours; re-reading every event
    file each time would cost the driver a core per trial on a 300,000-step run."""

    def __init__(self, model_dir: Path | str) -> None:
        self.model_dir = Path(model_dir)
        self._offsets: dict[Path, int] = {}
        self._train: dict[int, dict[str, float]] = {}
        self._eval: dict[int, dict[str, float]] = {}
        self._wall: tuple[float, float] | None = None

    def _update(self, sub: str, table: dict[int, dict[str, float]]) -> list[Scalar]:
        new: list[Scalar] = []
        for path in event_files(self.model_dir / sub):
            start = self._offsets.get(path, 0)
            if path.stat().st_size <= start:
                continue
            scalars, self._offsets[path] = _read_from(path, start, None)
            new.extend(scalars)
        for sc in new:
            table.setdefault(sc.step, {})[sc.tag] = sc.value
        return new

    def read(self) -> TrialMetrics:
        for sc in self._update("train", self._train):
            lo, hi = self._wall or (sc.wall_time, sc.wall_time)
            self._wall = (min(lo, sc.wall_time), max(hi, sc.wall_time))
        self._update("eval", self._eval)
        return TrialMetrics(train=dict(sorted(self._train.items())),
                            eval=dict(sorted(self._eval.items())), train_wall=self._wall)


# What a trial reports to the scheduler for each OD API tag (the runner's result keys), and
# which of them come from the train job's summaries rather than the eval job's.
RESULT_KEYS: dict[str, str] = {
    TOTAL_LOSS: "total_loss",
    CLASSIFICATION_LOSS: "classification_loss",
    LOCALIZATION_LOSS: "localization_loss",
    REGULARIZATION_LOSS: "regularization_loss",
    LEARNING_RATE: "learning_rate",
    STEPS_PER_SEC: "steps_per_sec",
    MAP: "mAP",
    MAP50: "mAP_50",
    MAP75: "mAP_75",
    AR100: "AR_100",
}
TRAIN_SOURCED = {TOTAL_LOSS, CLASSIFICATION_LOSS, LOCALIZATION_LOSS,
                 REGULARIZATION_LOSS, LEARNING_RATE, STEPS_PER_SEC}


def result_key(name: str) -> str:
    """Ray result key for an OD API tag or a short name (``mAP`` or the full tag)."""
    return RESULT_KEYS.get(name, name)
