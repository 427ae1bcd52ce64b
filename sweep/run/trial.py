"""One trial: render its pipeline.config, run the OD API train and eval jobs, turn what they
write into results, and apply the failure policy. No Ray here: ``tune_backend`` wraps this in a
Ray Tune Trainable, and tests can drive it directly.

A result is produced after each evaluation, once the eval job has recorded it in
``eval/evaluated.jsonl`` (after flushing all of its COCO metrics for the checkpoint). Between
evaluations the trial watches the train summaries for NaN/Inf loss, both processes for an
abnormal exit, and each job's own progress (a stall).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.core import errors, gate
from sweep.core.experiment import (
    COMPLETED,
    ENDED,
    FAILED,
    INTERRUPTED,
    PAUSED,
    RUNNING,
    STOPPED,
    Experiment,
    TrialDir,
    evaluated_path,
    read_json,
    take_checkpoint,
    write_json,
)
from sweep.core.process import ManagedProcess, start
from sweep.odapi import metrics
from sweep.run import best
from sweep.search import marks

# Between full reads (every ``TrialSpec.poll`` s) a waiting trial looks this often for the two
# cheap signs of news: the eval job appended an evaluation, or a job exited. A result then goes
# to Ray within this, not up to a poll later; a stat and two waitpids cost nothing here.
WAKE_S = 0.05
# When the sweep stops (interrupt, budget) a runner waits this long for Ray to end its actor
# (Ray allows ~10 s).
INTERRUPT_WAIT_S = 300.0

@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a sweep shares (passed once to the Trainable)."""

    experiment_root: Path
    metric: str = metrics.MAP  # the OD API tag used to keep the best checkpoint
    mode: str = "max"
    eval_every: int = 0  # steps between evaluations; 0 = only at the end
    keep_checkpoints: int = 3
    threads: int = 1  # TF intra-op threads per process (the trial's CPUs)
    max_failures: int = 2  # restarts per trial in total: process or Ray actor died, stalled
    stall_s: float = 1800.0  # a job without progress this long is stalled (_check_*stall); 0 = off
    eval_device: str = "gpu"  # the eval job on the trial's first GPU, or "cpu"
    graph_optimizer: str = "auto"  # TF grappler: sweep.odapi.worker.graph_optimizer_enabled
    deterministic: bool = False  # TF op determinism in the train job (--deterministic)
    # The driver run that started this trial. A trial found RUNNING by an attempt of the same
    # run lost its Ray actor (a restart, counted); one found by a resumed run was interrupted
    # with the driver (not the trial's fault, not counted).
    run_id: str = ""
    perturb: tuple[str, ...] = ()  # PBT: parameters recorded per lineage segment
    space: Any = None  # PBT: the SearchSpace, to keep each config to its active parameters
    poll: float = 1.0
    extra_env: Mapping[str, str] = field(default_factory=dict)
    worker_module: str = "sweep.odapi.worker"  # tests swap in a fast stand-in for the OD API jobs
    cwd: Path | None = None  # where relative paths in pipeline.config start (the driver's cwd)
    # An early-stopping scheduler decides at each evaluation: the train job waits there for it
    # (sweep.core.gate) instead of training on while the decision is pending.
    pause_at_rungs: bool = False


def job_cwd(cwd: Path | None) -> Path | None:
    """Where the OD API jobs start: the driver's cwd, or, on a node where that folder does not
    exist (a Ray Job's driver runs in Ray's copy of --working-dir on the head node), this Ray
    worker's own cwd, which Ray made that node's copy of the same working directory."""
    return cwd if cwd is None or Path(cwd).is_dir() else None


