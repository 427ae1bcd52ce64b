"""The synthetic demo dataset: record framing, Example contents, determinism, no clobbering."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from object_detection.protos import string_int_label_map_pb2
from PIL import Image

from sweep.core.errors import ConfigError
from sweep.data.dataset import (
    CLASS_NAMES,
    DatasetInfo,
    decode_example,
    iter_records,
    make_dataset,
)

SMALL = dict(n_train=12, n_eval=4, image_size=64)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> DatasetInfo:
    root = tmp_path_factory.mktemp("ds")
    return make_dataset(root / "annotations", images_dir=root / "images", **SMALL)


def _examples(path: Path) -> list[dict]:
    return [decode_example(r) for r in iter_records(path)]


def _label_map(path: Path) -> dict[int, str]:
    label_map = string_int_label_map_pb2.StringIntLabelMap()
    text_format.Parse(path.read_text(), label_map)
    return {item.id: item.name for item in label_map.item}


# --------------------------------------------------------------------------- framing


def test_tensorboard_reader_accepts_our_records(small: DatasetInfo) -> None:
    # An independent TFRecord reader (TensorBoard's event-file one) reads the same payloads.
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    reader = PyRecordReader_New(str(small.eval_record))
    payloads = []
    while True:
        try:
            reader.GetNext()
        except Exception:  # OutOfRangeError at the end
            break
        payloads.append(reader.record())
    assert payloads == list(iter_records(small.eval_record))


# --------------------------------------------------------------------------- contents


def test_counts_paths_and_label_map(small: DatasetInfo) -> None:
    assert len(_examples(small.train_record)) == small.n_train == SMALL["n_train"]
    assert len(_examples(small.eval_record)) == small.n_eval == SMALL["n_eval"]
    assert small.train_record.name == "train.record"
    assert small.eval_record.name == "test.record"
    assert small.label_map_path.name == "label_map.pbtxt"
    assert small.num_classes == len(CLASS_NAMES) == 4
    assert _label_map(small.label_map_path) == {i + 1: n for i, n in enumerate(small.class_names)}


@pytest.mark.parametrize("split", ["train", "eval"])
def test_examples_follow_the_od_api_format(small: DatasetInfo, split: str) -> None:
    record = small.train_record if split == "train" else small.eval_record
    id_to_name = _label_map(small.label_map_path)
    source_ids = set()
    for ex in _examples(record):
        size = small.image_size
        assert ex["image/format"] == [b"jpeg"]
        assert ex["image/height"] == ex["image/width"] == [size]
        image = Image.open(io.BytesIO(ex["image/encoded"][0]))
        assert image.format == "JPEG" and image.size == (size, size)
        assert ex["image/source_id"] == ex["image/filename"]
        source_ids.add(ex["image/source_id"][0])

        labels, texts = ex["image/object/class/label"], ex["image/object/class/text"]
        assert 1 <= len(labels) <= 3
        assert [id_to_name[label].encode() for label in labels] == texts
        keys = ("xmin", "ymin", "xmax", "ymax")
        boxes = list(zip(*(ex[f"image/object/bbox/{k}"] for k in keys), strict=True))
        assert len(boxes) == len(labels)
        for xmin, ymin, xmax, ymax in boxes:
            assert 0.0 <= xmin < xmax <= 1.0 and 0.0 <= ymin < ymax <= 1.0
    assert len(source_ids) == len(_examples(record))  # COCO eval keys images by source_id


def test_boxes_enclose_the_signs(small: DatasetInfo) -> None:
    # Each box holds sign colours (red or blue) reaching near all four of its edges: the boxes
    # are where the signs were drawn, and tight.
    for ex in _examples(small.train_record):
        rgb = np.asarray(Image.open(io.BytesIO(ex["image/encoded"][0])).convert("RGB"), int)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        sign = ((r > 120) & (g < 90) & (b < 90)) | ((b > 110) & (r < 80) & (g < 110))
        size = small.image_size
        for x0, y0, x1, y1 in zip(ex["image/object/bbox/xmin"], ex["image/object/bbox/ymin"],
                                  ex["image/object/bbox/xmax"], ex["image/object/bbox/ymax"],
                                  strict=True):
            region = sign[round(y0 * size):round(y1 * size), round(x0 * size):round(x1 * size)]
            assert region.mean() > 0.15
            rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
            assert rows[-1] - rows[0] + 1 >= 0.8 * region.shape[0]
            assert cols[-1] - cols[0] + 1 >= 0.8 * region.shape[1]


def test_all_classes_appear(small: DatasetInfo) -> None:
    seen = {label for ex in _examples(small.train_record)
            for label in ex["image/object/class/label"]}
    assert seen == set(range(1, len(CLASS_NAMES) + 1))


def test_images_dir_holds_the_same_jpegs(small: DatasetInfo) -> None:
    assert small.images_dir is not None
    for split, record in (("train", small.train_record), ("test", small.eval_record)):
        files = sorted((small.images_dir / split).glob("*.jpg"))
        examples = _examples(record)
        assert [f.name.encode() for f in files] == [ex["image/filename"][0] for ex in examples]
        assert [f.read_bytes() for f in files] == [ex["image/encoded"][0] for ex in examples]


def test_images_dir_is_off_by_default(tmp_path: Path) -> None:
    info = make_dataset(tmp_path / "annotations", n_train=1, n_eval=1, image_size=32)
    assert info.images_dir is None
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        ["label_map.pbtxt", "train.record", "test.record"]
    )


# --------------------------------------------------------------------------- determinism


def test_deterministic_given_seed(small: DatasetInfo, tmp_path: Path) -> None:
    again = make_dataset(tmp_path / "same", **SMALL)
    other = make_dataset(tmp_path / "other", seed=1, **SMALL)
    assert again.train_record.read_bytes() == small.train_record.read_bytes()
    assert again.eval_record.read_bytes() == small.eval_record.read_bytes()
    assert other.train_record.read_bytes() != small.train_record.read_bytes()


def test_eval_split_does_not_depend_on_train_size(small: DatasetInfo, tmp_path: Path) -> None:
    bigger = make_dataset(tmp_path / "a", **{**SMALL, "n_train": SMALL["n_train"] + 5})
    assert bigger.eval_record.read_bytes() == small.eval_record.read_bytes()


# --------------------------------------------------------------------------- no clobbering


def test_second_run_reuses_identical_files(tmp_path: Path) -> None:
    first = make_dataset(tmp_path, **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    second = make_dataset(tmp_path, **SMALL)
    assert not first.reused and second.reused
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps


def test_existing_different_files_are_not_clobbered(tmp_path: Path) -> None:
    mine = "item { id: 1 name: 'cat' }\n"
    (tmp_path / "label_map.pbtxt").write_text(mine)
    with pytest.raises(ConfigError, match=r"label_map\.pbtxt: exists and differs.*--force"):
        make_dataset(tmp_path, **SMALL)
    assert (tmp_path / "label_map.pbtxt").read_text() == mine
    assert not (tmp_path / "train.record").exists()  # nothing written on error

    info = make_dataset(tmp_path, overwrite=True, **SMALL)
    assert _label_map(info.label_map_path)[1] == CLASS_NAMES[0]


def test_other_settings_name_only_the_files_that_differ(tmp_path: Path) -> None:
    make_dataset(tmp_path, **SMALL)
    with pytest.raises(ConfigError) as err:
        make_dataset(tmp_path, **{**SMALL, "n_train": SMALL["n_train"] + 1})
    assert [Path(p.file).name for p in err.value.problems] == ["train.record"]
    assert "n_train=13" in str(err.value)


def test_missing_files_are_filled_in(tmp_path: Path) -> None:
    info = make_dataset(tmp_path, **SMALL)
    expected = info.eval_record.read_bytes()
    info.eval_record.unlink()
    again = make_dataset(tmp_path, **SMALL)
    assert not again.reused and again.eval_record.read_bytes() == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_train": 0}, r"`n_train >= 1` must hold, but got n_train=0"),
     ({"n_eval": -1}, r"`n_eval >= 1`.*n_eval=-1"),
     ({"image_size": 16}, r"`image_size >= 32`.*image_size=16")],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_dataset(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- the OD API's view


@pytest.mark.slow
def test_od_api_decoder_reads_what_was_written(tmp_path: Path) -> None:
    from sweep.odapi.compat import patch

    patch()
    import tensorflow as tf
    from object_detection.core import standard_fields as fields
    from object_detection.data_decoders.tf_example_decoder import TfExampleDecoder

    info = make_dataset(tmp_path, n_train=8, n_eval=2)
    written = _examples(info.train_record)
    # Without a label map the decoder reads class/label; with one it maps class/text to ids.
    for decoder in (TfExampleDecoder(),
                    TfExampleDecoder(label_map_proto_file=str(info.label_map_path))):
        decoded = [decoder.decode(r) for r in tf.data.TFRecordDataset(str(info.train_record))]
        assert len(decoded) == len(written) == info.n_train
        for got, ex in zip(decoded, written, strict=True):
            assert got[fields.InputDataFields.image].shape == (info.image_size,) * 2 + (3,)
            assert got[fields.InputDataFields.source_id].numpy() == ex["image/source_id"][0]
            want_boxes = np.array([ex[f"image/object/bbox/{k}"]
                                   for k in ("ymin", "xmin", "ymax", "xmax")]).T
            np.testing.assert_allclose(
                got[fields.InputDataFields.groundtruth_boxes].numpy(), want_boxes, rtol=1e-6)
            np.testing.assert_array_equal(
                got[fields.InputDataFields.groundtruth_classes].numpy(),
                ex["image/object/class/label"])


def _box_sides(info: DatasetInfo) -> tuple[list[int], list[float]]:
    """Signs per image, and each box's longer side as a fraction of the image."""
    counts, sides = [], []
    for ex in _examples(info.train_record):
        counts.append(len(ex["image/object/class/label"]))
        sides += [max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in zip(
            ex["image/object/bbox/xmin"], ex["image/object/bbox/ymin"],
            ex["image/object/bbox/xmax"], ex["image/object/bbox/ymax"], strict=True)]
    return counts, sides


