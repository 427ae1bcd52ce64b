"""A sweep submitted as a Ray Job (docs/cluster-and-gpus.md, "Submitting a sweep as a Ray Job").

Fast: what a job's driver refuses or warns about (sweep.run.ray_job). Slow: the documented
commands against a real two-node cluster on loopback (tests/run/test_cluster.py's), with the
stand-in worker: `ray job submit` runs the sweep, `sweep status` reads it from outside, `ray
job stop` stops it cleanly (trials INTERRUPTED), and a resubmitted `sweep resume` finishes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweep import cli
from sweep.run import ray_job

JOB_ENV = json.dumps({"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_T3st"}})


@pytest.fixture
def in_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ray_job.JOB_CONFIG_ENV, JOB_ENV)
    monkeypatch.delenv(ray_job.STOP_WAIT_ENV, raising=False)


def test_outside_a_job_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ray_job.JOB_CONFIG_ENV, raising=False)
    assert ray_job.job_id() is None
    assert ray_job.storage_problem(Path("experiments")) is None
    assert ray_job.stop_grace_warning() is None


def test_a_job_with_relative_storage_is_refused_before_anything(
        in_job: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text("parameters:\n  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}\n")
    rc = cli.main(["run", "--space", "space.yaml", "--pipeline", "pipeline.config",
                   "--storage", "experiments", "--address", "auto"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "--storage: 'experiments' is relative, and this sweep runs as Ray Job " \
           "raysubmit_T3st" in err and "Fix: give an absolute path" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]
    assert ray_job.storage_problem(tmp_path / "experiments") is None  # absolute: fine


def test_a_job_is_warned_when_ray_job_stop_would_kill_it_too_soon(
        in_job: None, monkeypatch: pytest.MonkeyPatch) -> None:
    warning = ray_job.stop_grace_warning()
    assert warning is not None and "3 s after asking it to stop (RAY_JOB_STOP_WAIT_TIME_S=3)" \
        in warning and '"RAY_JOB_STOP_WAIT_TIME_S": "60"' in warning
    monkeypatch.setenv(ray_job.STOP_WAIT_ENV, str(ray_job.STOP_GRACE_S))
    assert ray_job.stop_grace_warning() is None


def test_jobs_start_in_this_nodes_working_dir_when_the_drivers_is_not_here(tmp_path: Path) -> None:
    from sweep.run.trial import job_cwd

    assert job_cwd(tmp_path) == tmp_path and job_cwd(None) is None
    assert job_cwd(tmp_path / "head-node-only") is None  # the Ray worker's cwd: this node's copy


# --- slow: the documented commands on a real two-node cluster ----------------------------------

NUM_STEPS = 60
SPACE = f"""\
parameters:
  num_steps: {NUM_STEPS}
  l2_weight: {{loguniform: [1.0e-5, 1.0e-2]}}
points:
  - l2_weight: 0.0004
  - l2_weight: 0.0001
