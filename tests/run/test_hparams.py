"""TensorBoard HParams records (sweep.run.hparams): read back as protos, and served by TensorBoard."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import api_pb2, metadata

from sweep.data.tfrecord import read_records
from sweep.run import hparams
from sweep.search.space import load_space

SPACE = """\
parameters:
  num_steps: 40
  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}
  batch_size: {categorical: [2, 4]}
  optimizer:
    choice:
      momentum:
        momentum.learning_rate: {uniform: [0.001, 0.1]}
      adam:
        adam.learning_rate: {loguniform: [1.0e-5, 1.0e-3]}
"""


def _events(d: Path) -> list[event_pb2.Event]:
    out = []
    for f in sorted(d.glob(f"events.out.tfevents.*{hparams.SUFFIX}")):
        for payload in read_records(f, verify="none", torn_tail_ok=True):
            e = event_pb2.Event()
            e.ParseFromString(payload)
            if e.HasField("summary"):
                out.append(e)
    return out


def _plugin(e: event_pb2.Event, tag: str):  # noqa: ANN202 - a HParamsPluginData
    v = e.summary.value[0]
    assert v.tag == tag and v.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData()
    data.ParseFromString(v.metadata.plugin_data.content)
    return data


def _synthetic(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    space_file = root / "space.yaml"
    space_file.write_text(SPACE)
    hparams.write_experiment(root, load_space(space_file), description="unit")
    t1, t2 = root / "trials" / "aaa", root / "trials" / "bbb"
    assert hparams.write_session_start(t1, {"l2_weight": 1e-4, "batch_size": 4,
                                            "optimizer": "momentum", "momentum.learning_rate": 0.01})
    assert not hparams.write_session_start(t1, {"l2_weight": 9.0})  # once per trial
    hparams.write_metrics(t1, {"step": 20, "mAP": 0.1, "total_loss": 2.0, "trial_dir": "x"})
    hparams.write_metrics(t1, {"step": 40, "mAP": 0.25, "total_loss": 1.5,
                               "mAP_50": float("nan")})
    hparams.write_session_end(t1, "COMPLETED")
    hparams.write_session_start(t2, {"l2_weight": 1e-3, "batch_size": 2, "optimizer": "adam",
                                     "adam.learning_rate": 1e-4})
    hparams.write_session_end(t2, "FAILED")
    return root


def test_records_read_back_as_hparams_protos(tmp_path: Path) -> None:
    root = _synthetic(tmp_path)
    (exp_event,) = _events(root)
    exp = _plugin(exp_event, metadata.EXPERIMENT_TAG).experiment
    infos = {i.name: i for i in exp.hparam_infos}
    assert list(infos) == ["l2_weight", "batch_size", "optimizer", "momentum.learning_rate",
                           "adam.learning_rate"]
    assert infos["l2_weight"].type == api_pb2.DATA_TYPE_FLOAT64
    assert (infos["l2_weight"].domain_interval.min_value,
            infos["l2_weight"].domain_interval.max_value) == (1e-5, 1e-2)
    assert list(infos["optimizer"].domain_discrete.values) and \
        [v.string_value for v in infos["optimizer"].domain_discrete.values] == ["momentum", "adam"]
    assert [v.number_value for v in infos["batch_size"].domain_discrete.values] == [2, 4]
    assert [m.name.tag for m in exp.metric_infos][:2] == ["mAP", "mAP_50"]

    start, m20, m40, end = _events(root / "trials" / "aaa")
    s = _plugin(start, metadata.SESSION_START_INFO_TAG).session_start_info
    assert s.group_name == "aaa"
    assert s.hparams["l2_weight"].number_value == pytest.approx(1e-4)
    assert s.hparams["optimizer"].string_value == "momentum"
    assert (m20.step, m40.step) == (20, 40)
    assert {v.tag: v.simple_value for v in m40.summary.value} == pytest.approx(
        {"mAP": 0.25, "total_loss": 1.5})  # NaN and non-metrics are left out
    assert _plugin(end, metadata.SESSION_END_INFO_TAG).session_end_info.status == \
        api_pb2.STATUS_SUCCESS
    *_, end2 = _events(root / "trials" / "bbb")
    assert _plugin(end2, metadata.SESSION_END_INFO_TAG).session_end_info.status == \
        api_pb2.STATUS_FAILURE


def test_experiment_record_is_replaced_not_duplicated(tmp_path: Path) -> None:
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    for _ in range(2):
        hparams.write_experiment(tmp_path, load_space(space_file))
    assert len(_events(tmp_path)) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "X-TensorBoard-Feature-Flags": "{}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pkg_resources") is None,
                    reason="tensorboard 2.15 imports pkg_resources, gone in setuptools >= 81: "
                           "the environment needs setuptools<81")
def test_tensorboard_serves_the_sessions(tmp_path: Path) -> None:
    """A real `tensorboard --logdir <experiment>` lists both trials with their parameters."""
    root = _synthetic(tmp_path / "exp")
    port = _free_port()
    tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(root),
                           "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false",
                           "--reload_interval", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/data/plugin/hparams"
    try:
        exp = None
        deadline = time.time() + 300  # TensorBoard imports TensorFlow: slow on 2 cores
        while time.time() < deadline:
            try:
                exp = _post(f"{base}/experiment", {"experimentName": ""})
                if exp.get("hparamInfos"):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert exp and {h["name"] for h in exp["hparamInfos"]} >= {"l2_weight", "optimizer"}
        groups: dict = {}
        while time.time() < deadline:
            groups = _post(f"{base}/session_groups", {
                "startIndex": 0, "sliceSize": 100, "allowedStatuses": [
                    "STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                "colParams": [{"hparam": "l2_weight"}, {"metric": {"tag": "mAP", "group": ""}}]})
            if len(groups.get("sessionGroups", [])) == 2:
                break
            time.sleep(1)
        by_name = {g["name"]: g for g in groups["sessionGroups"]}
        assert set(by_name) == {"aaa", "bbb"}, groups
        assert by_name["aaa"]["hparams"]["optimizer"] == "momentum"
        mvals = {m["name"]["tag"]: m["value"] for m in by_name["aaa"]["metricValues"]}
        assert mvals["mAP"] == pytest.approx(0.25)
    finally:
        tb.terminate()
        tb.wait(timeout=20)
