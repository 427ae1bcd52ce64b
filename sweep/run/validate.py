"""Every check that runs before a sweep launches anything (`sweep validate`, `sweep run`).

``validate`` collects all problems instead of stopping at the first, so one run tells the user
everything to fix. Nothing here imports TensorFlow: TFRecords are read by their framing and
label maps by their proto.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sweep.core.errors import ConfigError, Problem
from sweep.core.inputs import InputError, read_text, short
from sweep.data.label_map import parse_label_map
from sweep.data.tfrecord import TFRecordError, Verify, count_records
from sweep.odapi.render import (
    BEST,
    ParamError,
    TrainEvalPipelineConfig,
    check_param,
    check_value,
    load_pipeline,
    render,
)
from sweep.run.best import best_checkpoint
from sweep.search import pbt, samplers
from sweep.search.space import (
    BasePoint,
    IntRange,
    SearchSpace,
    candidate_values,
    describe,
    parse_space,
)

CHECKPOINT_TYPES = ("detection", "classification", "full", "fine_tune")
RANDOM_SAMPLES = 16  # random trials rendered to catch cross-field problems (e.g. warm-up rules)


VERIFY_DATA = {"sample": "sample", "full": "all"}  # --verify-data -> sweep.data.tfrecord's level


def validate(space_path: str | Path, pipeline_path: str | Path, *, check_data: bool = True,
             storage: str | Path = "experiments", replicas: int = 1, verify_data: str = "sample",
             examples: dict[str, int] | None = None) -> list[Problem]:
    """Every problem with this space + pipeline (+ data, checkpoints unless ``check_data``).

    ``replicas``: devices each trial trains on (MirroredStrategy splits the batch over them).
    ``verify_data``: "sample" checks every record's framing and a sample of data checksums,
    "full" every data checksum. ``examples``, if given, receives the number of records of each
    input reader (``train_input_reader``, ``eval_input_reader[0]``): every file is read once.
    """
    problems: list[Problem] = []
    space = parse_space(Path(space_path), problems)
    try:
        base = load_pipeline(pipeline_path)
    except ConfigError as e:
        problems.extend(e.problems)
        base = None
    if space is None or base is None:
        return problems
    fits = _check_params(space, base, str(space_path), problems)
    conditional = {p.name for p, cond in space.walk() if cond}
    for name in space.perturb:
        why = pbt.perturb_problem(name) or (
            "it exists only under one option of a `choice`, and PBT perturbs every trial's "
            "value" if name in conditional else None)
        if why:
            problems.append(Problem(str(space_path), f"perturb.{name}", f"cannot be perturbed: "
                                    f"{why}", f"remove {name} from `perturb:`"))
    if fits:
        _check_trials(space, base, str(space_path), problems)
        if replicas > 1:
            _check_replicas(space, base, replicas, str(space_path), str(pipeline_path), problems)
    if check_data:
        try:
            cfg = render(base, space.constants())
        except ValueError:
            cfg = base  # already reported above
        _check_label_maps(cfg, str(pipeline_path), problems)
        counts = _check_tfrecords(cfg, str(pipeline_path), problems, VERIFY_DATA[verify_data])
        if examples is not None:
            examples.update(counts)
        _check_checkpoints(space, cfg, str(space_path), str(pipeline_path), storage, problems)
    return problems


def check_pipeline(pipeline_path: str | Path, *, storage: str | Path = "experiments") -> None:
    """The data checks of ``validate`` for a pipeline.config alone (no search space): label
    maps against num_classes, TFRecords, fine_tune_checkpoint. Raises ``ConfigError``."""
    cfg = load_pipeline(pipeline_path)
    file, problems = str(pipeline_path), []
    _check_label_maps(cfg, file, problems)
    _check_tfrecords(cfg, file, problems)
    _check_checkpoints(SearchSpace(()), cfg, file, file, storage, problems)
    if problems:
        raise ConfigError(problems)


def check(space_path: str | Path, pipeline_path: str | Path, **kw: Any) -> dict[str, int]:
    """Raise ``ConfigError`` listing every problem, if there is any; else return the number
    of examples of each input reader (empty when data is not checked)."""
    examples: dict[str, int] = {}
    problems = validate(space_path, pipeline_path, examples=examples, **kw)
    if problems:
        raise ConfigError(problems)
    return examples


# ---------------------------------------------------------------------------------------------
# The sampler and scheduler against the space


def search_problems(sampler: str, scheduler: str, space: SearchSpace) -> list[Problem]:
    """What cannot work with this space before anything is launched: a grid over continuous
    parameters, ASHA with a sampled ``num_steps``."""
    problems: list[Problem] = []
    if sampler == "grid":
        grid, continuous = space.grid()
        if continuous or not grid:
            problems.append(samplers.grid_problem(space, continuous))
    sampled_steps = any(p.name == "num_steps" and p.sampled for p, _ in space.walk())
    if scheduler == "asha" and sampled_steps:
        problems.append(Problem(
            str(space.path or "search space"), "num_steps", "ASHA needs one training length for "
            "all trials (its max_t and rungs), but num_steps is sampled: trials longer than the "
            "base would be cut short and recorded as pruned",
            "make num_steps a constant, or use --scheduler median or fifo"))
    return problems


def check_search(sampler: str, scheduler: str, space: SearchSpace) -> None:
    """Raise ConfigError with every problem of ``search_problems``."""
    problems = search_problems(sampler, scheduler, space)
    if problems:
        raise ConfigError(problems)


def check_population(kind: str, space: SearchSpace) -> None:
    """Refuse, before launch, a population-based sweep the space cannot drive."""
    file = str(space.path or "the search space")
    if not space.perturb:
        raise ConfigError([Problem(file, "perturb", f"--scheduler {kind} needs parameters it may "
                                   "change mid-training", "add e.g. `perturb: [cosine_decay_"
                                   "learning_rate.learning_rate_base, l2_weight]` (searched "
                                   "parameters; see docs/pbt.md)")])
    if kind == "pb2":
        problems = [Problem(file, f"perturb.{n}", why, "use --scheduler pbt, or perturb only "
                            "uniform / loguniform / int / stepped parameters")
                    for n in space.perturb if (why := pbt.pb2_problem(space, n))]
        if problems:
            raise ConfigError(problems)


# ---------------------------------------------------------------------------------------------
# Parameters against the pipeline


def _check_params(space: SearchSpace, base: TrainEvalPipelineConfig, file: str,
                  problems: list[Problem]) -> bool:
    """Each parameter exists for this architecture and each of its values fits the field."""
    before = len(problems)
    for param, cond in space.walk():
        key = f"parameters.{param.name}"
        cfg = _switched(base, {**space.constants(), **dict(cond)})
        try:
            check_param(cfg, param.name)
        except ParamError as e:
            problems.append(Problem(file, key, e.problem, e.fix))
            continue
        for value in candidate_values(param.dist):
            try:
                check_value(cfg, param.name, value)
            except ParamError as e:
                problems.append(Problem(file, key, f"value {short(value)}: {e.problem}", e.fix))
                break
    return len(problems) == before


def _switched(base: TrainEvalPipelineConfig, fixed: dict[str, Any]) -> TrainEvalPipelineConfig:
    """``base`` with the constants and the enclosing choices applied: a parameter under
    `learning_rate: cosine_decay_learning_rate` is checked against a cosine schedule."""
    try:
        return render(base, fixed)
    except ValueError:
        return base  # a bad constant or choice is reported on its own


def _check_trials(space: SearchSpace, base: TrainEvalPipelineConfig, file: str,
                  problems: list[Problem]) -> None:
    """Render the known points and some random trials, as Ray would, to catch combinations."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = space.points_to_evaluate(base)
    for i, (given, point) in enumerate(zip(space.points, points, strict=True)):
        if isinstance(given, BasePoint):
            for name in given.overrides:
                if name not in point:
                    problems.append(Problem(
                        file, f"points[{i}].base.{name}", "is not active in this point: its "
                        "parent choice takes another option in the base config",
                        "also override the parent choice in this point, or remove the name"))
        study.enqueue_trial(point)
    seen: set[str] = set()
    for i in range(len(points) + RANDOM_SAMPLES):
        trial = study.ask()
        params = space.sample(trial)
        study.tell(trial, 0.0)
        try:
            render(base, params)
        except ParamError as e:
            if e.name in seen:
                continue
            seen.add(e.name)
            which = f"points[{i}]" if i < len(points) else "a random trial"
            problems.append(Problem(file, f"parameters.{e.name}", f"{which} renders an invalid "
                                    f"config: {e.problem} (trial: {_short(params)})", e.fix))