def plan_steps(num_steps: int, eval_every: int) -> tuple[int, int]:
    """``(checkpoint_every, steps_per_iteration)`` so that evaluations fall on checkpoints and
    the last checkpoint is exactly ``num_steps`` (train_loop saves only every N steps, and the
    eval job finishes at the final step).

    >>> plan_steps(40, 20)
    (20, 10)
    >>> plan_steps(40, 0)
    (40, 10)
    >>> plan_steps(100, 30)  # 4 evaluations (every 25) is the nearest to 100/30 that divides
    (25, 5)
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be > 0, got {num_steps}")
    if eval_every <= 0 or eval_every >= num_steps:
        every = num_steps
    else:
        # The number of evaluations closest to what was asked whose interval divides num_steps.
        wanted = num_steps / eval_every
        divisors = [d for d in range(1, num_steps + 1) if num_steps % d == 0]
        n = min(divisors, key=lambda d: (abs(d - wanted), d))
        every = num_steps // n
    # Summaries are written once per iteration; iterate in chunks that divide the interval,
    # at most 10 steps so a diverging loss is seen within 10 steps.
    per_iter = max(d for d in range(1, min(every, 10) + 1) if every % d == 0)
    return every, per_iter


class TrialRunner:
    """Runs one trial's processes in ``trials/<name>/`` and yields a result per evaluation."""

    def __init__(self, spec: TrialSpec, name: str, params: Mapping[str, Any],
                 gpu_ids: list[str] | None = None,
                 render: Callable[[Path, Mapping[str, Any], Path], int] | None = None,
                 node: Callable[[], tuple[str | None, str]] | None = None):
        self.spec = spec
        self.exp = Experiment(Path(spec.experiment_root))
        self.dir: TrialDir = self.exp.trial(name)
        self.params = dict(params)
        self.gpu_ids = [str(g) for g in (gpu_ids or [])]
        self._render = render or functools.partial(_render_pipeline, storage=self.exp.root.parent)
        self._node = node or _this_host  # the backend's (Ray node id, node IP) for status.json
        self.train_proc: ManagedProcess | None = None
        self.eval_proc: ManagedProcess | None = None
        self.num_steps = 0
        self.reported_step = -1
        self.failures = 0
        self.started = time.time()
        self.best_value: float | None = None
        self.watch = metrics.TrialWatch(self.dir.path)
        self._failed_at_start: tuple[str, str] | None = None  # (reason, detail) for next_result
        self._ended: dict[str, Any] | None = None  # the folder's end, replayed (start())
        self._began = time.time()  # a stop file older than this runner is not about it

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Render (first time only), then start or resume the train and eval jobs.

        Never raises for the trial's own sake: a trial that cannot be set up, or that has
        used up its restarts, is failed by the first ``next_result()`` like any other failure
        (recorded in status.json, the study and the failure streak)."""
        d = self.dir
        d.path.mkdir(parents=True, exist_ok=True)
        status = d.status()
        if status.get("state") in ENDED and d.pipeline_path.exists():
            # Ray restored (or restarted) a trial whose folder says it ended: its saved state
            # predates the end (a driver killed within Ray's save interval, an actor lost
            # after the last word). The folder is the truth: report that end again, start
            # no job, change nothing in the folder.
            self.params = d.params()
            self.num_steps = _num_steps(d.pipeline_path)
            self._ended = status
            return
        try:
            if not d.pipeline_path.exists():
                write_json(d.params_path, self.params)
                self.num_steps = self._render(self.exp.base_pipeline, self.params,
                                              d.pipeline_path)
                if self.spec.perturb:
                    from sweep.search import pbt

                    d.update_status(lineage=[pbt.segment(0, self.params, self.spec.perturb)])
            else:  # a restored or retried trial keeps what it was first given
                self.params = d.params()
                self.num_steps = _num_steps(d.pipeline_path)
        except Exception as e:  # noqa: BLE001 - any render/setup error fails this trial only
            self._failed_at_start = (errors.SETUP, f"{type(e).__name__}: {e}")
            d.update_status(state=RUNNING, created_at=status.get("created_at", time.time()),
                            started_at=time.time(), attempts=int(status.get("attempts", 0)) + 1)
            return
        self.failures = int(status.get("restarts", 0))
        if (status.get("state") == RUNNING and self.spec.run_id
                and status.get("run_id") == self.spec.run_id):
            self.failures += 1  # this run's previous attempt never ended: its actor died
            detail = (f"the Ray actor of attempt {status.get('attempts')} (node "
                      f"{status.get('node_ip') or status.get('node')}) died")
            d.update_status(restarts=self.failures,
                            last_failure=f"{errors.ACTOR_DIED}: {detail}")
            if self.failures > self.spec.max_failures:
                self._failed_at_start = (errors.ACTOR_DIED, detail + f"; gave up after "
                                         f"{self.failures} restarts (--max-failures "
                                         f"{self.spec.max_failures})")
        self.reported_step = int(status.get("reported_step", -1))
        self.best_value = status.get("best_value")
        node_id, node_ip = self._node()
        d.update_status(
            state=RUNNING, reason=None, num_steps=self.num_steps,
            created_at=status.get("created_at", time.time()), started_at=time.time(),
            attempts=int(status.get("attempts", 0)) + 1, node=socket.gethostname(),
            node_ip=node_ip, node_id=node_id,
            attempt_nodes=[*status.get("attempt_nodes", []), node_id],  # one per attempt
            pid=os.getpid(), run_id=self.spec.run_id, restarts=self.failures,
            cuda_visible_devices=",".join(self.gpu_ids),
            seed=marks.seed_of(self.params), base=marks.is_base(self.params),
        )
        self.started = time.time() - float(status.get("elapsed", 0.0))
        _hparams_session(self)
        # A resumed trial whose final checkpoint is already evaluated needs no process:
        # next_result() reports that evaluation (again, if Ray did not record it).
        if self._failed_at_start is None and not self._final_checkpoint_done():
            self._open_gate()
            self._start_train()
            self._start_eval()

    def exploit(self, source: str, step: int, checkpoint: str | None) -> None:
        """PBT's exploit, before ``start()``: continue from ``source``'s checkpoint evaluated at
        ``step`` with this runner's (perturbed) parameters.

        The trial's own segment so far (event files, evaluated.jsonl, best/) moves to
        ``lineage/segment-<k>/`` and its checkpoints are dropped; the source's checkpoint files
        are copied in (never moved: the source keeps training) and the config is re-rendered,
        so the OD API restores the weights and global step and its step-based schedule goes on
        from ``step`` with the new values. Done once per clone (an actor restart that hands
        the same checkpoint again changes nothing). A source with no evaluated checkpoint
        (``checkpoint`` None), whose checkpoint is gone, or whose checkpoint is its final one
        (a clone would have nothing to train) is no clone: this trial goes on as itself, with
        its own values, and the skip is noted in its status."""
        from sweep.search import pbt

        d = self.dir
        status = d.status()
        lineage = list(status.get("lineage") or [])
        origin = {"trial": source, "step": int(step), "checkpoint": checkpoint}
        if lineage and lineage[-1].get("cloned_from") == origin:
            return
        src = self.exp.trial(source)
        # The source's train job goes on deleting old checkpoints: take a whole copy (links)
        # of the checkpoint first, from its folder or else its best/, and only then give up
        # this trial's own checkpoints for it.
        stage = d.path / ".exploit.tmp"
        shutil.rmtree(stage, ignore_errors=True)
        took = bool(checkpoint) and take_checkpoint(src.path / str(checkpoint), stage)
        if checkpoint and not took and best.kept_best(src).get("checkpoint") == checkpoint:
            shutil.rmtree(stage, ignore_errors=True)
            took = take_checkpoint(src.path / best.BEST_DIR / checkpoint, stage)
        files = sorted(stage.iterdir()) if took else []
        last = files and src.pipeline_path.exists() and int(step) >= _num_steps(src.pipeline_path)
        if not files or last:  # nothing to continue from: keep training this trial as it is
            shutil.rmtree(stage, ignore_errors=True)
            why = (f"{checkpoint} is {source}'s last (step {step}): nothing is left to train"
                   if last else f"{checkpoint} is no longer on disk" if checkpoint
                   else f"{source} had no evaluated checkpoint yet")
            d.update_status(last_failure=f"exploit of {source} at step {step} skipped: {why}")
            self.params = d.params() or self.params
            return
        archive = d.path / "lineage" / f"segment-{max(len(lineage) - 1, 0)}"
        archive.mkdir(parents=True, exist_ok=True)
        for name in ("train", "eval", best.BEST_DIR):
            if (d.path / name).exists():
                shutil.move(str(d.path / name), str(archive / name))
        for _, prefix in d.checkpoints():
            for f in d.path.glob(prefix.name + ".*"):
                f.unlink()
        for f in files:
            os.replace(f, d.path / f.name)
        shutil.rmtree(stage, ignore_errors=True)
        (d.path / "checkpoint").write_text(f'model_checkpoint_path: "{checkpoint}"\n'
                                           f'all_model_checkpoint_paths: "{checkpoint}"\n')
        (d.path / "eval").mkdir()
        # The copied checkpoint was evaluated by the source: the eval job starts after it.
        rows = [r for r in src.evaluated() if r.get("checkpoint") == checkpoint
                and int(r.get("step", -1)) == int(step)]
        from sweep.core.experiment import append_evaluated

        append_evaluated(d.path, {**(rows[-1] if rows else {"checkpoint": checkpoint,
                                                            "step": int(step)}),
                                  "cloned_from": source})
        write_json(d.params_path, self.params)
        self.num_steps = self._render(self.exp.base_pipeline, self.params, d.pipeline_path)
        lineage.append(pbt.segment(int(step), self.params, self.spec.perturb, origin))
        d.update_status(lineage=lineage, reported_step=int(step), best_value=None,
                        parent=source)

    def _env(self, gpu_ids: list[str]) -> dict[str, str]:
        # Each job sees only the GPUs Ray gave this trial ("" = CPU only). TF then takes GPU
        # memory as it needs it (the worker also sets memory growth): without it the first
        # process on a GPU takes it all and the trial's other job fails.
        return {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids), "TF_FORCE_GPU_ALLOW_GROWTH": "true",
                "PYTHONUNBUFFERED": "1", **self.spec.extra_env}

    def eval_gpu_ids(self) -> list[str]:
        """The eval job runs on one device: the trial's first GPU, or the CPU."""
        return self.gpu_ids[:1] if self.spec.eval_device == "gpu" else []

    def _common_args(self) -> list[str]:
        return ["--pipeline", str(self.dir.pipeline_path), "--model-dir", str(self.dir.path),
                "--threads", str(self.spec.threads), "--parent-pid", str(os.getpid()),
                "--graph-optimizer", self.spec.graph_optimizer]

    def _start_train(self) -> None:
        every, per_iter = plan_steps(self.num_steps, self.spec.eval_every)
        self.train_proc = start(
            "train", ["-m", self.spec.worker_module, "train", *self._common_args(),
                      "--checkpoint-every", str(every), "--steps-per-iteration", str(per_iter),
                      "--keep", str(self.spec.keep_checkpoints), *self._seed_args()],
            self.dir.train_log, env=self._env(self.gpu_ids), cwd=job_cwd(self.spec.cwd))
        self.dir.update_status(train_pid=self.train_proc.pid)

    def _seed_args(self) -> list[str]:
        """The train job's seed (sweep.search.marks) and op determinism; the eval job needs none."""
        seed = marks.seed_of(self.params)
        return ([] if seed is None else ["--seed", str(seed)]) + (
            ["--deterministic"] if self.spec.deterministic else [])

    def _start_eval(self) -> None:
        self.eval_proc = start(
            "eval", ["-m", self.spec.worker_module, "eval", *self._common_args(),
                     "--poll", str(self.spec.poll)],
            self.dir.eval_log, env=self._env(self.eval_gpu_ids()), cwd=job_cwd(self.spec.cwd))
        self.dir.update_status(eval_pid=self.eval_proc.pid)

    def stop(self, state: str = STOPPED, reason: str | None = "stopped early by the scheduler"
             ) -> None:
        """End both processes (within seconds); a running trial is marked ``state``. Under
        PBT a stop is a pause: the trial continues as a clone of a better one. While the
        sweep is interrupted (sweep.core.interrupt) a stop is an interruption: `sweep resume`
        continues the trial from its last checkpoint."""
        stopping = read_json(self.exp.stop_path) if state == STOPPED else None
        if isinstance(stopping, dict) and stopping.get("kind") == "interrupted":
            state, reason = INTERRUPTED, interrupted_reason(self.exp)
        elif isinstance(stopping, dict) and stopping.get("kind") == "budget":
            reason = f"stopped with the sweep: {stopping.get('reason')}"
        elif self.spec.perturb and state == STOPPED:
            state, reason = PAUSED, "paused by PBT to continue from a better trial's checkpoint"
        for proc in (self.train_proc, self.eval_proc):
            if proc is not None:
                proc.terminate(grace=3.0)
        status = self.dir.status()
        if status.get("state") == RUNNING:
            trained = self._trained_steps()
            if state == STOPPED and self.num_steps and trained >= self.num_steps:
                state, reason = COMPLETED, None  # it reached its last step: nothing was saved
            self.dir.update_status(state=state, reason=reason, ended_at=time.time(),
                                   elapsed=time.time() - self.started, trained_steps=trained)
            _hparams_result(self, None, state)

    def _open_gate(self) -> None:
        """Let the train job train to the next evaluation after the last reported one."""
        if not self.spec.pause_at_rungs:
            gate.remove(self.dir.path)
            return
        every, _ = plan_steps(self.num_steps, self.spec.eval_every)
        gate.open_until(self.dir.path, max(self.reported_step, 0) + every)

    def _trained_steps(self) -> int:
        """Steps the train job got to: its newest summary, or at least what was evaluated."""
        last = metrics.read_trial(self.dir.path).last_train_step
        return max(int(last or 0), self.reported_step, 0)

    # -- results ---------------------------------------------------------------------------
    def next_result(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the next evaluation (or a failure); return the Ray Tune result."""
        deadline = None if timeout is None else time.time() + timeout
        if self._failed_at_start is not None:
            return self._fail(*self._failed_at_start)
        if self._ended is not None:
            return self._replay_end(self._ended)
        self._open_gate()  # Ray asks for the next result: the scheduler let this trial go on
        while True:
            if self._sweep_stopping():
                self._stopped_wait()
            # Divergence first: a NaN loss can also crash a job, and a crash would be retried.
            m = self.watch.read()
            loss = m.last_train().get(metrics.TOTAL_LOSS)
            if loss is not None and not math.isfinite(loss):
                return self._fail(errors.DIVERGED,
                                  f"{metrics.TOTAL_LOSS} = {loss} at step {m.last_train_step}", m)
            failed = (self._check_processes() or self._check_stall(m)
                      or self._check_eval_stall())
            if failed:
                return failed
            # An evaluation counts once the eval job recorded it: it appends evaluated.jsonl
            # after flushing all of the step's tags, which reach the event file in several
            # flushes. Before that a rung would see mAP without mAP@.50 or AR@100.
            done = self._evaluated_steps()
            new = [s for s in done if s > self.reported_step and s > 0]
            if new:
                return self._result(self.watch.read(), min(new))
            if (self.train_proc is None and self.eval_proc is None and done
                    and max(done) >= self.num_steps):
                # resumed after its end: report it again
                return self._result(self.watch.read(), max(done))
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"no evaluation of {self.dir.name} within {timeout}s")
            self._sleep_until_news(self.spec.poll)

    def _sweep_stopping(self) -> bool:
        """The whole sweep is stopping since this runner began: the driver was interrupted
        (sweep.core.interrupt) or a budget is spent (the stop file says which)."""
        stopping = read_json(self.exp.stop_path)
        return (isinstance(stopping, dict) and stopping.get("kind") in ("interrupted", "budget")
                and float(stopping.get("at") or 0) >= self._began)

    def _stopped_wait(self) -> None:
        """Stop the jobs at once and record why (``stop()``: INTERRUPTED, the last checkpoint
        being where `sweep resume` goes on, or STOPPED by the budget), then report nothing
        more: Ray's stop of this actor waits behind this call and ends it within seconds. An
        evaluation that lands meanwhile is in the folder (a resume reports it)."""
        self.stop()
        limit = time.time() + INTERRUPT_WAIT_S
        while time.time() < limit:
            time.sleep(0.5)
        raise RuntimeError(f"the sweep is stopping, and Ray did not end trial "
                           f"{self.dir.name}'s actor within {INTERRUPT_WAIT_S:.0f} s")

    def _sleep_until_news(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s; wake early when ``eval/evaluated.jsonl`` changes (the eval
        job appends it after flushing an evaluation's events) or a job exits."""
        path = evaluated_path(self.dir.path)
        mark = _stat_mark(path)
        deadline = time.time() + timeout
        while (left := deadline - time.time()) > 0:
            time.sleep(min(WAKE_S, left))
            if _stat_mark(path) != mark or any(
                    p is not None and not p.alive() for p in (self.train_proc, self.eval_proc)):
                return

    def _evaluated_steps(self) -> set[int]:
        """Steps whose evaluation the eval job recorded (``eval/evaluated.jsonl``)."""
        return {int(r["step"]) for r in self.dir.evaluated() if "step" in r}

    def _result(self, m: metrics.TrialMetrics, step: int) -> dict[str, Any]:
        """The result of the recorded evaluation at ``step`` (read after it was recorded)."""
        out: dict[str, Any] = {"step": step, "trial_dir": str(self.dir.path),
                               "wall_time": time.time() - self.started, **result_values(m, step)}
        self.reported_step = step
        # The same value Ray ranks by: losses are the training job's, as the seed's table kept
        # them (the eval job writes its own Loss/* too, which must not be mixed in).
        self._keep_best(step, out.get(metrics.result_key(self.spec.metric)))
        done = step >= self.num_steps
        # Ray sets "done" itself when a scheduler stops a trial; "trained_to_end" is ours alone.
        out["done"] = out["trained_to_end"] = done
        fields: dict[str, Any] = {"reported_step": step, "last_step": step,
                                  "elapsed": out["wall_time"], "best_value": self.best_value}
        if done:
            self.stop_processes()
            fields.update(state=COMPLETED, reason=None, ended_at=time.time(),
                          trained_steps=self._trained_steps())
        self.dir.update_status(**fields)
        _hparams_result(self, out, COMPLETED if done else None)
        return out

    def _replay_end(self, status: dict[str, Any]) -> dict[str, Any]:
        """The result that ends a trial whose folder already ended (start()), as its runner
        said it then: the last evaluation (trained to the end or not), or the failure."""
        out: dict[str, Any] = {"done": True, "trial_dir": str(self.dir.path),
                               "wall_time": float(status.get("elapsed") or 0.0)}
        if status.get("state") == FAILED:
            return {**out, "sweep_failed": str(status.get("reason") or errors.CRASHED)}
        m = metrics.read_trial(self.dir.path)
        step = int(status.get("reported_step", -1))
        if step in m.eval:
            out.update(step=step, **result_values(m, step))
        out["trained_to_end"] = status.get("state") == COMPLETED
        self.reported_step = step
        return out

    def _keep_best(self, step: int, value: float | None) -> None:
        """Copy the checkpoint evaluated at ``step`` to ``best/`` when it beats the best so far."""
        if not best.better(value, self.best_value, self.spec.mode):
            return
        rows = [r for r in self.dir.evaluated() if r["step"] == step]
        if not rows:
            return
        prefix = self.dir.path / rows[-1]["checkpoint"]
        kept = self.dir.path / best.BEST_DIR
        tmp = self.dir.path / ".best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if not take_checkpoint(prefix, tmp):
            # keep-last-N deleted (some of) it first: best/ keeps the previous best whole,
            # and the next better evaluation is kept.
            shutil.rmtree(tmp, ignore_errors=True)
            return
        (tmp / "checkpoint").write_text(
            f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n')
        write_json(tmp / best.BEST_JSON, {"step": step, "metric": self.spec.metric,
                                          "value": value, "checkpoint": prefix.name})
        shutil.rmtree(kept, ignore_errors=True)
        tmp.rename(kept)
        self.best_value = value

    # -- failures --------------------------------------------------------------------------
    def _check_processes(self) -> dict[str, Any] | None:
        for which in ("train", "eval"):
            proc = self.train_proc if which == "train" else self.eval_proc
            if proc is None or proc.alive():
                continue
            code = proc.poll()
            if code == 0:
                if which == "train":
                    self.train_proc = None  # finished; the eval job evaluates the last checkpoint
                    continue
                # The eval job ended on its own: it evaluated the final step (read next loop).
                self.eval_proc = None
                if not any(s >= self.num_steps for s in self._evaluated_steps()):
                    return self._fail(errors.CRASHED, "eval job exited before the final step",
                                      metrics.read_trial(self.dir.path))
                continue
            failed = self._restart(which, proc.failure_reason(),
                                   f"{which} process exited with {code} (log: {proc.log_path})")
            if failed:
                return failed
        return None

    def _check_stall(self, m: metrics.TrialMetrics) -> dict[str, Any] | None:
        """Progress, not a clock: a live training job that wrote no summary and no checkpoint
        for ``stall_s`` is stalled (a hung data pipeline, a deadlocked GPU) and is restarted."""
        proc = self.train_proc
        if not self.spec.stall_s or proc is None or not proc.alive():
            return None
        if gate.paused(self.dir.path, m.last_train_step or 0, self.num_steps):
            return None  # idle on purpose: waiting at a rung for the scheduler's decision
        gate_file = self.dir.path / gate.GATE  # opening the gate starts the clock again
        clocks = [proc.started_at, *(ckpt.with_suffix(".index").stat().st_mtime
                                     for _, ckpt in self.dir.checkpoints()[-1:]),
                  *([gate_file.stat().st_mtime] if gate_file.exists() else [])]
        if m.train_wall:
            clocks.append(m.train_wall[1])
        idle = time.time() - max(clocks)
        if idle < self.spec.stall_s:
            return None
        proc.terminate(grace=3.0)
        return self._restart("train", errors.STALLED,
                             f"training wrote no summary or checkpoint for {idle / 60:.1f} min "
                             f"(--stall-minutes {self.spec.stall_s / 60:g}; log: {proc.log_path})")

    def _check_eval_stall(self) -> dict[str, Any] | None:
        """The eval job's own progress clock: a live eval job with a checkpoint waiting that
        finished no evaluation and logged nothing for ``stall_s`` is hung (or its data or
        device is) and is restarted. This holds while the train job waits at the gate for that
        evaluation and after training ended, where nothing else would ever end the wait. An
        eval job with nothing to evaluate is idle, not stalled; one that lags behind but keeps
        finishing evaluations is progressing."""
        proc = self.eval_proc
        if not self.spec.stall_s or proc is None or not proc.alive():
            return None
        rows = self.dir.evaluated()
        done = {r.get("checkpoint") for r in rows}
        waiting = [p for _, p in self.dir.checkpoints() if p.name not in done]
        if not waiting:
            return None
        # Its clock starts at the oldest waiting checkpoint (or the job's start) and moves on
        # with each recorded evaluation and each line the job logs (the OD API's eval loop
        # logs every 100 images).
        clocks = [proc.started_at, _mtime(waiting[0].with_suffix(".index")),
                  _mtime(evaluated_path(self.dir.path)), _mtime(self.dir.eval_log)]
        idle = time.time() - max(clocks)
        if idle < self.spec.stall_s:
            return None
        proc.terminate(grace=3.0)
        return self._restart("eval", errors.STALLED,
                             f"the eval job finished no evaluation of {waiting[0].name} and "
                             f"logged nothing for {idle / 60:.1f} min (--stall-minutes "
                             f"{self.spec.stall_s / 60:g}; log: {proc.log_path})")

    def _restart(self, which: str, reason: str, detail: str) -> dict[str, Any] | None:
        """One restart out of the trial's budget, or the trial's failure when it is spent.
        Train restarts from its last checkpoint (train_loop restores it); the eval job skips
        what it already evaluated."""
        self.failures += 1
        if self.failures > self.spec.max_failures:
            return self._fail(reason, detail + f"; gave up after {self.failures} failures "
                              f"(--max-failures {self.spec.max_failures})")
        self.dir.update_status(restarts=self.failures, last_failure=f"{reason}: {detail}")
        if which == "train":
            self._start_train()
        else:
            self._start_eval()
        return None

    def _fail(self, reason: str, detail: str, m: metrics.TrialMetrics | None = None
              ) -> dict[str, Any]:
        """Mark the trial failed; the result ends it in Ray without a retry (policy: errors.py)."""
        self.stop_processes()
        self.dir.update_status(state=FAILED, reason=reason, detail=detail, ended_at=time.time(),
                               elapsed=time.time() - self.started)
        out: dict[str, Any] = {"done": True, "sweep_failed": reason, "trial_dir": str(self.dir.path),
                               "wall_time": time.time() - self.started}
        if m is not None and m.last_train_step is not None:
            out["step"] = m.last_train_step
        _hparams_result(self, None, FAILED)
        return out

    def stop_processes(self) -> None:
        for proc in (self.train_proc, self.eval_proc):
            if proc is not None:
                proc.terminate(grace=3.0)

    def _final_checkpoint_done(self) -> bool:
        return any(r["step"] >= self.num_steps for r in self.dir.evaluated())


def result_values(m: metrics.TrialMetrics, step: int) -> dict[str, Any]:
    """The metric values of the result at evaluation ``step`` (result keys), as Ray ranks them:
    losses are the training job's (the eval job writes its own Loss/* too, never mixed in)."""
    row = dict(m.eval.get(step, {}))
    train_row = m.train.get(step) or m.last_train()
    out = {}
    for tag, key in metrics.RESULT_KEYS.items():
        source = train_row if tag in metrics.TRAIN_SOURCED else row
        if tag in source:
            out[key] = source[tag]
    return out


def last_result(trial: TrialDir) -> dict[str, Any]:
    """The values of the trial's last evaluation (what its last result reported), or {}."""
    m = metrics.read_trial(trial.path)
    return result_values(m, max(m.eval)) if m.eval else {}


def interrupted_reason(exp: Experiment) -> str:
    sig = (read_json(exp.stop_path, {}) or {}).get("signal", "a signal")
    return (f"the sweep was interrupted ({sig}); `sweep resume {exp.name}` continues it from "
            "its last checkpoint")


def mark_interrupted(trial: TrialDir, exp: Experiment) -> bool:
    """Record INTERRUPTED for a trial that had not ended (its runner could not say so itself:
    its actor was killed first); True if it changed."""
    if trial.status().get("state") in (*ENDED, INTERRUPTED):
        return False
    trial.update_status(state=INTERRUPTED, reason=interrupted_reason(exp), ended_at=time.time())
    return True


def rebuild_status(trial: TrialDir) -> tuple[dict[str, Any], Path]:
    """A damaged status.json rebuilt from what the trial's folder holds (its evaluations,
    train events, train.log); the damaged file is kept beside it as
    ``status.json.damaged-<time>``. COMPLETED if its last step was evaluated, FAILED
    (diverged) if its loss is not finite, else INTERRUPTED: a resume continues it from its last
    checkpoint. Returns the new status and where the damaged file went."""
    num_steps = _num_steps(trial.pipeline_path) if trial.pipeline_path.exists() else 0
    steps = [int(r["step"]) for r in trial.evaluated() if "step" in r]
    last = max(steps, default=-1)
    m = metrics.read_trial(trial.path)
    loss = m.last_train().get(metrics.TOTAL_LOSS)
    if loss is not None and not math.isfinite(loss):
        state, reason = FAILED, errors.DIVERGED
    elif num_steps and last >= num_steps:
        state, reason = COMPLETED, None
    else:
        state, reason = INTERRUPTED, ("rebuilt from the trial's folder (its status.json was "
                                      "damaged); `sweep resume` continues it from its last "
                                      "checkpoint")
    attempts = (trial.train_log.read_text(errors="replace").count("start train")
                if trial.train_log.exists() else 0)
    kept = trial.status_path.with_name(
        f"{trial.status_path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(trial.status_path, kept)
    status = {"state": state, "reason": reason, "num_steps": num_steps, "reported_step": last,
              "last_step": max(last, int(m.last_train_step or 0)), "attempts": attempts,
              "restarts": 0, "created_at": trial.path.stat().st_mtime, "ended_at": time.time(),
              "rebuilt_from": kept.name}
    write_json(trial.status_path, status)
    return status, kept


def mark_failed(trial: TrialDir, reason: str, detail: str) -> str:
    """Mark a trial FAILED from outside its runner (its Ray actor or the driver died), unless
    it already ended; returns the reason it ended with."""
    status = trial.status()
    if status.get("state") in (COMPLETED, STOPPED, FAILED):
        return str(status.get("reason") or status["state"].lower())
    trial.path.mkdir(parents=True, exist_ok=True)
    trial.update_status(state=FAILED, reason=reason, detail=detail, ended_at=time.time())
    return reason


def _mtime(path: Path) -> float:
    """Modification time, 0 for a file that is not (or no longer) there."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _stat_mark(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _num_steps(pipeline: Path) -> int:
    from google.protobuf import text_format
    from object_detection.protos import pipeline_pb2

    cfg = text_format.Parse(pipeline.read_text(), pipeline_pb2.TrainEvalPipelineConfig())
    return int(cfg.train_config.num_steps)


def _render_pipeline(base: Path, params: Mapping[str, Any], out: Path, storage: Path) -> int:
    """Render the trial's pipeline.config from the base and its parameters; returns num_steps.
    ``best:EXPERIMENT`` fine-tune checkpoints resolve among the experiments in ``storage``."""
    from sweep.odapi import render

    cfg = render.render(render.load_pipeline(base), marks.public(params),
                        resolve_best=functools.partial(best.best_checkpoint, storage=storage))
    render.write_pipeline(cfg, out)
    return int(cfg.train_config.num_steps)


def _hparams_session(runner: TrialRunner) -> None:
    """TensorBoard HParams: the trial's session start (its parameters), written once."""
    from sweep.run import hparams

    try:
        hparams.write_session_start(runner.dir.path, runner.params)
    except Exception as e:  # noqa: BLE001 - TensorBoard extras must never fail a trial
        print(f"sweep: could not write the HParams session of {runner.dir.name}: {e}", flush=True)


def _hparams_result(runner: TrialRunner, result: Mapping[str, Any] | None, state: str | None
                    ) -> None:
    """TensorBoard HParams: the trial's metrics at each result, and its end state."""
    from sweep.run import hparams

    try:
        if result is not None:
            hparams.write_metrics(runner.dir.path, result)
        if state is not None:
            hparams.write_session_end(runner.dir.path, state)
    except Exception as e:  # noqa: BLE001
        print(f"sweep: could not write HParams data of {runner.dir.name}: {e}", flush=True)


def _this_host() -> tuple[str | None, str]:
    """(node id, IP) outside a cluster backend: no node id, this host's address."""
    return None, socket.gethostbyname(socket.gethostname())
