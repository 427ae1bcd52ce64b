"""Render a trial's pipeline.config: the base config plus one trial's parameters.

Every edit goes through the OD API's protobuf messages (``text_format``), never through string
edits, so a value lands in a real field with the field's type or fails with the field's name.

A parameter name is either a *named parameter* (the edits people make by hand, resolved for
the config's architecture) or a *proto path* such as ``model.ssd.loss.classification_weight``
(``name[i]`` indexes a repeated message). Named parameters:

    batch_size, num_steps, momentum                 train_config fields / active optimizer
    optimizer                                       momentum_optimizer | rms_prop_optimizer |
                                                    adam_optimizer (the learning rate moves over)
    learning_rate                                   the schedule: cosine_decay_learning_rate |
                                                    exponential_decay_learning_rate |
                                                    manual_step_learning_rate |
                                                    constant_learning_rate
    <schedule>.<field>                              a field of that schedule, e.g.
                                                    cosine_decay_learning_rate.warmup_steps
    l2_weight, l2_weight.feature_extractor,         L2 regularizer weight: tied, or each part
    l2_weight.box_predictor
    box_coder.{y,x,height,width}_scale              SSD faster_rcnn_box_coder scales
    focal_loss.alpha, focal_loss.gamma              SSD weighted_sigmoid_focal loss
    augment.<step>                                  true/false: a data_augmentation_options entry
    augment.<step>.<field>                          a field of that entry, e.g.
                                                    augment.random_adjust_brightness.max_delta
    fine_tune_checkpoint, fine_tune_checkpoint_type a checkpoint prefix, or "best:EXPERIMENT"
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from object_detection.protos import pipeline_pb2, preprocessor_pb2

from sweep.core.errors import ConfigError, Problem
from sweep.core.inputs import InputError, read_text, short

TrainEvalPipelineConfig = pipeline_pb2.TrainEvalPipelineConfig

OPTIMIZERS = ("momentum_optimizer", "rms_prop_optimizer", "adam_optimizer")
SCHEDULES = ("cosine_decay_learning_rate", "exponential_decay_learning_rate",
             "manual_step_learning_rate", "constant_learning_rate")
AUGMENTATIONS = tuple(f.name for f in preprocessor_pb2.PreprocessingStep.DESCRIPTOR.fields)
BOX_CODER_SCALES = ("y_scale", "x_scale", "height_scale", "width_scale")
TOP_LEVEL = tuple(f.name for f in TrainEvalPipelineConfig.DESCRIPTOR.fields)
BEST = "best:"  # fine_tune_checkpoint value: the best checkpoint of an earlier experiment
# Turns the EXPERIMENT of a `best:EXPERIMENT` value into a checkpoint prefix.
BestResolver = Callable[[str], "str | Path"]

_REPEATED = FieldDescriptor.LABEL_REPEATED
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


class ParamError(ValueError):
    """A parameter that does not fit the pipeline: what is wrong and how to fix it."""

    def __init__(self, name: str, problem: str, fix: str):
        self.name, self.problem, self.fix = name, problem, fix
        super().__init__(f"{name}: {problem}. Fix: {fix}")


# ---------------------------------------------------------------------------------------------
# Files


def load_pipeline(path: str | Path) -> TrainEvalPipelineConfig:
    """Parse a pipeline.config; raises ``ConfigError`` naming the file and line."""
    path = Path(path)
    try:
        text = read_text(path, "the pipeline config",
                         "check the path; shipped templates are in sweep/odapi/templates/")
    except InputError as e:
        raise ConfigError(e.problem) from e
    cfg = TrainEvalPipelineConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        line = f"line {e.GetLine()}" if e.GetLine() else ""
        raise ConfigError(Problem(str(path), line, f"not a valid pipeline.config: {e}",
                                  "fix the text; field names are those of "
                                  "object_detection/protos/pipeline.proto")) from e
    return cfg


def write_pipeline(cfg: TrainEvalPipelineConfig, path: str | Path) -> None:
    """Write ``cfg`` as text (as the OD API's config_util does), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text_format.MessageToString(cfg))
    os.replace(tmp, path)


def write_trial(trial_dir: str | Path, base: TrainEvalPipelineConfig,
                params: Mapping[str, Any], *, resolve_best: BestResolver | None = None
                ) -> TrainEvalPipelineConfig:
    """Render and write a trial's ``pipeline.config`` and ``params.json`` into its folder."""
    from sweep.core.experiment import TrialDir, write_json

    trial = TrialDir(Path(trial_dir))
    cfg = render(base, params, resolve_best=resolve_best)
    trial.path.mkdir(parents=True, exist_ok=True)
    write_json(trial.params_path, dict(params))
    write_pipeline(cfg, trial.pipeline_path)
    return cfg


def num_steps(cfg: TrainEvalPipelineConfig) -> int:
    return int(cfg.train_config.num_steps)


# ---------------------------------------------------------------------------------------------
# Rendering


def render(base: TrainEvalPipelineConfig, params: Mapping[str, Any], *,
           resolve_best: BestResolver | None = None) -> TrainEvalPipelineConfig:
    """A copy of ``base`` with ``params`` applied; ``base`` is not modified.

    ``params`` is the flat dict a trial receives (sampled parameters plus constants). Raises
    ``ParamError`` for a parameter that does not fit this pipeline or a value of the wrong type.
    A ``best:EXPERIMENT`` fine-tune checkpoint is turned into a path by ``resolve_best`` (the
    sweep's rule of what is best, ``sweep.run.best.best_checkpoint``); without one it stays
    as written.
    """
    cfg = TrainEvalPipelineConfig()
    cfg.CopyFrom(base)
    for name in sorted(params, key=_priority):
        value = params[name]
        if name.startswith("augment.") and name.count(".") >= 2:
            step = name.split(".")[1]
            if params.get(f"augment.{step}") is False:
                continue  # the option is off in this trial; its parameters do not apply
        if name == "fine_tune_checkpoint" and isinstance(value, str) and value.startswith(BEST):
            if resolve_best is not None:
                value = str(resolve_best(value[len(BEST):]))
            if "fine_tune_checkpoint_type" not in params:
                cfg.train_config.fine_tune_checkpoint_type = "detection"
        _apply(cfg, name, value)
    _tie_cosine_total_steps(base, cfg, params)
    _check_schedule(cfg)
    return cfg


def _priority(name: str) -> tuple[int, str]:
    # Switches first, so the fields that follow land in the chosen optimizer/schedule/step.
    if name == "optimizer":
        return (0, name)
    if name in ("learning_rate", "num_steps"):
        return (1, name)
    if name.startswith("augment.") and name.count(".") == 1:
        return (2, name)
    return (3, "")  # keep the trial's own order otherwise (sorted() is stable)


def _apply(cfg: TrainEvalPipelineConfig, name: str, value: Any) -> None:
    if name == "optimizer":
        return _set_optimizer(cfg, value)
    if name == "learning_rate":
        return _set_schedule(cfg, value)
    if name.startswith("augment."):
        return _set_augmentation(cfg, name, value)
    if name == "manual_step_learning_rate.schedule":
        return _set_manual_schedule(cfg, value)
    for path in param_paths(cfg, name):
        _set_path(cfg, path, value, name)


def param_paths(cfg: TrainEvalPipelineConfig, name: str) -> list[str]:
    """The proto paths a plain parameter edits in ``cfg``; ``ParamError`` if it does not apply."""
    arch = cfg.model.WhichOneof("model")
    if name in ("batch_size", "num_steps", "fine_tune_checkpoint", "fine_tune_checkpoint_type"):
        return [f"train_config.{name}"]
    if name == "momentum":
        opt = _optimizer(cfg, name)
        if opt == "adam_optimizer":
            raise ParamError(name, "the optimizer is adam_optimizer, which has no momentum",
                             "remove `momentum`, or also set `optimizer: momentum_optimizer`")
        return [f"train_config.optimizer.{opt}.momentum_optimizer_value"]
    head, _, rest = name.partition(".")
    if head in SCHEDULES:
        opt = _optimizer(cfg, name)
        _same_oneof(name, getattr(cfg.train_config.optimizer, opt).learning_rate, "learning_rate",
                    head, f"train_config.optimizer.{opt}.learning_rate")
        return [f"train_config.optimizer.{opt}.learning_rate.{name}"]
    if head == "l2_weight":
        return _l2_paths(cfg, name, arch)
    if head == "box_coder":
        if rest not in BOX_CODER_SCALES:
            raise ParamError(name, "unknown box-coder parameter",
                             f"use box_coder.{{{','.join(BOX_CODER_SCALES)}}}")
        if arch != "ssd":
            raise ParamError(name, f"this pipeline's model is {arch}, which has no box_coder "
                             "field (Faster R-CNN hard-codes its box coder)",
                             "remove the box_coder parameters for this architecture")
        _same_oneof(name, cfg.model.ssd.box_coder, "box_coder_oneof", "faster_rcnn_box_coder",
                    "model.ssd.box_coder")
        return [f"model.ssd.box_coder.faster_rcnn_box_coder.{rest}"]
    if head == "focal_loss":
        if rest not in ("alpha", "gamma"):
            raise ParamError(name, "unknown focal-loss parameter", "use focal_loss.alpha or .gamma")
        if arch != "ssd":
            raise ParamError(name, f"this pipeline's model is {arch}; focal_loss.* applies to "
                             "SSD's classification loss", "use a proto path for this model")
        loss = cfg.model.ssd.loss.classification_loss.WhichOneof("classification_loss")
        if loss != "weighted_sigmoid_focal":
            raise ParamError(name, f"the SSD classification loss is {loss}, not "
                             "weighted_sigmoid_focal",
                             "switch explicitly with the proto path "
                             f"model.ssd.loss.classification_loss.weighted_sigmoid_focal.{rest}")
        return [f"model.ssd.loss.classification_loss.weighted_sigmoid_focal.{rest}"]
    if head.split("[")[0] in TOP_LEVEL:
        _check_arch(cfg, name, name)
        return [name]
    raise ParamError(name, "not a named parameter nor a proto path",
                     "use a named parameter (docs/search-spaces.md: Parameter names) or a path starting with "
                     f"one of {', '.join(TOP_LEVEL)}")


def _same_oneof(name: str, msg: Message, oneof: str, wanted: str, where: str) -> None:
    """A named parameter edits a field of one member of a oneof; refuse to switch the member
    (setting it would silently replace the user's structure, e.g. their box coder)."""
    there = msg.WhichOneof(oneof)
    if there is None or there == wanted:
        return
    fields = ", ".join(f.name for f in getattr(msg, there).DESCRIPTOR.fields) or "none"
    if oneof == "learning_rate":
        fix = (f"choose the schedule in the space too (`learning_rate: {wanted}`, or a `choice` "
               f"with {name} under its {wanted} option), or search {there}'s own fields")
    else:
        fix = (f"search the fields of {there} instead (proto paths {where}.{there}.<field>; its "
               f"fields: {fields}), or remove {name}")
    raise ParamError(name, f"{where} is {there}, not {wanted}: setting {name} would replace it",
                     fix)


def _optimizer(cfg: TrainEvalPipelineConfig, name: str) -> str:
    opt = cfg.train_config.optimizer.WhichOneof("optimizer")
    if opt is None:
        raise ParamError(name, "train_config.optimizer has no optimizer set",
                         "set `optimizer: momentum_optimizer` (or another) in the space")
    return opt


def _l2_paths(cfg: TrainEvalPipelineConfig, name: str, arch: str | None) -> list[str]:
    part = name[len("l2_weight."):] if name != "l2_weight" else ""
    if part not in ("", "feature_extractor", "box_predictor"):
        raise ParamError(name, "unknown L2 parameter",
                         "use l2_weight (tied), l2_weight.feature_extractor or "
                         "l2_weight.box_predictor")
    l2 = "regularizer.l2_regularizer.weight"
    fe, bp = [], []
    if arch == "ssd":
        fe = [f"model.ssd.feature_extractor.conv_hyperparams.{l2}"]
        which = cfg.model.ssd.box_predictor.WhichOneof("box_predictor_oneof")
        if which:
            hp = "fc_hyperparams" if which == "mask_rcnn_box_predictor" else "conv_hyperparams"
            bp = [f"model.ssd.box_predictor.{which}.{hp}.{l2}"]
    elif arch == "faster_rcnn":
        fe = [f"model.faster_rcnn.feature_extractor.conv_hyperparams.{l2}"]
        bp = [f"model.faster_rcnn.first_stage_box_predictor_conv_hyperparams.{l2}"]
        which = cfg.model.faster_rcnn.second_stage_box_predictor.WhichOneof("box_predictor_oneof")
        if which:
            hp = "fc_hyperparams" if which == "mask_rcnn_box_predictor" else "conv_hyperparams"
            bp.append(f"model.faster_rcnn.second_stage_box_predictor.{which}.{hp}.{l2}")
    else:
        raise ParamError(name, f"this pipeline's model is {arch}; l2_weight applies to SSD and "
                         "Faster R-CNN", "use the proto path of the regularizer you mean")
    if part == "box_predictor" and not bp:
        raise ParamError(name, "this pipeline sets no box_predictor", "set one in the base config")
    paths = {"": fe + bp, "feature_extractor": fe, "box_predictor": bp}[part]
    for path in paths:
        where = path[: -len(".l2_regularizer.weight")]
        holder, fd = _walk(cfg, where, name, create=False)
        _same_oneof(name, getattr(holder, fd.name), "regularizer_oneof", "l2_regularizer", where)
    return paths


def _check_arch(cfg: TrainEvalPipelineConfig, name: str, path: str) -> None:
    parts = path.split(".")
    if parts[0] == "model" and len(parts) > 1:
        arch = cfg.model.WhichOneof("model")
        want = parts[1].split("[")[0]
        archs = TrainEvalPipelineConfig().model.DESCRIPTOR.fields_by_name
        if arch and want != arch and want in archs:
            raise ParamError(name, f"this pipeline's model is {arch}, so model.{want} does not "
                             "exist in it", f"use model.{arch}.… paths for this base config")


def _set_optimizer(cfg: TrainEvalPipelineConfig, value: Any) -> None:
    if value not in OPTIMIZERS:
        raise ParamError("optimizer", f"{short(value)} is not an optimizer of the OD API",
                         f"use one of {', '.join(OPTIMIZERS)}")
    opt = cfg.train_config.optimizer
    current = opt.WhichOneof("optimizer")
    if current == value:
        return
    lr = getattr(opt, current).learning_rate if current else None
    new = getattr(opt, value)
    new.SetInParent()  # selects the oneof member, clearing the old one
    if lr is not None:
        new.learning_rate.CopyFrom(lr)


def _set_schedule(cfg: TrainEvalPipelineConfig, value: Any) -> None:
    if value not in SCHEDULES:
        raise ParamError("learning_rate", f"{short(value)} is not a learning-rate schedule",
                         f"use one of {', '.join(SCHEDULES)}")
    lr = getattr(cfg.train_config.optimizer, _optimizer(cfg, "learning_rate")).learning_rate
    if lr.WhichOneof("learning_rate") != value:
        getattr(lr, value).SetInParent()  # a fresh schedule: its own parameters follow


def _set_manual_schedule(cfg: TrainEvalPipelineConfig, value: Any) -> None:
    name = "manual_step_learning_rate.schedule"
    opt = _optimizer(cfg, name)
    lr = getattr(cfg.train_config.optimizer, opt).learning_rate
    _same_oneof(name, lr, "learning_rate", "manual_step_learning_rate",
                f"train_config.optimizer.{opt}.learning_rate")
    manual = lr.manual_step_learning_rate
    if not isinstance(value, list):
        raise ParamError(name, f"expected a list of [step, learning_rate] pairs, got {short(value)}",
                         "e.g. `[[10000, 0.004], [20000, 0.0004]]`")
    del manual.schedule[:]
    for item in value:
        if isinstance(item, Mapping):
            step, rate = item.get("step"), item.get("learning_rate")
        elif isinstance(item, list | tuple) and len(item) == 2:
            step, rate = item
        else:
            raise ParamError(name, f"entry {short(item)} is not [step, learning_rate]",
                             "write each entry as [step, learning_rate]")
        entry = manual.schedule.add()
        _set_field(entry, entry.DESCRIPTOR.fields_by_name["step"], step, name)
        _set_field(entry, entry.DESCRIPTOR.fields_by_name["learning_rate"], rate, name)


def _set_augmentation(cfg: TrainEvalPipelineConfig, name: str, value: Any) -> None:
    parts = name.split(".", 2)
    step_name = parts[1] if len(parts) > 1 else ""
    if step_name not in AUGMENTATIONS:
        raise ParamError(name, f"'{step_name}' is not a data augmentation of the OD API",
                         "use a field name of PreprocessingStep (object_detection/protos/"
                         "preprocessor.proto), e.g. random_horizontal_flip")
    steps = cfg.train_config.data_augmentation_options
    found = [i for i, s in enumerate(steps) if s.WhichOneof("preprocessing_step") == step_name]
    if len(parts) == 2:
        if not isinstance(value, bool):
            raise ParamError(name, f"expected true or false, got {short(value)}",
                             "turn an augmentation on or off with true/false")
        if value and not found:
            getattr(steps.add(), step_name).SetInParent()
        elif not value:
            for i in reversed(found):
                del steps[i]
        return
    step = steps[found[0]] if found else steps.add()
    _set_path(step, f"{step_name}.{parts[2]}", value, name)


def _tie_cosine_total_steps(base: TrainEvalPipelineConfig, cfg: TrainEvalPipelineConfig,
                            params: Mapping[str, Any]) -> None:
    """A cosine schedule ends at num_steps unless the trial says otherwise.

    Tied when the schedule was just chosen, or when the base config had them tied (as the zoo
    configs and the seed's runs do), so changing num_steps does not leave the rate at 0.
    """
    if "cosine_decay_learning_rate.total_steps" in params:
        return
    new, old = _cosine(cfg), _cosine(base)
    if new is None:
        return
    if old is None or old.total_steps == base.train_config.num_steps:
        new.total_steps = cfg.train_config.num_steps


def _cosine(cfg: TrainEvalPipelineConfig) -> Message | None:
    opt = cfg.train_config.optimizer.WhichOneof("optimizer")
    if opt is None:
        return None
    lr = getattr(cfg.train_config.optimizer, opt).learning_rate
    if lr.WhichOneof("learning_rate") != "cosine_decay_learning_rate":
        return None
    return lr.cosine_decay_learning_rate


def _check_schedule(cfg: TrainEvalPipelineConfig) -> None:
    # The OD API raises these only once TensorFlow is up; say it before anything starts.
    c = _cosine(cfg)
    if c is None:
        return
    if c.total_steps < c.warmup_steps:
        raise ParamError("cosine_decay_learning_rate.total_steps",
                         f"total_steps={c.total_steps} < warmup_steps={c.warmup_steps}",
                         "make the warm-up shorter than the schedule")
    if c.learning_rate_base < c.warmup_learning_rate:
        raise ParamError("cosine_decay_learning_rate.warmup_learning_rate",
                         f"warmup_learning_rate={c.warmup_learning_rate:g} > "
                         f"learning_rate_base={c.learning_rate_base:g}",
                         "bound it by the base rate, e.g. "
                         "`{loguniform: [1.0e-6, cosine_decay_learning_rate.learning_rate_base]}`")


# ---------------------------------------------------------------------------------------------
# Proto paths


def _split(path: str) -> list[tuple[str, int | None]]:
    out = []
    for part in path.split("."):
        if part.endswith("]") and "[" in part:
            field, _, idx = part[:-1].partition("[")
            if not idx.isdigit():
                raise ValueError(f"bad index in '{part}'")
            out.append((field, int(idx)))
        else:
            out.append((part, None))
    return out


def _walk(msg: Message, path: str, name: str, *, create: bool) -> tuple[Message, FieldDescriptor]:
    """The message holding the last field of ``path`` and that field's descriptor."""
    try:
        parts = _split(path)
    except ValueError as e:
        raise ParamError(name, str(e), "index repeated messages as field[0]") from e
    for i, (field, idx) in enumerate(parts):
        fd = msg.DESCRIPTOR.fields_by_name.get(field)
        where = ".".join(p for p, _ in parts[:i]) or "the pipeline"
        if fd is None:
            known = ", ".join(f.name for f in msg.DESCRIPTOR.fields)
            raise ParamError(name, f"{where} ({msg.DESCRIPTOR.name}) has no field '{field}'",
                             f"use one of: {known}")
        if i == len(parts) - 1:
            if idx is not None:
                raise ParamError(name, f"'{field}' cannot be indexed here",
                                 "set a repeated scalar field with a list")
            return msg, fd
        if fd.type != _MESSAGE:
            raise ParamError(name, f"'{field}' is a value, not a message", "shorten the path")
        if fd.label == _REPEATED:
            items = getattr(msg, field)
            if idx is None:
                raise ParamError(name, f"'{field}' is a repeated message",
                                 f"index it: {field}[0]")
            if idx < len(items):
                msg = items[idx]
            elif idx == len(items) and create:
                msg = items.add()
            else:
                raise ParamError(name, f"'{field}' has {len(items)} entries, no [{idx}]",
                                 f"use an index below {len(items)}")
        else:
            if idx is not None:
                raise ParamError(name, f"'{field}' is not repeated", f"drop [{idx}]")
            msg = getattr(msg, field)
    raise ParamError(name, "empty path", "name a field")


def _set_path(root: Message, path: str, value: Any, name: str) -> None:
    msg, fd = _walk(root, path, name, create=True)
    _set_field(msg, fd, value, name)


def _get_path(root: Message, path: str, name: str) -> Any:
    msg, fd = _walk(root, path, name, create=False)
    if fd.type == _MESSAGE:
        raise ParamError(name, f"'{fd.name}' is a message, not a value", "name one of its fields")
    value = getattr(msg, fd.name)
    if fd.label == _REPEATED:
        return list(value)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values_by_number[value].name
    if fd.type == FieldDescriptor.TYPE_FLOAT:
        return float(_short_float(value))
    return value


def _set_field(msg: Message, fd: FieldDescriptor, value: Any, name: str) -> None:
    if fd.type == _MESSAGE:
        sub = ", ".join(f.name for f in fd.message_type.fields)
        raise ParamError(name, f"'{fd.name}' is a message ({fd.message_type.name}), not a value",
                         f"set one of its fields instead: {sub}")
    if fd.label == _REPEATED:
        values = value if isinstance(value, list) else [value]
        converted = [_convert(fd, v, name) for v in values]
        field = getattr(msg, fd.name)
        del field[:]
        field.extend(converted)
    else:
        setattr(msg, fd.name, _convert(fd, value, name))


_FLOATS = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
_INTS = (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
         FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64)
_UNSIGNED = (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64)


def _convert(fd: FieldDescriptor, value: Any, name: str) -> Any:
    """``value`` as the field's type; ``ParamError`` naming the field type otherwise."""
    is_num = isinstance(value, int | float) and not isinstance(value, bool)
    if fd.type in _FLOATS and is_num:
        return float(value)
    if fd.type in _INTS and is_num and float(value).is_integer():
        if fd.type in _UNSIGNED and value < 0:
            raise ParamError(name, f"{fd.name} is unsigned, got {value}", "use a value >= 0")
        return int(value)
    if fd.type == FieldDescriptor.TYPE_BOOL and isinstance(value, bool):
        return value
    if fd.type == FieldDescriptor.TYPE_STRING and isinstance(value, str):
        return value
    if fd.type == FieldDescriptor.TYPE_ENUM:
        names = [v.name for v in fd.enum_type.values]
        if isinstance(value, str) and value in names:
            return fd.enum_type.values_by_name[value].number
        raise ParamError(name, f"{fd.name} is an enum ({fd.enum_type.name}), got {short(value)}",
                         f"use one of {', '.join(names)}")
    kind = {FieldDescriptor.TYPE_BOOL: "a bool", FieldDescriptor.TYPE_STRING: "a string"}.get(
        fd.type, "an integer" if fd.type in _INTS else "a number")
    raise ParamError(name, f"{fd.name} takes {kind}, got {short(value)} ({type(value).__name__})",
                     f"give {kind}")


# ---------------------------------------------------------------------------------------------
# Reading back


def read_param(cfg: TrainEvalPipelineConfig, name: str) -> Any:
    """The value ``name`` has in ``cfg`` (for 'base' points); ``ValueError`` if it has none."""
    if name == "optimizer":
        return _optimizer(cfg, name)
    if name == "learning_rate":
        opt = _optimizer(cfg, name)
        return getattr(cfg.train_config.optimizer, opt).learning_rate.WhichOneof("learning_rate")
    head = name.partition(".")[0]
    if head in SCHEDULES:
        if read_param(cfg, "learning_rate") != head:
            raise ParamError(name, f"the schedule is not {head}", "")
    if name.startswith("augment."):
        parts = name.split(".", 2)
        steps = [s for s in cfg.train_config.data_augmentation_options
                 if s.WhichOneof("preprocessing_step") == parts[1]]
        if len(parts) == 2:
            return bool(steps)
        if not steps:
            raise ParamError(name, f"{parts[1]} is off", "")
        return _get_path(steps[0], f"{parts[1]}.{parts[2]}", name)
    return _get_path(cfg, param_paths(cfg, name)[0], name)


def check_value(cfg: TrainEvalPipelineConfig, name: str, value: Any) -> None:
    """Raise ``ParamError`` if ``value`` does not fit the field(s) ``name`` edits in ``cfg``.

    Only this one edit, on a copy: cross-field rules need a whole trial (see ``render``).
    """
    copy = TrainEvalPipelineConfig()
    copy.CopyFrom(cfg)
    _apply(copy, name, value)


def check_param(cfg: TrainEvalPipelineConfig, name: str) -> None:
    """Raise ``ParamError`` if ``name`` does not exist for this pipeline (its architecture)."""
    if name in ("optimizer", "learning_rate", "manual_step_learning_rate.schedule"):
        _optimizer(cfg, name)
        return
    if name.startswith("augment."):
        parts = name.split(".", 2)
        if parts[1] not in AUGMENTATIONS:
            _set_augmentation(TrainEvalPipelineConfig(), name, True)  # raises the message
        if len(parts) == 3:
            step = getattr(preprocessor_pb2.PreprocessingStep(), parts[1])
            _walk(step, parts[2], name, create=False)
        return
    for path in param_paths(cfg, name):
        copy = TrainEvalPipelineConfig()
        copy.CopyFrom(cfg)
        _walk(copy, path, name, create=True)


# ---------------------------------------------------------------------------------------------
# Changed fields, for reports


def changed_fields(base: TrainEvalPipelineConfig, cfg: TrainEvalPipelineConfig) -> dict[str, str]:
    """Proto path -> value (text_format's words) of every field of ``cfg`` that differs."""
    out: dict[str, str] = {}
    _diff(base, cfg, "", out)
    return out


def _diff(a: Message, b: Message, prefix: str, out: dict[str, str]) -> None:
    for fd in b.DESCRIPTOR.fields:
        path = prefix + fd.name
        va, vb = getattr(a, fd.name), getattr(b, fd.name)
        if fd.label == _REPEATED:
            if list(va) != list(vb):
                out[path] = "; ".join(_fmt(fd, v) for v in vb) if len(vb) else "(none)"
        elif fd.type == _MESSAGE:
            if b.HasField(fd.name):
                before = len(out)
                _diff(va, vb, path + ".", out)
                if len(out) == before and not a.HasField(fd.name):
                    out[path] = "{}"  # newly set with all defaults, e.g. constant_learning_rate
            elif a.HasField(fd.name) and fd.containing_oneof is None:
                out[path] = "(removed)"
        elif va != vb or (b.HasField(fd.name) and not a.HasField(fd.name)):
            out[path] = _fmt(fd, vb)


def _fmt(fd: FieldDescriptor, value: Any) -> str:
    if fd.type == _MESSAGE:
        return text_format.MessageToString(value, as_one_line=True) or "{}"
    if fd.type == FieldDescriptor.TYPE_FLOAT:
        return _short_float(value)
    if fd.type == FieldDescriptor.TYPE_DOUBLE:
        return repr(float(value))
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values_by_number[value].name
    return str(value)


def _short_float(x: float) -> str:
    """The shortest decimal that is the same float32 (0.004, not 0.0039999998989515007)."""
    f32 = struct.unpack("f", struct.pack("f", x))[0]
    for digits in range(1, 10):
        s = f"{x:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(s)))[0] == f32:
            return s if any(c in s for c in ".en") else s + ".0"
    return repr(x)
