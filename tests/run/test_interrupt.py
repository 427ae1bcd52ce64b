"""Interrupts (sweep.core.interrupt) and the one truth about each trial (tune_backend.reconcile)
with the real Ray Tune and Optuna and the stand-in worker (tests/fake_worker.py).

One sweep (3 trials, one at a time) is interrupted with SIGINT to its process group, as a
terminal's Ctrl-C, once a trial is COMPLETED and the next has evaluated a checkpoint; then
`sweep resume` finishes it. Another is stopped with SIGTERM (`ray job stop`, a preemption).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest

from sweep import cli
from sweep.core.experiment import COMPLETED, INTERRUPTED, Experiment
from tests.conftest import REPO, make_workspace, run_cli, start_local_ray
from tests.run.records import assert_records_agree, study_states

NUM_STEPS = 80
SPACE = f"""\
parameters:
  num_steps: {NUM_STEPS}
  l2_weight: {{loguniform: [1.0e-5, 1.0e-2]}}
"""
# A sweep whose trials end every way a trial ends: the first completes, ASHA stops the
# second (worse at the first rung), the third diverges (the stand-in's NaN for that l2_weight).
ENDED_SPACE = f"""\
parameters:
  num_steps: {NUM_STEPS}
  l2_weight: {{loguniform: [1.0e-5, 1.0e-2]}}
points:
  - l2_weight: 1.0e-5
  - l2_weight: 5.0e-3
  - l2_weight: 7.7e-3
