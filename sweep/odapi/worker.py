"""The processes a trial runs: the OD API training job and its eval job.

    python -m sweep.odapi.worker train --pipeline P --model-dir D ...
    python -m sweep.odapi.worker eval  --pipeline P --model-dir D ...

``train`` is ``model_lib_v2.train_loop`` as ``model_main_tf2.py`` calls it: it resumes from the
newest checkpoint in the model_dir, so a retried trial continues where it was killed.

``eval`` is the eval job: like ``model_lib_v2.eval_continuously`` it builds the model once and
runs ``model_lib_v2.eager_eval_loop`` (COCO detection metrics) on each new checkpoint, but it
evaluates every checkpoint in order rather than jumping to the newest, polls every second
instead of every 180-300 s, warms up on the untrained step-0 checkpoint without recording it,
skips checkpoints it already evaluated (so a restarted eval job does not redo work), exits once
the final step is evaluated, and records which checkpoint gave which metrics in
``eval/evaluated.jsonl`` (the OD API keeps no "best" checkpoint; the trial keeps one from this),
and keeps each evaluation's per-image detections in COCO results format (``sweep.odapi.detections``).

Both cut the fixed cost every trial pays before it trains (on 2 CPU cores, the demo's model,
20 steps: the train job 145 s -> 77 s, the eval job 104 s -> 66 s): the model's and the
optimizer's variables are built before the first ``tf.function`` call (``build_variables``:
TensorFlow otherwise traces the train and eval steps twice), and AutoGraph leaves the OD API's
own functions as written (``compat.trace_od_api_as_written``; a job that turns out to need it
starts again with it, ``SWEEP_AUTOGRAPH_OD_API=1``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sweep.core.experiment import append_evaluated, read_evaluated

GRAPH_OPTIMIZER = ("auto", "on", "off")  # --graph-optimizer; graph_optimizer_enabled decides


# "1": AutoGraph converts the OD API's functions too, as its own scripts do (the fallback when
# one needs it, and what benchmarks compare with); else they trace as written (compat).
AUTOGRAPH_ENV = "SWEEP_AUTOGRAPH_OD_API"


def graph_optimizer_enabled(choice: str, gpus: int) -> bool:
    """Whether TF's graph optimizer (grappler) runs in a job. ``auto``: only with a GPU.

    On the CPU, grappler buys nothing for these graphs: on a quiet machine, turning it off for
    the demo's SSD gave a first (tracing) iteration of 0.96x and a steady step of 1.01x
    (benchmarks/results/trial_cost.md; the 0.69x and 0.19x measured earlier under heavy load did
    not hold). On a GPU its layout and fusion passes are what make the convolutions fast, and
    tracing is seconds of an hours-long trial, so it stays on there.
    """
    if choice not in GRAPH_OPTIMIZER:
        raise ValueError(f"graph optimizer must be one of {GRAPH_OPTIMIZER}, got {choice!r}")
    return choice == "on" or (choice == "auto" and gpus > 0)


def _setup_tf(threads: int, cpu_replicas: int = 0, graph_optimizer: str = "auto") -> None:
    """Before TensorFlow initialises its devices: the tf-slim patch, threads, GPU memory
    growth (a trial's train and eval jobs, or fractional-GPU trials, share a GPU; without it
    the first process takes all its memory), logical CPU devices for ``cpu_replicas``, and
    the graph optimizer (``graph_optimizer_enabled``)."""
    from sweep.odapi import compat

    compat.patch()
    if os.environ.get(AUTOGRAPH_ENV) != "1":
        compat.trace_od_api_as_written()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not graph_optimizer_enabled(graph_optimizer, len(gpus)):
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_replicas)])


def seed_training(seed: int | None, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow's global seed (every op seed the OD API leaves unset,
    so the model's initialisation, the input shuffles and the augmentations, derives from it);
    with ``deterministic``, TensorFlow's op determinism too: deterministic kernels, and tf.data
    overrides each ``deterministic``/``sloppy`` choice (the OD API's interleave of shards is
    sloppy when it shuffles) and runs maps with random ops serially."""
    import tensorflow as tf

    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
        from sweep.odapi import compat

        compat.seed_legacy_functions()  # the augmentations' graphs too (see compat)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def train_strategy(tf, cpu_replicas: int = 0):  # noqa: ANN001, ANN201 - tf module / Strategy
    """As ``model_main_tf2.py``: MirroredStrategy over the trial's GPUs when it has more than
    one (Ray's CUDA_VISIBLE_DEVICES), else the default strategy. ``cpu_replicas`` > 1 mirrors
    over that many logical CPU devices instead (to test the multi-replica path without GPUs)."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    if cpu_replicas > 1:
        cpus = tf.config.list_logical_devices("CPU")[:cpu_replicas]
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


def train(pipeline: Path, model_dir: Path, *, checkpoint_every: int, steps_per_iteration: int,
          keep: int, cpu_replicas: int = 0) -> None:
    import tensorflow as tf
    from object_detection import model_lib_v2
    from object_detection.utils import config_util

    train_config = config_util.get_configs_from_pipeline_file(str(pipeline))["train_config"]
    _gate_checkpoints(model_dir, int(train_config.num_steps))
    fine_tune = bool(train_config.fine_tune_checkpoint)
    # Not when fine-tuning: a deferred restore of the fine-tune weights would fill the variables
    # as they are built, and the eager pass (in training mode) would then move their batch-norm
    # statistics towards a blank image's.
    tf.compat.v2.train.Checkpoint = momentum_keeping_checkpoint(tf, build=not fine_tune)
    strategy = train_strategy(tf, cpu_replicas)
    print(f"train: {strategy.num_replicas_in_sync} replica(s) "
          f"({type(strategy).__name__})", flush=True)
    with strategy.scope():  # train_loop builds the model under the current strategy
        model_lib_v2.train_loop(
            pipeline_config_path=str(pipeline),
            model_dir=str(model_dir),
            checkpoint_every_n=checkpoint_every,
            checkpoint_max_to_keep=keep,
            num_steps_per_iteration=steps_per_iteration,
            record_summaries=False,  # only drops the per-step input-image summaries
        )


def _gate_checkpoints(model_dir: Path, num_steps: int) -> None:
    """train_loop saves through ``tf.train.CheckpointManager``: make each save wait at the
    trial's train gate (sweep.core.gate), so an early-stopping scheduler decides on a rung before
    training goes past it."""
    import tensorflow as tf

    from sweep.core import gate

    base = tf.compat.v2.train.CheckpointManager

    class GatedCheckpointManager(base):
        def save(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - as TF's
            path = super().save(*args, **kwargs)
            # train_loop wrote this step's losses just before saving; its writer flushes every
            # 10 events or 2 min, so without this the rung's train loss would reach disk only
            # after the scheduler decided on it (or never, for a trial stopped there).
            tf.summary.flush()
            step = int(self.checkpoint.step.numpy())
            gate.wait(model_dir, step, num_steps)
            return path

    tf.compat.v2.train.CheckpointManager = GatedCheckpointManager
    # A restarted job (a retry) resumes from its newest checkpoint: it may be the rung itself.
    latest = tf.train.latest_checkpoint(str(model_dir))
    if latest:
        try:
            step = int(tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE"))
        except (ValueError, tf.errors.OpError):
            return
        gate.wait(model_dir, step, num_steps)


def momentum_keeping_checkpoint(tf, *, build: bool = False):  # noqa: ANN001, ANN201 - tf module / a Checkpoint class
    """``tf.train.Checkpoint`` whose ``restore`` keeps the optimizer's configured momentum.

    The OD API builds its optimizer with ``tensorflow.compat.v1``'s Keras, the legacy
    OptimizerV2, which keeps ``momentum`` (SGD, RMSprop) as a variable saved in every
    checkpoint: train_loop's restore would put back the momentum the checkpoint was trained
    with. A PBT clone restores another trial's checkpoint with a perturbed momentum in its
    pipeline.config, so the config's value is set again after the restore (the restored
    velocity slots, the optimizer's state, stay). A tensor or schedule learning rate is no
    variable and is not affected. With ``build``, ``restore`` first builds the model's and the
    optimizer's variables (``build_variables``)."""
    base = tf.train.Checkpoint

    class MomentumKeepingCheckpoint(base):
        def restore(self, save_path, options=None):  # noqa: ANN001, ANN202 - as TF's
            if build:  # train_loop restores just before its first step: build variables now
                build_variables(tf, getattr(self, "model", None),
                                getattr(self, "optimizer", None))
            kept = [(v, v.numpy()) for v in _momentum_variables(tf, getattr(self, "optimizer",
                                                                            None))]
            status = super().restore(save_path, options=options)
            for var, value in kept:
                var.assign(value)
            return status

    return MomentumKeepingCheckpoint


