"""`sweep data voc|csv|gtsrb`: real annotated images made here -> TFRecords, read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweep.cli import main
from sweep.core.errors import ConfigError
from sweep.data import annotations, convert
from sweep.data.dataset import decode_example
from sweep.data.label_map import read_label_map
from sweep.data.tfrecord import read_records
from tests.annotation_fixtures import Drawn, make_csv, make_gtsrb, make_voc


def _records(files: list[Path]) -> list[dict]:
    return [decode_example(r) for f in files for r in read_records(f)]


def _by_name(examples: list[dict]) -> dict[str, dict]:
    return {ex["image/filename"][0].decode(): ex for ex in examples}


def _check_boxes(ex: dict, d: Drawn, ids: dict[str, int]) -> None:
    """Every drawn box, normalized, with its class text and id, in order."""
    assert ex["image/width"] == [d.width] and ex["image/height"] == [d.height]
    want = np.array([[x0 / d.width, y0 / d.height, x1 / d.width, y1 / d.height]
                     for _, x0, y0, x1, y1 in d.boxes])
    got = np.array([ex[f"image/object/bbox/{k}"] for k in ("xmin", "ymin", "xmax", "ymax")]).T
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert [t.decode() for t in ex["image/object/class/text"]] == [b[0] for b in d.boxes]
    assert ex["image/object/class/label"] == [ids[b[0]] for b in d.boxes]


# --------------------------------------------------------------------------- the formats


def test_voc_every_box_and_label(tmp_path: Path) -> None:
    drawn = make_voc(tmp_path / "voc", 12)
    result = convert.convert(annotations.read_voc(tmp_path / "voc"), tmp_path / "out",
                             split=0.25, progress=False)
    ids = read_label_map(result.label_map)
    assert ids == {"bird": 1, "cat": 2, "dog": 3}  # sorted, from 1
    train, test = _records(result.train.files), _records(result.test.files)
    assert (len(train), len(test)) == (9, 3)
    examples = _by_name(train + test)
    assert len(examples) == 12
    for d in drawn:
        ex = examples[d.path.name]
        _check_boxes(ex, d, ids)
        assert ex["image/encoded"][0] == d.path.read_bytes()  # JPEG/PNG passed through
        assert ex["image/format"] == [d.path.suffix[1:].replace("jpg", "jpeg").encode()]
    assert result.train.passed_through + result.test.passed_through == 12
    assert len({ex["image/source_id"][0] for ex in examples.values()}) == 12


def test_csv_every_box_and_label(tmp_path: Path) -> None:
    drawn = make_csv(tmp_path / "set" / "labels.csv", 7)
    result = convert.convert(annotations.read_csv(tmp_path / "set" / "labels.csv"),
                             tmp_path / "out", split=0, progress=False)
    assert result.test is None and "evaluation needs one" in result.summary()
    ids = read_label_map(result.label_map)
    assert ids == {"cat": 1, "dog": 2}
    examples = _by_name(_records(result.train.files))
    assert len(examples) == 7
    for d in drawn:
        _check_boxes(examples[d.path.name], d, ids)


def test_gtsrb_ppm_encoded_once_boxes_and_43_classes(tmp_path: Path) -> None:
    root = tmp_path / "GTSRB" / "Final_Training" / "Images"
    drawn = make_gtsrb(root, classes=3, tracks=4, frames=3)
    result = convert.convert(annotations.read_gtsrb(tmp_path / "GTSRB"), tmp_path / "out",
                             split=0.25, progress=False)
    ids = read_label_map(result.label_map)
    assert len(ids) == 43 and ids["Speed limit (20km/h)"] == 1 and ids["Stop"] == 15
    train, test = _records(result.train.files), _records(result.test.files)
    assert result.train.encoded + result.test.encoded == len(drawn) == 36
    # A track (30 frames of one sign in GTSRB) never straddles the split.
    tracks = [{ex["image/source_id"][0].decode().rsplit("_", 1)[0] for ex in split}
              for split in (train, test)]
    assert tracks[0] and tracks[1] and not tracks[0] & tracks[1]
    examples = {ex["image/source_id"][0].decode(): ex for ex in train + test}
    import io

    from PIL import Image

    for d in drawn:
        ex = examples[f"{d.path.parent.name}/{d.path.name}"]
        name = annotations.GTSRB_CLASSES[int(d.boxes[0][0])]
        _check_boxes(ex, Drawn(d.path, d.width, d.height, ((name, *d.boxes[0][1:]),)), ids)
        assert ex["image/format"] == [b"jpeg"]
        img = Image.open(io.BytesIO(ex["image/encoded"][0]))
        assert img.format == "JPEG" and img.size == (d.width, d.height)


def test_gtsrb_single_csv_folder(tmp_path: Path) -> None:
    # Final_Test/Images: one GT-final_test.csv beside the images, names without a track.
    make_gtsrb(tmp_path / "tmp", classes=2, tracks=1, frames=2)
    test_dir = tmp_path / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, gt in enumerate(sorted((tmp_path / "tmp").rglob("GT-*.csv"))):
        for line in gt.read_text().splitlines()[1:]:
            name = line.split(";")[0]
            new = f"{i:05d}{name[-8:]}"
            (gt.parent / name).rename(test_dir / new)
            rows.append(";".join([new, *line.split(";")[1:]]))
    (test_dir / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    unlabelled = test_dir / "GT-final_test.test.csv"  # shipped with the images: no ClassId
    unlabelled.write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2\n")
    found = annotations.read_gtsrb(test_dir)
    assert len(found.samples) == 4 and not found.bad
    (test_dir / "GT-final_test.csv").unlink()
    with pytest.raises(ConfigError, match="has no ClassId.*GTSRB_Final_Test_GT.zip"):
        annotations.read_gtsrb(test_dir)
    assert {s.source_id for s in found.samples} == {f"Images/{r.split(';')[0]}"
                                                    for r in rows[1:]}


def test_test_set_given_separately(tmp_path: Path) -> None:
    make_voc(tmp_path / "train", 4, seed=1)
    make_voc(tmp_path / "test", 2, seed=2)
    result = convert.convert(annotations.read_voc(tmp_path / "train"), tmp_path / "out",
                             test=annotations.read_voc(tmp_path / "test"), progress=False)
    assert (result.train.examples, result.test.examples) == (4, 2)


def test_shards_hold_every_example_once(tmp_path: Path) -> None:
    make_voc(tmp_path / "voc", 20)
    result = convert.convert(annotations.read_voc(tmp_path / "voc"), tmp_path / "out",
                             split=0.2, shards=4, progress=False)
    assert [f.name for f in result.train.files] == [
        f"train.record-{i:05d}-of-00004" for i in range(4)]
    assert result.train.pattern.endswith("train.record-?????-of-00004")
    assert [f.name for f in result.test.files] == ["test.record"]  # 4 images: one shard
    names = [ex["image/filename"][0] for ex in _records(result.train.files + result.test.files)]
    assert len(names) == len(set(names)) == 20
    assert all(f.stat().st_size > 0 for f in result.train.files)


def test_deterministic_given_seed(tmp_path: Path) -> None:
    make_voc(tmp_path / "voc", 15)

    def run(seed: int, out: str) -> bytes:
        r = convert.convert(annotations.read_voc(tmp_path / "voc"), tmp_path / out,
                            seed=seed, split=0.2, progress=False)
        return r.train.files[0].read_bytes() + r.test.files[0].read_bytes()

    assert run(3, "a") == run(3, "b")
    assert run(3, "a2") != run(4, "c")


def test_split_by_group() -> None:
    samples = [annotations.Sample(Path(f"{i}.jpg"), f"{i}.jpg", "x", None, None, (),
                                  group=str(i // 5)) for i in range(50)]
    train, test = convert.split_samples(samples, 0.2, seed=0)
    assert len(test) == 10 and len(train) == 40
    assert not {s.group for s in train} & {s.group for s in test}
    with pytest.raises(ValueError, match="0 <= split < 1"):
        convert.split_samples(samples, 1.5, seed=0)


# --------------------------------------------------------------------------- never clobber


def test_existing_outputs_need_overwrite(tmp_path: Path) -> None:
    make_voc(tmp_path / "voc", 6)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.record-00000-of-00002").write_bytes(b"old")
    (out / "label_map.pbtxt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists.*--overwrite"):
        convert.convert(annotations.read_voc(tmp_path / "voc"), out, progress=False)
    assert (out / "label_map.pbtxt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["label_map.pbtxt",
                                                     "train.record-00000-of-00002"]
    convert.convert(annotations.read_voc(tmp_path / "voc"), out, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["label_map.pbtxt", "test.record",
                                                     "train.record"]  # stale shard gone


# --------------------------------------------------------------------------- bad input


def _xml(folder: Path, i: int = 0) -> Path:
    return folder / f"img_{i:04d}.xml"


def test_bad_boxes_named_by_file_and_line(tmp_path: Path) -> None:
    make_voc(tmp_path / "voc", 4)
    x0 = _xml(tmp_path / "voc", 0)
    x0.write_text(x0.read_text().replace("<xmax>", "<xmax>-", 1))  # inverted
    x2 = _xml(tmp_path / "voc", 2)
    x2.write_text(x2.read_text().replace("<ymax>", "<ymax>9", 1))  # outside the image
    found = annotations.read_voc(tmp_path / "voc")
    assert [b.where for b in found.bad] == [f"{x0}:12", f"{x2}:12"]  # the <object> lines
    assert "inverted" in found.bad[0].problem and "outside the 96x64" in found.bad[1].problem
    with pytest.raises(ConfigError) as e:
        convert.convert(found, tmp_path / "out", progress=False)
    assert f"{x0}:12" in str(e.value) and "--skip-bad" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_many_bad_examples_list_the_first_twenty_and_count(tmp_path: Path) -> None:
    make_voc(tmp_path / "voc", 2)
    for i in range(25):
        (tmp_path / "voc" / f"broken_{i:02d}.xml").write_text("<annotation>\n<size>")
    with pytest.raises(ConfigError) as e:
        convert.convert(annotations.read_voc(tmp_path / "voc"), tmp_path / "out",
                        progress=False)
    assert len(e.value.problems) == 21
    assert "25 bad example(s) (the first 20 above); nothing was written" in str(e.value)


def test_skip_bad_reports_how_many_and_which(tmp_path: Path) -> None:
    make_voc(tmp_path / "voc", 6)
    _xml(tmp_path / "voc", 1).write_text("<annotation><filename>x</filename>\n<size>")
    (tmp_path / "voc" / "img_0002.jpg").write_bytes(
        (tmp_path / "voc" / "img_0002.jpg").read_bytes()[:300])  # truncated JPEG
    result = convert.convert(annotations.read_voc(tmp_path / "voc"), tmp_path / "out",
                             skip_bad=True, split=0, progress=False)
    assert result.train.examples == 4
    assert len(result.skipped) == 2
    listed = result.skipped_file.read_text()
    assert f"{_xml(tmp_path / 'voc', 1)}:2: malformed XML" in listed
    assert "img_0002.jpg' is unreadable" in listed
    assert "skipped 2 bad example(s)" in result.summary()


def test_corrupt_image_stops_without_writing(tmp_path: Path) -> None:
    make_voc(tmp_path / "voc", 6)
    (tmp_path / "voc" / "img_0002.jpg").write_bytes(b"\xff\xd8not a jpeg")
    with pytest.raises(ConfigError, match=r"img_0002.xml:3: image .* is unreadable"):
        convert.convert(annotations.read_voc(tmp_path / "voc"), tmp_path / "out",
                        progress=False)
    assert not list((tmp_path / "out").iterdir())  # no records, no temp files


def test_unknown_class_against_imposed_label_map(tmp_path: Path) -> None:
    make_csv(tmp_path / "set" / "labels.csv", 4)
    lm = tmp_path / "lm.pbtxt"
    lm.write_text('item { id: 1 name: "cat" }\n')
    with pytest.raises(ConfigError, match=r"labels.csv:\d+: unknown class 'dog'"):
        convert.convert(annotations.read_csv(tmp_path / "set" / "labels.csv"), tmp_path / "o",
                        label_map=lm, progress=False)


def test_malformed_csv_lines_and_missing_images(tmp_path: Path) -> None:
    csv_path = tmp_path / "set" / "labels.csv"
    make_csv(csv_path, 4)
    lines = csv_path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]  # a field short
    lines.append("gone.jpg,80,60,cat,1,1,5,5")
    lines.append(lines[1].replace(",1", ",x", 1) if ",1" in lines[1] else lines[1] + ",zz")
    csv_path.write_text("\n".join(lines) + "\n")
    found = annotations.read_csv(csv_path)
    wheres = {b.where for b in found.bad}
    assert f"{csv_path}:3" in wheres and f"{csv_path}:{len(lines) - 1}" in wheres
    assert any("gone.jpg' not found" in b.problem for b in found.bad)


def test_csv_that_is_not_text(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_bytes(b"filename,width,height,class,xmin,ymin,xmax,ymax\n\xff\xfe\x00bad\n")
    with pytest.raises(ConfigError, match=r"a.csv: is not UTF-8 text"):
        annotations.read_csv(p)


def test_csv_header_must_name_the_columns(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("file,w,h\nx.jpg,1,2\n")
    with pytest.raises(ConfigError, match=r"a.csv:1: header: missing column"):
        annotations.read_csv(p)


# --------------------------------------------------------------------------- the command


def test_cli_data_voc(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_voc(tmp_path / "voc", 10)
    out = tmp_path / "annotations"
    assert main(["data", "voc", str(tmp_path / "voc"), "--out", str(out), "--shards", "2"]) == 0
    assert "9 images" in capsys.readouterr().out
    assert main(["data", "voc", str(tmp_path / "voc"), "--out", str(out)]) == 2
    assert "nothing was written" in capsys.readouterr().err


# --------------------------------------------------------------------------- the OD API's view


@pytest.mark.slow
def test_od_api_decoder_reads_every_format(tmp_path: Path) -> None:
    """The OD API's own TfExampleDecoder (with the label map, as training uses it) decodes
    every image to its size and every box and class id that was annotated."""
    from sweep.odapi.compat import patch

    patch()
    import tensorflow as tf
    from object_detection.core import standard_fields as fields
    from object_detection.data_decoders.tf_example_decoder import TfExampleDecoder

    gtsrb = make_gtsrb(tmp_path / "g" / "Images", classes=2, tracks=2, frames=2)
    gtsrb = [Drawn(d.path, d.width, d.height,
                   ((annotations.GTSRB_CLASSES[int(d.boxes[0][0])], *d.boxes[0][1:]),))
             for d in gtsrb]
    cases = [
        (make_voc(tmp_path / "voc", 6), annotations.read_voc(tmp_path / "voc"), lambda d: d.path.name),
        (make_csv(tmp_path / "c" / "l.csv", 4), annotations.read_csv(tmp_path / "c" / "l.csv"),
         lambda d: d.path.name),
        (gtsrb, annotations.read_gtsrb(tmp_path / "g"),
         lambda d: f"{d.path.parent.name}/{d.path.name}"),
    ]
    for i, (drawn, found, key) in enumerate(cases):
        result = convert.convert(found, tmp_path / f"out{i}", split=0.3, shards=2,
                                 progress=False)
        ids = read_label_map(result.label_map)
        decoder = TfExampleDecoder(label_map_proto_file=str(result.label_map))
        files = [str(f) for f in result.train.files + result.test.files]
        decoded = [decoder.decode(r) for r in tf.data.TFRecordDataset(files)]
        by_key = {got[fields.InputDataFields.source_id].numpy().decode(): got
                  for got in decoded}
        assert len(by_key) == len(drawn)
        for d in drawn:
            got = by_key[key(d)]
            assert got[fields.InputDataFields.image].shape == (d.height, d.width, 3)
            want = np.array([[y0 / d.height, x0 / d.width, y1 / d.height, x1 / d.width]
                             for _, x0, y0, x1, y1 in d.boxes])
            np.testing.assert_allclose(got[fields.InputDataFields.groundtruth_boxes].numpy(),
                                       want, rtol=1e-6)
            np.testing.assert_array_equal(
                got[fields.InputDataFields.groundtruth_classes].numpy(),
                [ids[b[0]] for b in d.boxes])


@pytest.mark.slow
@pytest.mark.tf
def test_converted_data_feeds_the_od_api_train_and_eval_inputs(tmp_path: Path) -> None:
    """labelImg VOC -> `sweep data voc` -> `sweep init` -> `sweep validate`, all through the
    command line; then the OD API's own input pipelines for training and evaluation
    (`object_detection.inputs`, what model_main_tf2.py's train and eval jobs read through) take
    their batches from the converted records with the pipeline.config `init` wrote: images at
    the model's input size, every box in range, classes within the label map. Training itself
    on records the same writer frames is the real e2e sweep's (tests/test_e2e.py); building it
    again here would cost two TensorFlow jobs (~2 min) to learn nothing more about the data."""
    import numpy as np

    from sweep.data.label_map import read_label_map
    from sweep.odapi import compat
    from tests.conftest import run_cli

    make_voc(tmp_path / "labelled", 16, size=(160, 120))
    ws = tmp_path / "workspace" / "training_demo"

    def cli(*args: str) -> str:
        proc = run_cli(list(args), tmp_path, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    cli("data", "voc", str(tmp_path / "labelled"), "--out", str(ws / "annotations"),
        "--split", "0.25", "--shards", "2")
    cli("init", "--pretrained", "tiny_ssd_mobilenet_v2", "--annotations",
        str(ws / "annotations"), "--name", "tiny", "--batch-size", "2")
    pipeline = ws / "models" / "tiny" / "pipeline.config"
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  num_steps: 6\n  momentum: {uniform: [0.8, 0.95]}\n"
                     "  cosine_decay_learning_rate.warmup_steps: 0\n")  # the template's is 20
    assert "ok:" in cli("validate", str(space), str(pipeline))

    compat.patch()
    import tensorflow as tf
    from object_detection import inputs
    from object_detection.builders import model_builder
    from object_detection.core import standard_fields as fields
    from object_detection.utils import config_util

    configs = config_util.get_configs_from_pipeline_file(str(pipeline))
    classes = len(read_label_map(ws / "annotations" / "label_map.pbtxt"))
    assert configs["model"].ssd.num_classes == classes == 3
    model = model_builder.build(configs["model"], is_training=True)
    train = inputs.train_input(configs["train_config"], configs["train_input_config"],
                               configs["model"], model=model)
    features, labels = next(iter(train))
    images = features[fields.InputDataFields.image].numpy()
    assert images.shape[0] == 2 and images.shape[-1] == 3 and np.isfinite(images).all()
    boxes = labels[fields.InputDataFields.groundtruth_boxes].numpy()
    real = labels[fields.InputDataFields.num_groundtruth_boxes].numpy()
    onehot = labels[fields.InputDataFields.groundtruth_classes].numpy()
    assert (real >= 1).all() and onehot.shape[-1] == classes
    for b, n in enumerate(real):
        assert ((boxes[b, :n] >= 0) & (boxes[b, :n] <= 1)).all()
        assert (boxes[b, :n, 2] > boxes[b, :n, 0]).all()  # ymax > ymin after any flip
        assert (onehot[b, :n].sum(axis=-1) == 1).all()
    evaluation = inputs.eval_input(configs["eval_config"], configs["eval_input_configs"][0],
                                   configs["model"], model=model)
    seen = sum(1 for _ in evaluation.take(64))
    assert seen == 4  # the 25% split of 16 images: every eval image, once
    tf.keras.backend.clear_session()