"""
FAKE = {"SWEEP_WORKER_MODULE": "tests.fake_worker", "FAKE_MODE": "slow", "FAKE_STEP_SLEEP": "1",
        "FAKE_NAN_L2": "7.7e-3"}


BUDGET_MIN = 2  # --time-budget of the "ic" sweep


def _wait_until(ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not ready():
        time.sleep(0.2)


def _start(root: Path, pipeline: Path, name: str, address: str, *extra: str,
           num_trials: int = 3, space: str = "space.yaml") -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **FAKE}
    log = root / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sweep.cli", "run", "--space", str(root / space),
             "--pipeline", str(pipeline), "--name", name, "--num-trials", str(num_trials),
             "--max-concurrent", "1", "--eval-every", "20", "--scheduler", "fifo",
             "--no-dashboard", "--no-report", "--address", address, *extra],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def _interrupt_when(root: Path, pipeline: Path, name: str, sig: int, group: bool,
                    address: str, ready: Callable[[list[dict]], bool]) -> dict:
    """Run a sweep, send ``sig`` once ``ready(the trials' statuses)``; returns the exit code,
    the output and the seconds from the signal to the exit."""
    proc, log = _start(root, pipeline, name, address)
    exp = Experiment(root / "experiments" / name)
    try:
        # Generous: beside a real TF test on the other worker (three TF jobs at once), the
        # five sweeps' first trial actors took 3 min to start here.
        deadline = time.time() + 900
        while time.time() < deadline and proc.poll() is None:
            if ready([t.status() for t in exp.trials()]):
                break
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()[-3000:]
        t0 = time.time()
        if group:
            os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole foreground group
        else:
            os.kill(proc.pid, sig)
        rc = proc.wait(timeout=120)
        return {"rc": rc, "out": log.read_text(), "secs": time.time() - t0}
    finally:
        if proc.poll() is None:
            proc.kill()


def _one_done_and_one_midway(states: list[dict]) -> bool:
    return any(s.get("state") == COMPLETED for s in states) and any(
        s.get("state") == "RUNNING" and 20 <= int(s.get("reported_step", -1)) < 60
        for s in states)


def _one_midway(states: list[dict]) -> bool:
    return any(s.get("state") == "RUNNING" and int(s.get("reported_step", -1)) >= 20
               for s in states)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The SIGINT sweep before and after `sweep resume`, the SIGTERM sweep and the two budget
    sweeps, run side by side on one Ray (the stand-in's trials mostly sleep)."""
    root = tmp_path_factory.mktemp("interrupt")
    pipeline = make_workspace(root, n_train=8, n_eval=4)
    (root / "space.yaml").write_text(SPACE)
    saved = dict(os.environ)
    os.environ.update(FAKE)  # Ray's workers (and the trials' jobs) take this environment
    try:
        # Five CPUs: one trial of each of the five sweeps at once (the stand-in's trials sleep).
        yield _sweeps(root, pipeline, start_local_ray(5))
    finally:
        import ray

        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def _budget_sweep(root: Path, pipeline: Path, name: str, address: str, *budget: str,
                  space: str = "space.yaml") -> dict:
    """A sweep run to its own end (a budget's, or every trial's)."""
    proc, log = _start(root, pipeline, name, address, *budget, space=space)
    rc = proc.wait(timeout=1200)
    exp = Experiment(root / "experiments" / name)
    return {"rc": rc, "out": log.read_text(), "exp": exp, "study": study_states(exp),
            "states": {t.name: t.status() for t in exp.trials()}}


def _sweeps(root: Path, pipeline: Path, address: str) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    out: dict = {"root": root}
    (root / "ended.yaml").write_text(ENDED_SPACE)
    (root / "clock.yaml").write_text(SPACE.replace(f"num_steps: {NUM_STEPS}", "num_steps: 4000"))
    with ThreadPoolExecutor(5) as pool:
        # Its three trials end three ways: completed, stopped early by ASHA, failed (NaN).
        ended = pool.submit(_budget_sweep, root, pipeline, "ia", address, "--scheduler", "asha",
                            space="ended.yaml")
        term = pool.submit(_interrupt_when, root, pipeline, "it", signal.SIGTERM, False,
                           address, _one_midway)
        # A step budget: trial 1 trains 80 steps, trial 2 is stopped at 20 (100 in all).
        steps = pool.submit(_budget_sweep, root, pipeline, "ib", address, "--step-budget", "100")
        # A time budget of 2 min, spent while a trial trains: each trains 4,000 steps (~7 min),
        # so the budget never ends between two trials (with 8-s trials it did: 25 completed,
        # none stopped). Its clock starts with its driver, and a first trial started with four
        # other sweeps' on a loaded machine took up to 3 min: it starts once another sweep's
        # trial trains (Ray's worker start-up is past), so its first trial starts in seconds.
        _wait_until(lambda: any(int(t.status().get("reported_step", -1)) >= 0 for t in
                                Experiment(root / "experiments" / "ia").trials()), 900)
        clock = pool.submit(_budget_sweep, root, pipeline, "ic", address,
                            "--time-budget", str(BUDGET_MIN), "--num-trials", "100",
                            "--eval-every", "200", space="clock.yaml")
        out["int"] = _interrupt_when(root, pipeline, "ir", signal.SIGINT, True, address,
                                     _one_done_and_one_midway)
        exp = Experiment(root / "experiments" / "ir")
        out["int"].update(states={t.name: t.status() for t in exp.trials()},
                          study=study_states(exp))
        try:  # before the resume changes them: the records of the interrupted sweep
            out["int"]["agree"] = assert_records_agree(root, "ir", out["int"]["out"],
                                                       out["int"]["rc"])
        except AssertionError as e:
            out["int"]["agree"] = e
        res = run_cli(["resume", "ir", "--no-dashboard", "--no-report", "--address", address],
                      root, timeout=600)
        (root / "resume.log").write_text(res.stdout + res.stderr)  # to read after a failure
        out["resume"] = {"rc": res.returncode, "out": res.stdout + res.stderr,
                         "states": {t.name: t.status() for t in exp.trials()},
                         "study": study_states(exp), "exp": exp}
        out["term"] = term.result()
        out["term"]["states"] = {t.name: t.status() for t in
                                 Experiment(root / "experiments" / "it").trials()}
        out["budget"] = steps.result()
        out["clock"] = clock.result()
        out["ended"] = ended.result()
    return out


@pytest.mark.slow
def test_ctrl_c_mid_sweep_says_interrupted_with_the_resume_command(interrupted: dict) -> None:
    r = interrupted["int"]
    assert r["rc"] == 130, r["out"][-3000:]
    last = r["out"].strip().splitlines()[-1]
    assert last == ("sweep ir interrupted (SIGINT): 1 of 3 trials done, 1 interrupted (they "
                    "continue from their last checkpoint), 1 not started. Continue with: "
                    "sweep resume ir"), r["out"][-3000:]
    assert "finished" not in last and "killed driver" not in r["out"]
    assert r["secs"] < 60


@pytest.mark.slow
def test_ctrl_c_folder_study_and_status_agree(interrupted: dict) -> None:
    r = interrupted["int"]
    states = {name: st["state"] for name, st in r["states"].items()}
    assert sorted(states.values()) == [COMPLETED, INTERRUPTED], states
    study = r["study"]
    for name, state in states.items():
        # The folder is the truth: the study says the same (an unfinished trial stays RUNNING
        # for the resumed searcher to finish), never FAIL.
        assert study[name] == {"COMPLETED": "COMPLETE", "INTERRUPTED": "RUNNING"}[state], study
    assert "FAIL" not in study.values(), study
    assert not isinstance(r["agree"], AssertionError), r["agree"]
    status = r["agree"]["status"]
    assert "interrupted by SIGINT" in status and INTERRUPTED in status, status
    stopped = next(st for st in r["states"].values() if st["state"] == INTERRUPTED)
    assert "sweep resume ir" in stopped["reason"]
    board = (interrupted["root"] / "reports" / "ir" / "leaderboard.md").read_text()
    assert "the sweep was interrupted (SIGINT)" in board and INTERRUPTED in board, board


@pytest.mark.slow
def test_resume_after_ctrl_c_finishes_every_trial_from_its_checkpoint(interrupted: dict) -> None:
    before, after = interrupted["int"], interrupted["resume"]
    assert after["rc"] == 0, after["out"][-3000:]
    assert "finished: every trial completed" in after["out"]
    # Ray's result-grid warning about its own (unused) result files is not the user's concern
    assert "Failed to fetch metrics" not in after["out"], after["out"][-3000:]
    assert len(after["states"]) == 3
    assert {st["state"] for st in after["states"].values()} == {COMPLETED}, after["states"]
    assert set(after["study"].values()) == {"COMPLETE"}, after["study"]
    exp = after["exp"]
    for name, st in before["states"].items():
        rows = exp.trial(name).evaluated()
        steps = [r["step"] for r in rows]
        assert steps == sorted(set(steps)), (name, steps)  # nothing trained or evaluated twice
        if st["state"] == INTERRUPTED:
            # continued, not restarted: the resumed attempt's restarts are not counted
            assert after["states"][name]["restarts"] == 0
            assert after["states"][name]["attempts"] == 2


@pytest.mark.slow
def test_sigterm_is_an_interrupt_with_exit_143(interrupted: dict) -> None:
    r = interrupted["term"]
    assert r["rc"] == 143, r["out"][-3000:]
    assert "interrupted (SIGTERM)" in r["out"].strip().splitlines()[-1]
    assert INTERRUPTED in {st["state"] for st in r["states"].values()}


@pytest.mark.slow
def test_a_spent_step_budget_stops_the_sweep_as_a_budget(interrupted: dict) -> None:
    r = interrupted["budget"]
    assert r["rc"] == 0, r["out"][-3000:]
    assert "killed driver" not in r["out"] and "interrupted" not in r["out"]
    assert "\nsweep ib stopped: the step budget (100 train steps) is spent; 2 of 3 trials ran " \
           "(completed, or stopped early or by the budget)\n" in r["out"], r["out"][-2000:]
    states = sorted((st["state"], st.get("reason") or "") for st in r["states"].values())
    assert states[0] == (COMPLETED, ""), states
    assert states[1][0] == "STOPPED" and "step budget (100 train steps)" in states[1][1], states
    by_state = {st["state"]: name for name, st in r["states"].items()}
    study = r["study"]
    assert study[by_state[COMPLETED]] == "COMPLETE" and study[by_state["STOPPED"]] == "PRUNED"
    # What the budget never let start is no trial of the sweep's: no folder, failed in the
    # study as "not started" (never left RUNNING, never "lost").
    s = r["exp"].settings()
    for t in optuna.load_study(study_name=s["study_name"], storage=r["exp"].storage_url()).trials:
        if t.user_attrs.get("ray_trial_id") not in r["states"]:
            assert t.state.name == "FAIL" and t.user_attrs["failure"].startswith("not started")


@pytest.mark.slow
def test_a_spent_time_budget_stops_the_sweep_as_a_budget(interrupted: dict) -> None:
    """--time-budget as the step budget: its own closing line and trial state (not "stopped
    early by the scheduler", not "lost"); the trials it never let start are no trials."""
    r = interrupted["clock"]
    assert r["rc"] == 0, r["out"][-3000:]
    assert "killed driver" not in r["out"] and "lost" not in r["out"], r["out"][-3000:]
    last = r["out"].strip().splitlines()[-1]
    assert last.startswith(f"sweep ic stopped: the time budget ({BUDGET_MIN} min) is spent; ") and \
        last.endswith(" of 100 trials ran (completed, or stopped early or by the budget)"), last
    states = [(st["state"], st.get("reason") or "") for st in r["states"].values()]
    stopped = [reason for state, reason in states if state == "STOPPED"]
    assert len(stopped) == 1 and f"the time budget ({BUDGET_MIN} min) is spent" in stopped[0], states
    assert {state for state, _ in states} <= {COMPLETED, "STOPPED"}, states
    study = r["study"]
    for name, st in r["states"].items():
        assert study[name] == {COMPLETED: "COMPLETE", "STOPPED": "PRUNED"}[st["state"]], study
    s = r["exp"].settings()
    for t in optuna.load_study(study_name=s["study_name"], storage=r["exp"].storage_url()).trials:
        if t.user_attrs.get("ray_trial_id") not in r["states"]:
            assert t.state.name == "FAIL" and t.user_attrs["failure"].startswith("not started")


def test_an_interrupt_before_launch_says_nothing_was_started(tmp_path: Path, monkeypatch,
                                                             capsys) -> None:  # noqa: ANN001
    """Ctrl-C during pre-flight: exit 130, no experiment folder, no advice to resume."""
    from sweep.run import tune_backend

    (tmp_path / "space.yaml").write_text(SPACE)
    pipeline = make_workspace(tmp_path, n_train=4, n_eval=2)

    def interrupted(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_backend, "preflight", interrupted)
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["run", "--space", "space.yaml", "--pipeline", str(pipeline), "--name", "pf",
                   "--no-dashboard"])
    err = capsys.readouterr().err
    assert rc == 130
    assert "nothing was started" in err and "sweep resume" not in err, err
    assert not (tmp_path / "experiments" / "pf").exists()