def build_variables(tf, model, optimizer=None) -> bool:  # noqa: ANN001 - tf, OD API objects
    """Create the model's variables (one eager forward pass on a blank image) and the
    optimizer's (its slots for every trainable variable), so the first call of the train or
    eval ``tf.function`` creates none. A ``tf.function`` whose first call creates variables is
    traced twice (once creating them, once more for the later calls): that doubled the train
    step's tracing, the largest fixed cost of a trial on the CPU (the step itself traces the
    whole model twice, for its loop and its last step). Returns whether it built them; it
    leaves models it cannot run eagerly (a Faster R-CNN in training mode needs groundtruth to
    predict) and multi-replica strategies to the OD API's own path."""
    if model is None or (tf.distribute.has_strategy()
                         and tf.distribute.get_strategy().num_replicas_in_sync > 1):
        return False
    try:
        try:
            built = bool(model.variables)
        except ValueError:  # Keras: "Weights for model ... have not yet been created"
            built = False
        if not built:
            images, shapes = model.preprocess(tf.zeros([1, 320, 320, 3]))
            model.predict(images, shapes)
        if optimizer is not None:
            for opt in (optimizer, getattr(optimizer, "_optimizer", None)):  # EMA wraps one
                if hasattr(opt, "_create_all_weights"):
                    opt._create_all_weights(model.trainable_variables)  # noqa: SLF001
    except Exception as e:  # noqa: BLE001 - any model the eager pass does not suit
        print(f"worker: variables are built in the first trace ({type(e).__name__}: {e})",
              flush=True)
        return False
    return True