BATCH_SIZE_NAMES = ("batch_size", "train_config.batch_size")


def _check_replicas(space: SearchSpace, base: TrainEvalPipelineConfig, replicas: int,
                    space_file: str, pipeline_file: str, problems: list[Problem]) -> None:
    """Every batch size a trial can get divides by the replicas: MirroredStrategy gives each
    device batch_size / replicas images, and the OD API refuses a remainder at its first step."""
    params = [p for p, _ in space.walk() if p.name in BATCH_SIZE_NAMES]
    fix = (f"use batch sizes that are multiples of {replicas} (e.g. {{categorical: "
           f"[{replicas * 2}, {replicas * 4}, {replicas * 8}]}} or {{int: [{replicas}, "
           f"{replicas * 8}], step: {replicas}}}), or change --gpus-per-trial")
    for p in params:
        d = p.dist
        if isinstance(d, IntRange) and not d.log and not isinstance(d.low, str):
            bad = [v for v in (int(d.low), d.step) if v % replicas]
        else:
            bad = [v for v in candidate_values(d) if isinstance(v, int) and v % replicas]
            if isinstance(d, IntRange):  # a log or parameter-bound range: any value may come
                bad = bad or [d.low]
        if bad:
            problems.append(Problem(space_file, f"parameters.{p.name}", f"{describe(d)} gives "
                                    f"batch sizes that do not divide by the {replicas} replicas "
                                    f"of --gpus-per-trial {replicas}", fix))
    if not params:
        size = render(base, space.constants()).train_config.batch_size
        if size % replicas:
            problems.append(Problem(pipeline_file, "train_config.batch_size", f"{size} does not "
                                    f"divide by the {replicas} replicas of --gpus-per-trial "
                                    f"{replicas}", fix.replace("use batch sizes", "set a batch "
                                                               "size (or sweep batch_size)")))