"""
HOLD_STEP = 30  # the stand-in's trials wait here (past their first evaluation) until let go


def _job_env_vars(hold: Path) -> dict[str, str]:
    """The stand-in worker, 10 steps a second, holding its trials at HOLD_STEP while ``hold``
    exists: on a loaded machine (CI) the `ray` CLI alone takes many seconds, and trials paced
    by the clock ended before `ray job stop` landed. A stop grace long enough for a clean stop
    (the docs')."""
    return {"SWEEP_WORKER_MODULE": "tests.fake_worker", "FAKE_MODE": "slow",
            "FAKE_STEP_SLEEP": "1", "FAKE_HOLD": f"{hold}:{HOLD_STEP}",
            ray_job.STOP_WAIT_ENV: str(ray_job.STOP_GRACE_S)}


def _ray(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    """A `ray` CLI command. A cluster just started may not yet have a dashboard agent to take a
    job ("No available agent to submit job, please try again later"): that answer is retried,
    as it asks, for up to 3 minutes. (In CI it came for good: another Ray on the machine held
    the agent's default port; local_cluster now gives each node's agent a port of its own.)"""
    import subprocess
    import sys
    import time

    ray_cli = str(Path(sys.executable).with_name("ray"))
    deadline = time.monotonic() + 180
    while True:
        out = subprocess.run([ray_cli, *args], env=env, capture_output=True, text=True,
                             timeout=timeout)
        text = out.stdout + out.stderr
        if out.returncode == 0 or "No available agent" not in text or \
                time.monotonic() > deadline:
            break
        time.sleep(5)
    assert out.returncode == 0, (args, text[-3000:])
    return text


def _job_status(cluster, job: str) -> str:  # noqa: ANN001
    """The job's status from the head's job API, asked from this process: the `ray job status`
    command starts a Python that imports Ray (~2 CPU-s) at every poll, and the polls of one
    module cost the suite ~50 CPU-s of its two cores."""
    from ray.job_submission import JobSubmissionClient

    auth = {"Authorization": f"Bearer {cluster.env['RAY_AUTH_TOKEN']}"}  # the cluster's own
    return JobSubmissionClient(cluster.dashboard, headers=auth).get_job_status(job).value


def _wait_status(cluster, job: str, wanted: set[str], timeout: float) -> str:  # noqa: ANN001
    import time

    deadline, status = time.time() + timeout, "?"
    while time.time() < deadline:
        status = _job_status(cluster, job)
        if status in wanted:
            return status
        time.sleep(1)
    return status


@pytest.fixture(scope="module")
def job_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Submit `sweep run` as a Ray Job; `ray job stop` it mid-sweep; read it from outside with
    `sweep status`; submit `sweep resume` as a second job, to the end."""
    import sys
    import time

    from sweep.core.experiment import Experiment
    from tests.conftest import REPO, make_workspace, run_cli
    from tests.run.test_cluster import local_cluster

    t_start = time.time()
    root = tmp_path_factory.mktemp("rayjob")
    pipeline = make_workspace(root, n_train=8, n_eval=4)
    space = root / "space.yaml"
    space.write_text(SPACE)
    storage = root / "shared" / "experiments"  # the folder the nodes and "your machine" share
    out: dict = {"storage": storage}
    hold = root / "hold-trials"
    hold.write_text("deleted once `ray job stop` has stopped the sweep\n")
    # No PYTHONPATH on the nodes: the job's --working-dir is all the code they get.
    with local_cluster(pythonpath=False) as c:
        out["cluster"] = c
        submit = ["job", "submit", "--address", c.dashboard, "--working-dir", str(REPO),
                  "--runtime-env-json", json.dumps({"env_vars": _job_env_vars(hold)}), "--no-wait"]
        _ray([*submit, "--submission-id", "sweep-run", "--", sys.executable, "-m", "sweep.cli",
              "run", "--space", str(space), "--pipeline", str(pipeline), "--name", "rj",
              "--storage", str(storage), "--address", "auto", "--num-trials", "2",
              "--max-concurrent", "2", "--cpus-per-trial", "1", "--eval-every", "20",
              "--scheduler", "fifo", "--no-dashboard", "--no-report"], c.env)
        exp = Experiment(storage / "rj")
        deadline, asked = time.time() + 900, time.time()
        while time.time() < deadline:  # both trials running (held), one past its first evaluation
            states = [t.status() for t in exp.trials()] if exp.root.exists() else []
            if len(states) == 2 and all(s.get("state") == "RUNNING" for s in states) and any(
                    20 <= int(s.get("reported_step", -1)) < 50 for s in states):
                break
            if time.time() - asked > 15:  # a job that failed (its logs say why) ends the wait
                asked = time.time()
                if _job_status(c, "sweep-run") not in ("PENDING", "RUNNING"):
                    break
            time.sleep(0.2)
        out["before_stop"] = {t.name: t.status() for t in exp.trials()}
        t0 = time.time()
        out["stop"] = _ray(["job", "stop", "--address", c.dashboard, "sweep-run"], c.env)
        out["stopped"] = _wait_status(c, "sweep-run", {"STOPPED", "SUCCEEDED", "FAILED"}, 120)
        out["stop_s"] = time.time() - t0
        out["run_logs"] = _ray(["job", "logs", "--address", c.dashboard, "sweep-run"], c.env)
        out["after_stop"] = {t.name: t.status() for t in exp.trials()}
        hold.unlink()  # the resumed trials train to their end
        # "Your machine": no cluster, only the shared folder.
        out["status"] = run_cli(["status", "rj", "--storage", str(storage)], root, timeout=120)
        _ray([*submit, "--submission-id", "sweep-resume", "--", sys.executable, "-m",
              "sweep.cli", "resume", "rj", "--storage", str(storage), "--address", "auto",
              "--no-dashboard", "--no-report"], c.env)
        out["resumed"] = _wait_status(c, "sweep-resume", {"STOPPED", "SUCCEEDED", "FAILED"}, 600)
        out["resume_logs"] = _ray(["job", "logs", "--address", c.dashboard, "sweep-resume"],
                                  c.env)
        out["final"] = {t.name: t.status() for t in exp.trials()}
        out["exp"] = exp
    out["report"] = run_cli(["report", "rj", "--storage", str(storage)], root, timeout=300)
    print(f"test_ray_job: {time.time() - t_start:.0f}s in all; the stop took "
          f"{out['stop_s']:.1f}s")
    return out


@pytest.mark.slow
def test_ray_job_stop_ends_the_sweep_cleanly(job_sweep: dict) -> None:
    from sweep.core.experiment import INTERRUPTED

    before, after = job_sweep["before_stop"], job_sweep["after_stop"]
    assert len(before) == 2 and all(s["state"] == "RUNNING" for s in before.values()), before
    logs = job_sweep["run_logs"]
    assert job_sweep["stopped"] == "STOPPED", logs[-3000:]
    assert "SIGTERM received" in logs, logs[-3000:]  # our handler saw what `ray job stop` sent
    # the closing line, printed after the trials stopped: the clean end, not the SIGKILL at the
    # stop grace's end (no clock: on a loaded machine the `ray` CLI alone takes many seconds)
    assert "Continue with: sweep resume rj" in logs, logs[-3000:]
    assert "warning: `ray job stop` will kill" not in logs  # the grace was set, as documented
    # every trial that was running stopped at a checkpoint, as on Ctrl-C
    assert {s["state"] for s in after.values()} == {INTERRUPTED}, after


@pytest.mark.slow
def test_status_from_outside_the_cluster_reads_the_shared_folder(job_sweep: dict) -> None:
    st = job_sweep["status"]
    assert st.returncode == 0, st.stdout + st.stderr
    for name in job_sweep["after_stop"]:
        assert name in st.stdout, st.stdout
    assert "INTERRUPTED" in st.stdout, st.stdout


@pytest.mark.slow
def test_resume_submitted_as_a_job_finishes_from_the_checkpoints(job_sweep: dict) -> None:
    from sweep.core.experiment import COMPLETED
    from sweep.odapi import metrics

    logs = job_sweep["resume_logs"]
    assert job_sweep["resumed"] == "SUCCEEDED", logs[-3000:]
    final = job_sweep["final"]
    assert {s["state"] for s in final.values()} == {COMPLETED}, final
    from tests.run.test_resume import _file_steps

    evaluated = [t for t in job_sweep["exp"].trials()
                 if int(job_sweep["before_stop"][t.name].get("reported_step", -1)) >= 20]
    assert evaluated
    for t in job_sweep["exp"].trials():
        assert max(metrics.read_trial(t.path).eval) == NUM_STEPS
    for t in evaluated:  # it had a checkpoint at step 20 or later: the resumed job went on
        files = metrics.event_files(t.path / "train")  # one per train job
        assert len(files) == 2, files
        assert min(_file_steps(files[1])) > 20, [_file_steps(f) for f in files]
    # both nodes ran trials: the job's working dir reached the second node
    nodes = {n for s in final.values() for n in s.get("attempt_nodes", [])}
    c = job_sweep["cluster"]
    assert nodes <= {c.head_id, c.worker_id} and len(nodes) == 2, nodes
    rep = job_sweep["report"]
    assert rep.returncode == 0, rep.stdout + rep.stderr