def _momentum_variables(tf, optimizer) -> list:  # noqa: ANN001 - tf module / an optimizer
    """The optimizer's momentum variables, created now with the configured value (reading a
    hyperparameter of OptimizerV2 creates its variables), so a restore assigns them at once."""
    out = []
    # The moving-average wrapper (use_moving_average) keeps the real optimizer in _optimizer.
    for opt in (optimizer, getattr(optimizer, "_optimizer", None)):
        try:
            value = getattr(opt, "momentum", None)
        except (AttributeError, KeyError):
            continue
        if isinstance(value, tf.Variable):
            out.append(value)
    return out


def evaluate(pipeline: Path, model_dir: Path, *, poll: float, eval_initial: bool,
             timeout: float = 0.0) -> None:
    """Evaluate every checkpoint in order until the final step's is done. No clock ends it by
    default: a trial's training may take days between checkpoints, and the trial (which owns
    this job) ends it when training is over or the trial stops."""
    import tensorflow as tf
    from object_detection import inputs, model_lib_v2
    from object_detection.builders import model_builder, optimizer_builder
    from object_detection.utils import config_util

    from sweep.odapi import detections

    _reuse_eval_trace(model_lib_v2)
    configs = config_util.get_configs_from_pipeline_file(str(pipeline))
    model_config = configs["model"]
    eval_config = configs["eval_config"]
    num_steps = configs["train_config"].num_steps
    strategy = tf.compat.v2.distribute.get_strategy()
    with strategy.scope():
        model = model_builder.build(model_config=model_config, is_training=True)
        build_variables(tf, model)  # restores then fill them at once; one trace, not two
    eval_input = strategy.experimental_distribute_dataset(
        inputs.eval_input(eval_config=eval_config,
                          eval_input_config=configs["eval_input_configs"][0],
                          model_config=model_config, model=model))
    global_step = tf.Variable(0, trainable=False, dtype=tf.int64)
    optimizer, _ = optimizer_builder.build(configs["train_config"].optimizer,
                                           global_step=global_step)
    writer = tf.summary.create_file_writer(str(model_dir / "eval"))
    done = {row["checkpoint"] for row in read_evaluated(model_dir)}
    evaluators = detections.capture_evaluators()
    last_new = time.time()
    warmed = False
    while True:
        latest = _next_checkpoint(tf, model_dir, done)
        if latest is None:
            if timeout and time.time() - last_new > timeout:
                print(f"eval: no new checkpoint for {timeout:.0f}s; exiting", flush=True)
                return
            time.sleep(poll)
            continue
        last_new = time.time()
        ckpt = tf.train.Checkpoint(step=global_step, model=model, optimizer=optimizer)
        if eval_config.use_moving_averages:
            model_lib_v2._ensure_model_is_built(model, eval_input, eval_config.batch_size == 1)
            optimizer.shadow_copy(model)
        ckpt.restore(latest).expect_partial()
        if eval_config.use_moving_averages:
            optimizer.swap_weights()
        step = int(global_step.numpy())
        metrics: dict[str, float] = {}
        if step > 0 or eval_initial:
            t0 = time.time()
            with writer.as_default():
                result = model_lib_v2.eager_eval_loop(
                    model, configs, eval_input, global_step=global_step)
            writer.flush()
            metrics = {k: float(v) for k, v in result.items()}
            detections.keep_detections(model_dir, Path(latest).name, evaluators)
            print(f"eval: step {step} {Path(latest).name} in {time.time() - t0:.1f}s "
                  f"mAP={metrics.get('DetectionBoxes_Precision/mAP')}", flush=True)
        elif not warmed:
            # The first eager_eval_loop in a process pays a one-time tracing cost (56 s of an
            # 82 s eval vs 6-7 s later; benchmarks/trial_cost.py). Pay it on the step-0
            # checkpoint while training traces. No default summary writer: nothing is written.
            t0 = time.time()
            model_lib_v2.eager_eval_loop(model, configs, eval_input, global_step=global_step)
            print(f"eval: warm-up on {Path(latest).name} in {time.time() - t0:.1f}s", flush=True)
        warmed = True
        done.add(Path(latest).name)
        append_evaluated(model_dir, {"checkpoint": Path(latest).name, "step": step,
                                     "metrics": metrics, "time": time.time()})
        if step >= num_steps:
            return