def _short(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={short(v)}"
                     for k, v in params.items())


# ---------------------------------------------------------------------------------------------
# Label maps


def _readers(cfg: TrainEvalPipelineConfig) -> list[tuple[str, Any]]:
    out = [("train_input_reader", cfg.train_input_reader)]
    out += [(f"eval_input_reader[{i}]", r) for i, r in enumerate(cfg.eval_input_reader)]
    return out


def _num_classes(cfg: TrainEvalPipelineConfig) -> tuple[str, int] | None:
    arch = cfg.model.WhichOneof("model")
    model = getattr(cfg.model, arch) if arch else None
    if model is None or "num_classes" not in model.DESCRIPTOR.fields_by_name:
        return None
    return f"model.{arch}.num_classes", int(model.num_classes)


def _check_label_maps(cfg: TrainEvalPipelineConfig, file: str, problems: list[Problem]) -> None:
    done: set[str] = set()
    for where, reader in _readers(cfg):
        path = reader.label_map_path
        key = f"{where}.label_map_path"
        if not path:
            if where != "train_input_reader":
                problems.append(Problem(file, key, "no label map set (evaluation needs one)",
                                        "set label_map_path to your label_map.pbtxt"))
            continue
        if path in done:
            continue
        done.add(path)
        try:
            text = read_text(Path(path), f"label map {path!r}",
                             "point label_map_path at an existing label_map.pbtxt")
        except InputError as e:
            problems.append(Problem(file, key, e.problem.problem, e.problem.fix))
            continue
        _, ids, found = parse_label_map(text, path)
        problems.extend(found)
        if not ids:
            continue
        nc = _num_classes(cfg)
        if nc is None:
            continue
        nc_key, n = nc
        distinct = len(set(ids))
        # The OD API sizes the classifier by num_classes and takes ids 1..num_classes: the
        # largest id must be num_classes (gaps are unused classes, not an error).
        if max(ids) != n:
            problems.append(Problem(
                file, nc_key, f"is {n} but the label map {path} has {distinct} classes "
                f"(ids {min(ids)}..{max(ids)})",
                f"set {nc_key}: {max(ids)} in the pipeline (or as a constant in the space), "
                "or fix the label map"))


# ---------------------------------------------------------------------------------------------
# TFRecords