@pytest.mark.parametrize("how", ["interrupted", "killed", "budget"])
def test_reconcile_brings_the_study_in_line_with_the_folders(tmp_path: Path, how: str) -> None:
    """The folder is the truth on every exit path: each Optuna trial left RUNNING is told what
    its folder says; an unfinished one stays RUNNING only when the sweep was interrupted, and
    is stopped by a spent budget (not lost)."""
    interrupted = how == "interrupted"
    budget = "the time budget (1 min) is spent" if how == "budget" else None
    from optuna.trial import TrialState

    from sweep.core.experiment import FAILED, RUNNING, STOPPED
    from sweep.odapi.metrics import MAP, result_key
    from sweep.run.tune_backend import reconcile
    from tests.fake_worker import append_event

    exp = Experiment(tmp_path / "exp")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="r", storage=url, direction="maximize")
    folders = {"done": COMPLETED, "pruned": STOPPED, "broke": FAILED, "cut": INTERRUPTED,
               "midway": RUNNING}
    for name, state in folders.items():
        t = exp.trial(name)
        t.path.mkdir(parents=True)
        t.update_status(state=state, reason="diverged" if state == FAILED else None)
        study.ask().set_user_attr("ray_trial_id", name)
    append_event(exp.trial("done").path / "eval", 40, {MAP: 0.5})
    append_event(exp.trial("done").path / "train", 40, {"Loss/total_loss": 1.0})
    study.ask().set_user_attr("ray_trial_id", "never_started")  # suggested, no folder yet

    lost = reconcile(exp, url, "r", interrupted=interrupted, keys=[result_key(MAP)],
                     budget=budget)

    got = {t.user_attrs["ray_trial_id"]: t for t in optuna.load_study(study_name="r",
                                                                      storage=url).trials}
    assert got["done"].state == TrialState.COMPLETE and got["done"].value == 0.5
    assert got["pruned"].state == TrialState.PRUNED
    assert got["broke"].state == TrialState.FAIL and got["broke"].user_attrs["failure"] == "diverged"
    unfinished = ("cut", "midway", "never_started")
    states = {exp.trial(n).name: exp.trial(n).status()["state"] for n in folders}
    if interrupted:
        assert lost == []
        assert all(got[n].state == TrialState.RUNNING for n in unfinished)
        assert states["midway"] == INTERRUPTED and states["cut"] == INTERRUPTED
    elif budget:
        assert lost == []
        assert states["midway"] == STOPPED and states["cut"] == STOPPED
        assert exp.trial("midway").status()["reason"] == f"stopped with the sweep: {budget}"
        assert got["midway"].state == got["cut"].state == TrialState.PRUNED
        assert got["never_started"].state == TrialState.FAIL
        assert got["never_started"].user_attrs["failure"] == f"not started: {budget}"
    else:
        assert sorted(lost) == ["midway", "never_started"]
        assert all(got[n].state == TrialState.FAIL for n in ("midway", "never_started"))
        assert states["midway"] == FAILED and states["cut"] == STOPPED
        assert got["cut"].state == TrialState.PRUNED
    assert states["done"] == COMPLETED and states["broke"] == FAILED