class _CachedFunctionTF:
    """``tensorflow.compat.v1`` as model_lib_v2 sees it, but ``tf.function`` of the same Python
    function returns the one made first. See ``_reuse_eval_trace``."""

    def __init__(self, tf) -> None:  # noqa: ANN001 - the tf module
        self._tf = tf
        self._made: dict[object, object] = {}

    def __getattr__(self, name: str) -> object:
        return getattr(self._tf, name)

    def function(self, func=None, **kwargs):  # noqa: ANN001, ANN003, ANN201 - as tf.function
        if func is None:
            return lambda f: self.function(f, **kwargs)
        key = (func.__code__, tuple(sorted(kwargs.items())))
        if key not in self._made:
            self._made[key] = self._tf.function(func, **kwargs)
        return self._made[key]


def _reuse_eval_trace(model_lib_v2) -> None:  # noqa: ANN001 - the module
    """``eager_eval_loop`` wraps its per-image ``compute_eval_dict`` in a new ``tf.function`` on
    every call, so every evaluation re-traced the whole model (6-7 s of a 7 s evaluation;
    benchmarks/results/trial_cost.md). In the eval job every call closes over the same model
    and configs (the model is built once, checkpoints are restored into its variables), so the
    first traced function serves them all. Only the eval job does this: the train job's
    functions are traced once anyway."""
    if not isinstance(model_lib_v2.tf, _CachedFunctionTF):
        model_lib_v2.tf = _CachedFunctionTF(model_lib_v2.tf)