def test_the_scene_sets_how_many_signs_and_how_large(tmp_path: Path) -> None:
    """The demo's default scene (one or two large signs, learnable in minutes) and a harder
    one (more, smaller signs) give what they say."""
    from sweep.data.dataset import Scene

    easy = make_dataset(tmp_path / "easy", n_train=40, n_eval=1, image_size=128)
    counts, sides = _box_sides(easy)
    assert set(counts) == {1, 2}
    assert min(sides) >= 0.3 - 1 / 128 and max(sides) <= 0.6 + 1 / 128

    hard = make_dataset(tmp_path / "hard", n_train=40, n_eval=1, image_size=128,
                        scene=Scene(signs=(3, 3), sign_size=(0.1, 0.2), clutter=(5, 8)))
    counts, sides = _box_sides(hard)
    assert max(counts) == 3 and sum(counts) > 2 * len(counts)
    assert max(sides) <= 0.2 + 1 / 128


def test_example_classes_build_without_a_protobuf_warning() -> None:
    """protobuf 4 deprecates MessageFactory.GetPrototype with a UserWarning that every demo
    printed; the classes are built the current way and still round-trip an example."""
    import warnings

    from sweep.data import dataset

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        example_cls, feature_cls = dataset._example_classes()
    ex = example_cls()
    ex.features.feature["image/height"].int64_list.value.append(64)
    back = example_cls.FromString(ex.SerializeToString())
    assert back.features.feature["image/height"].int64_list.value == [64]
    assert feature_cls.DESCRIPTOR.full_name == "sweep_example.Feature"