def test_a_resume_brings_the_study_in_line_with_the_folders_before_ray_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver killed before its own reconcile leaves Optuna trials RUNNING whose folders
    ended: `sweep resume` tells the study what the folders say before Ray's restored searcher
    runs (fit() is a stand-in here: no Ray starts)."""
    from ray import tune

    from sweep.core.experiment import RUNNING, STOPPED
    from sweep.odapi.metrics import MAP
    from sweep.run import tune_backend
    from sweep.run.settings import SweepSettings
    from sweep.search.space import load_space
    from tests.fake_worker import append_event

    (tmp_path / "space.yaml").write_text(SPACE)
    settings = SweepSettings(name="k", space=tmp_path / "space.yaml", pipeline=tmp_path / "p",
                             storage=tmp_path)
    exp = Experiment(tmp_path / "k")
    exp.root.mkdir()
    study = optuna.create_study(study_name="k", storage=settings.storage_url(),
                                direction="maximize")
    for name, state in {"done": COMPLETED, "cut": STOPPED, "midway": RUNNING}.items():
        t = exp.trial(name)
        t.path.mkdir(parents=True)
        t.update_status(state=state)
        study.ask().set_user_attr("ray_trial_id", name)
    append_event(exp.trial("done").path / "eval", 80, {MAP: 0.5})
    append_event(exp.trial("done").path / "train", 80, {"Loss/total_loss": 1.0})
    seen: dict = {}

    class Restored:
        def fit(self):  # noqa: ANN202 - what Ray's restored searcher starts from
            seen.update({t.user_attrs["ray_trial_id"]: t.state.name for t in optuna.load_study(
                study_name="k", storage=settings.storage_url()).trials})
            seen["midway folder"] = exp.trial("midway").status()["state"]
            return type("Grid", (), {"errors": []})()

    monkeypatch.setattr(tune.Tuner, "restore", lambda *a, **k: Restored())
    tune_backend.run_sweep(settings, load_space(tmp_path / "space.yaml"), [], NUM_STEPS,
                           plan=tune_backend.Plan(), url=None, resume=True)
    # The unfinished one: INTERRUPTED in its folder, RUNNING in the study (the run continues it).
    assert seen == {"done": "COMPLETE", "cut": "PRUNED", "midway": "RUNNING",
                    "midway folder": INTERRUPTED}, seen


def test_the_time_budget_is_the_budget_stoppers_over_all_runs(tmp_path: Path) -> None:
    """--time-budget stops the sweep as a budget (its stop file makes each running trial say
    why), counting the wall time of the sweep's earlier runs (experiment.json)."""
    from sweep.core.experiment import read_json, write_json
    from sweep.run.settings import SweepSettings
    from sweep.run.tune_backend import _callbacks

    settings = SweepSettings(name="tb", space=tmp_path / "s.yaml", pipeline=tmp_path / "p",
                             storage=tmp_path, time_budget_s=60.0)
    exp = Experiment(tmp_path / "tb")
    exp.root.mkdir()
    write_json(exp.settings_path, {"name": "tb", "wall_time_s": 20.0})
    _, budget = _callbacks(settings, exp)
    assert not budget.stop_all() and not exp.stop_path.exists()  # 40 s of 60 are left
    write_json(exp.settings_path, {"name": "tb", "wall_time_s": 60.0})  # a resumed sweep's
    _, budget = _callbacks(settings, exp)
    assert budget.stop_all()
    assert budget.reason == "the time budget (1 min) is spent"
    assert read_json(exp.stop_path)["kind"] == "budget"
    assert read_json(exp.stop_path)["reason"] == budget.reason