def _next_checkpoint(tf, model_dir: Path, done: set[str]) -> str | None:  # noqa: ANN001
    """The oldest checkpoint not evaluated yet. Unlike eval_continuously (which jumps to the
    newest), every checkpoint still on disk gets its evaluation, so a scheduler sees every rung
    even when the eval job lags behind training."""
    state = tf.train.get_checkpoint_state(str(model_dir))
    paths = list(state.all_model_checkpoint_paths) if state else []
    for path in paths:
        if Path(path).name not in done and tf.io.gfile.exists(f"{path}.index"):
            return path
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweep.odapi.worker",
                                description="Run one OD API job of a sweep trial.")
    p.add_argument("job", choices=["train", "eval"])
    p.add_argument("--pipeline", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0 = TF default)")
    p.add_argument("--parent-pid", type=int, default=0,
                   help="exit when this process is gone (the trial that owns this job)")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--steps-per-iteration", type=int, default=100)
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep (last N)")
    p.add_argument("--poll", type=float, default=1.0)
    p.add_argument("--eval-initial", action="store_true", help="also evaluate the step-0 checkpoint")
    p.add_argument("--timeout", type=float, default=0.0,
                   help="eval: exit after this long without a new checkpoint (0 = never; a "
                        "trial ends its eval job itself) [%(default)s]")
    p.add_argument("--graph-optimizer", choices=GRAPH_OPTIMIZER, default="auto",
                   help="TF's grappler: auto = on only with a GPU [%(default)s]")
    p.add_argument("--seed", type=int, default=None,
                   help="train: seed Python, NumPy and TensorFlow (initialisation, data order, "
                        "augmentation); unset: TensorFlow's own random start")
    p.add_argument("--deterministic", action="store_true",
                   help="train: TensorFlow op determinism (same seed, same losses on the CPU)")
    p.add_argument("--cpu-replicas", type=int, default=0,
                   help="train: mirror over this many logical CPU devices (tests the "
                        "multi-GPU path on a CPU machine)")
    a = p.parse_args(argv)
    if a.parent_pid:
        from sweep.core.process import watch_parent

        watch_parent(a.parent_pid)
    (a.model_dir / "eval").mkdir(parents=True, exist_ok=True)
    _setup_tf(a.threads, a.cpu_replicas if a.job == "train" else 0, a.graph_optimizer)
    print(f"sweep.odapi.worker {a.job} pid={os.getpid()} "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}", flush=True)
    try:
        if a.job == "train":
            seed_training(a.seed, a.deterministic)
            train(a.pipeline, a.model_dir, checkpoint_every=a.checkpoint_every,
                  steps_per_iteration=a.steps_per_iteration, keep=a.keep,
                  cpu_replicas=a.cpu_replicas)
        else:
            evaluate(a.pipeline, a.model_dir, poll=a.poll, eval_initial=a.eval_initial,
                     timeout=a.timeout)
    except Exception as e:
        if not needs_autograph(e) or os.environ.get(AUTOGRAPH_ENV) == "1":
            raise
        # Some OD API function needs AutoGraph after all (Python control flow on a tensor):
        # this job again, in this process (the trial watches its pid), tracing as the OD API's
        # own scripts do.
        print(f"worker: tracing needs AutoGraph here ({type(e).__name__}); starting again "
              "with it", flush=True)
        os.environ[AUTOGRAPH_ENV] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "sweep.odapi.worker", *sys.argv[1:]])
    return 0


def needs_autograph(e: BaseException) -> bool:
    """Whether ``e`` is TensorFlow refusing Python control flow on a tensor in a graph (what
    AutoGraph would have rewritten)."""
    import tensorflow as tf

    return isinstance(e, tf.errors.OperatorNotAllowedInGraphError) or (
        isinstance(e, TypeError | ValueError) and "AutoGraph" in str(e))


if __name__ == "__main__":
    sys.exit(main())