def _check_tfrecords(cfg: TrainEvalPipelineConfig, file: str, problems: list[Problem],
                     verify: Verify = "sample") -> dict[str, int]:
    counts: dict[str, int] = {}
    for where, reader in _readers(cfg):
        if reader.WhichOneof("input_reader") != "tf_record_input_reader":
            continue
        key = f"{where}.tf_record_input_reader.input_path"
        patterns = list(reader.tf_record_input_reader.input_path)
        if not patterns:
            problems.append(Problem(file, key, "no input_path set",
                                    "set input_path to your .record / .tfrecord file(s)"))
            continue
        for pattern in patterns:
            if "://" in pattern:
                continue  # gs://, hdfs://: only TensorFlow can read these
            files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            files = [f for f in files if Path(f).exists()]
            if not files:
                problems.append(Problem(file, key, f"no TFRecord file at '{pattern}'",
                                        "point input_path at existing files (globs like "
                                        "train-?????-of-00010.record are allowed)"))
                continue
            total = 0
            for f in files:
                try:
                    total += count_records(f, verify=verify)
                except (OSError, ValueError) as e:
                    reason = e.reason if isinstance(e, TFRecordError) else e  # names no file
                    problems.append(Problem(file, key, f"'{f}' is unreadable: {reason}",
                                            "re-create the TFRecord file (e.g. with the OD API's "
                                            "dataset_tools) or remove it from input_path"))
            if total == 0 and not any(p.key == key and p.file == file for p in problems):
                problems.append(Problem(file, key, f"'{pattern}' holds no examples",
                                        "point input_path at non-empty TFRecord files"))
            counts[where] = counts.get(where, 0) + total
    return counts


# ---------------------------------------------------------------------------------------------
# Fine-tune checkpoints


def _check_checkpoints(space: SearchSpace, cfg: TrainEvalPipelineConfig, space_file: str,
                       pipeline_file: str, storage: str | Path, problems: list[Problem]) -> None:
    params = {p.name: p for p, _ in space.walk()}
    if "fine_tune_checkpoint" in params:
        file, key = space_file, "parameters.fine_tune_checkpoint"
        values = candidate_values(params["fine_tune_checkpoint"].dist)
    else:
        file, key = pipeline_file, "train_config.fine_tune_checkpoint"
        values = [cfg.train_config.fine_tune_checkpoint]
    for value in _strings(values):
        problem = checkpoint_problem(value, storage)
        if problem:
            problems.append(Problem(file, key, *problem))
    if "fine_tune_checkpoint_type" in params:
        types = list(_strings(candidate_values(params["fine_tune_checkpoint_type"].dist)))
        file, key = space_file, "parameters.fine_tune_checkpoint_type"
    elif cfg.train_config.fine_tune_checkpoint and not all(
            str(v).startswith(BEST) for v in values):
        types = [cfg.train_config.fine_tune_checkpoint_type]
        file, key = pipeline_file, "train_config.fine_tune_checkpoint_type"
    else:
        types = []
    for t in types:
        if t not in CHECKPOINT_TYPES:
            problems.append(Problem(file, key, f"'{t}' is not a checkpoint type the OD API loads",
                                    f"use one of {', '.join(CHECKPOINT_TYPES)} ('detection' for "
                                    "a checkpoint an earlier sweep trained)"))


def _strings(values: Iterable[Any]) -> Iterable[str]:
    return (v for v in values if isinstance(v, str) and v)


def checkpoint_problem(value: str, storage: str | Path = "experiments") -> tuple[str, str] | None:
    """(problem, fix) if ``value`` names no loadable checkpoint, else None."""
    if value.startswith(BEST):
        try:
            best_checkpoint(value[len(BEST):], storage)
        except FileNotFoundError as e:
            return (f"'{value}': {e}", "run that experiment first, or name a checkpoint path")
        return None
    p = Path(value)
    if p.is_dir():
        return (f"'{value}' is a folder, not a checkpoint prefix",
                f"name the checkpoint inside it, e.g. {value.rstrip('/')}/ckpt-0 "
                "(the part before .index)")
    if not Path(value + ".index").exists():
        return (f"no checkpoint at '{value}' (looked for {value}.index)",
                "give the checkpoint prefix (path without .index/.data-*), or "
                f"'{BEST}EXPERIMENT' to start from an earlier experiment's best checkpoint")
    return None