@pytest.mark.slow
@pytest.mark.parametrize("path", ["ended", "resume", "term", "budget", "clock"])
def test_every_exit_path_leaves_records_that_agree(interrupted: dict, path: str) -> None:
    """Issue 26, item 1: whatever ended the sweep, its folders, study, `sweep status`, report
    and closing line (with the exit code) say the same of every trial. (The interrupted
    sweep's records are compared before its resume: test_ctrl_c_folder_study_and_status_agree;
    a killed driver's, after its resume: tests/run/test_resume.py.)"""
    r = interrupted[path]
    name = {"ended": "ia", "resume": "ir", "term": "it", "budget": "ib", "clock": "ic"}[path]
    folders = assert_records_agree(interrupted["root"], name, r["out"], r["rc"])
    if path == "ended":  # every way a trial ends, in one sweep
        assert sorted(v for k, v in folders.items() if k != "status") == [
            COMPLETED, "FAILED", "STOPPED"], folders


def test_each_driver_stages_ray_state_in_its_own_folder(tmp_path: Path) -> None:
    """Two sweeps on one Ray that made their Tuners in the same second shared Ray Tune's
    staging folder (<session>/artifacts/<second>/ray/) and copied each other's experiment state
    into their own: this module's shared Ray showed it (a resume restored the other sweep's
    trials). tune_backend.own_driver_staging stamps the folder with the driver's process id."""
    from ray.train._internal.storage import StorageContext
    from ray.tune import utils

    from sweep.run.tune_backend import own_driver_staging

    plain = utils.date_str
    try:
        own_driver_staging()
        own_driver_staging()  # idempotent: one stamp
        ctx = StorageContext(storage_path=str(tmp_path), experiment_dir_name="ray")
        assert ctx._timestamp.endswith(f"-{os.getpid()}")  # noqa: SLF001 - the staging folder's name
        assert ctx._timestamp.count(f"-{os.getpid()}") == 1  # noqa: SLF001
    finally:
        utils.date_str = plain
