"""TensorBoard HParams for a sweep, written without TensorFlow.

``tensorboard --logdir experiments/<exp>`` then shows, next to each trial's OD API curves
(runs ``trials/<id>/train`` and ``trials/<id>/eval``), the HParams dashboard: one session per
trial (run ``trials/<id>``) with its sampled parameters and its metrics.

    experiments/<exp>/events.out.tfevents.*.sweep-hparams        the experiment: parameter
                                                                 domains + metric names
    experiments/<exp>/trials/<id>/events.out.tfevents.*.sweep-hparams
                                                                 session start (parameters),
                                                                 metric scalars, session end

The records are the HParams plugin's own protos (``plugin_data_pb2``/``api_pb2``) in event
files written with TensorBoard's pure-Python ``RecordWriter``. TensorFlow is never imported:
``tensorboard.plugins.hparams.summary``/``summary_v2`` import it, and so does ``EventFileWriter``
(through ``tensorboard.compat.tf``, ~20 s and hundreds of MB in each Ray actor).
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

if TYPE_CHECKING:
    from sweep.search.space import SearchSpace

SUFFIX = ".sweep-hparams"
# Result keys (sweep.odapi.metrics.RESULT_KEYS values) shown as HParams metrics, in this order.
METRICS: tuple[tuple[str, str], ...] = (
    ("mAP", "mAP (COCO @[.5:.95])"),
    ("mAP_50", "mAP@.50IOU"),
    ("AR_100", "AR@100"),
    ("total_loss", "total loss"),
    ("classification_loss", "classification loss"),
    ("localization_loss", "localization loss"),
)
_STATUS = {
    "COMPLETED": api_pb2.STATUS_SUCCESS,
    "STOPPED": api_pb2.STATUS_SUCCESS,  # stopped early by the scheduler: a valid result
    "FAILED": api_pb2.STATUS_FAILURE,
    "RUNNING": api_pb2.STATUS_RUNNING,
    "INTERRUPTED": api_pb2.STATUS_RUNNING,  # unfinished: `sweep resume` continues it
}


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)])


_SEQ = itertools.count()


def _write(logdir: Path, summaries: Iterable[tuple[int, summary_pb2.Summary]]) -> Path:
    """A new event file in ``logdir`` (TensorBoard reads every file of a run, in name order)."""
    logdir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path = logdir / (f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}."
                     f"{os.getpid()}.{next(_SEQ)}{SUFFIX}")
    tmp = logdir / f".sweep-hparams.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        writer = RecordWriter(f)
        writer.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2")
                     .SerializeToString())
        for step, summary in summaries:
            writer.write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
                         .SerializeToString())
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def _value(v: Any) -> Any:
    """A protobuf ``Value`` for a parameter: numbers as numbers, everything else as text."""
    from google.protobuf import struct_pb2

    if isinstance(v, bool):
        return struct_pb2.Value(bool_value=v)
    if isinstance(v, int | float):
        return struct_pb2.Value(number_value=float(v))
    return struct_pb2.Value(string_value=str(v))


def hparam_infos(space: SearchSpace) -> list[api_pb2.HParamInfo]:
    """One HParamInfo per searched parameter, with its domain where the space fixes one."""
    from sweep.search import space as sp

    out = []
    seen: set[str] = set()
    for param, _cond in space.walk():
        if not param.sampled or param.name in seen:
            continue
        seen.add(param.name)
        info = api_pb2.HParamInfo(name=param.name, display_name=param.name.split(".")[-1])
        d = param.dist
        if isinstance(d, sp.Categorical | sp.Choice):
            values = list(d.choices)
            kinds = {type(v) for v in values}
            if kinds <= {bool}:
                info.type = api_pb2.DATA_TYPE_BOOL
            elif kinds <= {int, float}:
                info.type = api_pb2.DATA_TYPE_FLOAT64
            else:
                info.type = api_pb2.DATA_TYPE_STRING
                values = [str(v) for v in values]
            info.domain_discrete.extend(values)
        else:
            info.type = api_pb2.DATA_TYPE_FLOAT64
            low, high = getattr(d, "low", None), getattr(d, "high", None)
            # A bound named after another parameter varies per trial: leave the domain open.
            if isinstance(low, int | float) and isinstance(high, int | float):
                info.domain_interval.min_value = float(low)
                info.domain_interval.max_value = float(high)
        out.append(info)
    return out


def write_experiment(root: Path, space: SearchSpace, *, description: str = "",
                     metrics: Iterable[tuple[str, str]] = METRICS) -> None:
    """The experiment record in the experiment folder (rewritten on resume: same content)."""
    for old in root.glob(f"events.out.tfevents.*{SUFFIX}"):
        old.unlink()  # TensorBoard would otherwise see two experiment records
    exp = api_pb2.Experiment(
        description=description or space.description,
        time_created_secs=time.time(),
        hparam_infos=hparam_infos(space),
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=name)
                      for tag, name in metrics],
    )
    _write(root, [(0, _summary(metadata.EXPERIMENT_TAG,
                               plugin_data_pb2.HParamsPluginData(experiment=exp)))])


def write_session_start(trial_dir: Path, params: Mapping[str, Any], *,
                        group_name: str | None = None) -> bool:
    """The trial's session (its parameters); written once, False if it already was."""
    marker = trial_dir / ".hparams-session"
    if marker.exists():
        return False
    start = plugin_data_pb2.SessionStartInfo(
        group_name=group_name or trial_dir.name, start_time_secs=time.time(),
        model_uri=str(trial_dir))
    for k, v in params.items():
        start.hparams[k].CopyFrom(_value(v))
    _write(trial_dir, [(0, _summary(metadata.SESSION_START_INFO_TAG,
                                    plugin_data_pb2.HParamsPluginData(session_start_info=start)))])
    marker.write_text(f"{time.time()}\n")
    return True


def write_metrics(trial_dir: Path, result: Mapping[str, Any]) -> None:
    """The result's metrics as scalars of the trial's session run (at the result's step)."""
    step = int(result.get("step", 0) or 0)
    values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(result[tag]))
              for tag, _ in METRICS
              if isinstance(result.get(tag), int | float) and math.isfinite(float(result[tag]))]
    if values:
        _write(trial_dir, [(step, summary_pb2.Summary(value=values))])


def write_session_end(trial_dir: Path, state: str) -> None:
    """The trial's end: success (completed or stopped early), failure, or still running."""
    end = plugin_data_pb2.SessionEndInfo(status=_STATUS.get(state, api_pb2.STATUS_UNKNOWN),
                                         end_time_secs=time.time())
    _write(trial_dir, [(0, _summary(metadata.SESSION_END_INFO_TAG,
                                    plugin_data_pb2.HParamsPluginData(session_end_info=end)))])
