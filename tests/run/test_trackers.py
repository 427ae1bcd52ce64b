"""Experiment trackers (sweep.run.trackers): `sweep run --mlflow URI --wandb PROJECT`.

Fast: what a trial's folder gives a run, in step order. Slow without Ray (they import MLflow,
W&B, Ray: seconds): an unreachable MLflow URI is refused at once, naming the option, the URI and
the fix, and `sweep run` with it launches nothing; W&B online without a login is refused.

Slow (stand-in worker, in the Ray shared with tests/search/test_search.py's fixture, one real
MLflow tracking server on 127.0.0.1 with an SQLite store, W&B offline): one sweep logged to both
trackers, read back and compared with its trial folders (params, seed, state, every
evaluation's metrics and the training curve at their steps, parent run with the report); then
its resume, which continues the same runs; then a sweep during which the server is killed and
started again, whose trials all complete and whose runs are complete in the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweep import cli
from sweep.core import errors
from sweep.core.experiment import COMPLETED, ENDED, STOPPED, Experiment, TrialDir, read_json
from sweep.odapi import metrics
from sweep.run import trackers
from sweep.run.settings import SweepSettings
from sweep.search import marks
from tests.search.test_search import _sweep, shared_ray  # noqa: F401 - the module's Ray

MLFLOW = Path(sys.executable).with_name("mlflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ fast

@pytest.mark.slow  # no Ray, but importing MLflow's client takes seconds (tens when loaded)
def test_an_unreachable_mlflow_is_refused_at_once_naming_the_option_and_uri() -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    settings = SweepSettings(name="s", space=Path("s.yaml"), pipeline=Path("p.config"), mlflow=uri)
    import mlflow.tracking  # noqa: F401 - its import (seconds) is not the check's time

    t0 = time.time()
    with pytest.raises(errors.ConfigError) as e:
        trackers.check(settings)
    text = str(e.value)
    assert "--mlflow" in text and uri in text and "mlflow server" in text, text
    # MLflow's client alone retries a dead server for minutes.
    assert time.time() - t0 < 30


@pytest.mark.slow  # no Ray starts, but `sweep run` imports it (seconds)
def test_sweep_run_with_an_unreachable_mlflow_launches_nothing(tmp_path: Path, capsys,  # noqa: ANN001
                                                               monkeypatch) -> None:  # noqa: ANN001
    from tests.conftest import make_workspace

    pipeline = make_workspace(tmp_path, n_train=4, n_eval=2)
    (tmp_path / "space.yaml").write_text("parameters:\n  num_steps: 20\n  l2_weight: "
                                         "{loguniform: [1.0e-5, 1.0e-2]}\n")
    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv(trackers.MLFLOW_ENV, uri)  # the environment variable's way
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["run", "--space", "space.yaml", "--pipeline", str(pipeline), "--name", "x",
                   "--no-dashboard"])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_BAD_INPUT, err
    assert "$SWEEP_MLFLOW" in err and uri in err, err
    assert not (tmp_path / "experiments").exists()  # nothing was started or written


@pytest.mark.slow  # importing wandb takes seconds
def test_wandb_online_without_a_login_is_refused(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    settings = SweepSettings(name="s", space=Path("s.yaml"), pipeline=Path("p.config"),
                             wandb="team/proj")
    import wandb

    try:
        with pytest.raises(errors.ConfigError) as e:
            trackers.check(settings)
        assert "--wandb" in str(e.value) and "WANDB_MODE=offline" in str(e.value), str(e.value)
        monkeypatch.setenv("WANDB_MODE", "offline")
        trackers.check(settings)  # offline has nothing to reach
    finally:
        wandb.teardown()  # W&B keeps the settings it read (online, this HOME) for the process


def test_a_trials_rows_come_in_step_order_up_to_its_last_evaluation(tmp_path: Path) -> None:
    """While a trial runs, the training curve is sent up to its last recorded evaluation only
    (W&B drops a step below one it has; training runs ahead of evaluation), the rest once it
    ended; each row carries the time it was written, and the marks move past what was sent."""
    from tests.fake_worker import append_event

    t = TrialDir(tmp_path / "t")
    for step in (10, 20, 30, 40):  # values exact in float32, as event files hold them
        append_event(t.path / "train", step, {metrics.TOTAL_LOSS: 1.0 / (step // 10)})
    append_event(t.path / "eval", 20, {metrics.MAP: 0.5, metrics.AR100: 0.25})
    append_event(t.path / "eval", 40, {metrics.MAP: 0.7})  # written, not yet recorded
    recorded = time.time() + 5  # the eval job records an evaluation after training wrote the step
    (t.path / "eval" / "evaluated.jsonl").write_text(
        json.dumps({"checkpoint": "ckpt-1", "step": 20, "time": recorded}) + "\n")
    rows, train, evals = trackers.trial_rows(t, train_after=-1, eval_after=-1, upto=20)
    assert [(s, v) for s, v, _ in rows] == [(10, {"total_loss": 1.0}),
                                            (20, {"total_loss": 0.5, "mAP": 0.5, "AR_100": 0.25})]
    assert rows[1][2] == recorded and 1e9 < rows[0][2] < recorded and (train, evals) == (20, 20)
    rows, train, evals = trackers.trial_rows(t, train_after=20, eval_after=20, upto=None)
    assert [s for s, _, _ in rows] == [30, 40] and "mAP" not in rows[1][1]  # 40: not recorded
    assert (train, evals) == (40, 20)


# ------------------------------------------------------------------------------ slow

class Server:
    """A real `mlflow server` (SQLite store, artifacts proxied to a folder) on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = open(self.root / "mlflow-server.log", "a")  # noqa: SIM115 - the child writes it
        self.proc = subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers",
             "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "mlartifacts")],
            cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_up(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc is not None and self.proc.poll() is None, \
                (self.root / "mlflow-server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server not up in {timeout}s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its uvicorn worker
            self.proc.wait()


@pytest.fixture(scope="module")
def server(shared_ray) -> Iterator[Server]:  # noqa: ANN001, F811
    root, _ = shared_ray
    s = Server(root)
    s.start()
    try:
        s.wait_up()
        yield s
    finally:
        s.kill()


@pytest.fixture(scope="module")
def tracked(shared_ray, server: Server) -> Iterator[tuple[Experiment, str]]:  # noqa: ANN001, F811
    """One sweep logged to MLflow and W&B (offline), with its report."""
    root, pipeline = shared_ray
    saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_SILENT", "WANDB_DATA_DIR")}
    # W&B stages offline artifacts in its data folder (~/.local/share/wandb): the test's own.
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true",
                      WANDB_DATA_DIR=str(root / "wandb-data"))
    try:
        exp = _sweep(root, pipeline, "trk", "--num-trials", "3", "--mlflow", server.uri,
                     "--wandb", "sweep-tests", report=True)
        yield exp, server.uri
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _client(uri: str):  # noqa: ANN202
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _expected(t: TrialDir) -> tuple[dict[str, list], dict[str, list]]:
    """What the folder says: eval metrics at the recorded evaluations, and the training curve,
    as {key: [(step, value)]}."""
    m = metrics.read_trial(t.path)
    evaluated = sorted({int(r["step"]) for r in t.evaluated()})
    evals = {key: [(s, m.eval[s][tag]) for s in evaluated if tag in m.eval.get(s, {})]
             for tag, key in trackers.EVAL_KEYS.items()}
    train = {key: [(s, m.train[s][tag]) for s in sorted(m.train) if tag in m.train[s]]
             for tag, key in trackers.TRAIN_KEYS.items()}
    return {k: v for k, v in evals.items() if v}, {k: v for k, v in train.items() if v}


def _same(got: list, want: list) -> bool:
    """Same steps, each once, with the same values (float32 from the event files)."""
    return ([s for s, _ in got] == [s for s, _ in want]
            and [v for _, v in got] == pytest.approx([v for _, v in want]))


def _check_mlflow(exp: Experiment, uri: str) -> None:
    client = _client(uri)
    parent = read_json(exp.root / trackers.STATE_FILE)["mlflow"]["parent_run_id"]
    runs = client.search_runs([client.get_experiment_by_name(exp.name).experiment_id],
                              filter_string=f"tags.`sweep.experiment` = '{exp.name}'")
    trials = exp.trials()
    assert len(runs) == len(trials) + 1, [r.data.tags.get("sweep.trial") for r in runs]
    for t in trials:
        run = client.get_run(trackers.run_ids(t)["mlflow"])
        params, status = t.params(), t.status()
        tags = run.data.tags
        assert tags["sweep.trial"] == t.name and tags["sweep.experiment"] == exp.name
        assert tags["mlflow.parentRunId"] == parent
        assert tags["sweep.state"] == status["state"] in ENDED
        assert tags["sweep.seed"] == str(marks.seed_of(params))
        assert run.info.status == trackers.MLFLOW_STATUS[status["state"]]
        want = {k: str(v) for k, v in marks.public(params).items()}
        assert run.data.params == {**want, "sweep.seed": str(marks.seed_of(params))}
        evals, train = _expected(t)
        assert evals and train, t.name
        for key, points in {**evals, **train}.items():
            got = sorted((h.step, h.value) for h in client.get_metric_history(run.info.run_id, key))
            assert _same(got, points), (t.name, key, got, points)  # each step once


@pytest.mark.slow
def test_every_trial_is_an_mlflow_run_that_matches_its_folder(tracked) -> None:  # noqa: ANN001
    exp, uri = tracked
    states = {t.status()["state"] for t in exp.trials()}
    assert states <= {COMPLETED, STOPPED}, states
    _check_mlflow(exp, uri)


@pytest.mark.slow
def test_the_parent_run_holds_the_best_config_the_report_and_the_verdict(tracked) -> None:  # noqa: ANN001
    exp, uri = tracked
    client = _client(uri)
    parent = client.get_run(read_json(exp.root / trackers.STATE_FILE)["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.role"] == "sweep"
    report = exp.root.parent.parent / "reports" / exp.name
    assert parent.data.tags["sweep.verdict"] == (report / "verdict.txt").read_text().strip()
    best = client.download_artifacts(parent.info.run_id, "best/pipeline.config",
                                     str(exp.root.parent / "dl"))
    assert Path(best).read_text() == (report / "best" / "pipeline.config").read_text()
    names = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/leaderboard.csv"} <= names, names


def _wandb_records(run_file: Path) -> list:
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    ds = datastore.DataStore()
    ds.open_for_scan(str(run_file))
    out = []
    while (data := ds.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        out.append(record)
    return out


def _item_key(item) -> str:  # noqa: ANN001 - W&B writes a key or its parts
    return item.key or ".".join(item.nested_key)


def wandb_offline_runs(exp: Experiment) -> dict[str, dict]:
    """Each offline run of the experiment read back with W&B's own reader: run id ->
    name, group, tags, config, history {key: [(step, value)]}, summary, exit code."""
    runs: dict[str, dict] = {}
    for run_file in sorted(exp.root.glob("wandb/offline-run-*/run-*.wandb")):
        for r in _wandb_records(run_file):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run = runs.setdefault(r.run.run_id, {"history": {}, "summary": {}, "files": set()})
                run["files"].add(run_file.parent.name)
                run.update(name=r.run.display_name, group=r.run.run_group, tags=list(r.run.tags))
                run.setdefault("config", {}).update({i.key: json.loads(i.value_json)
                                                     for i in r.run.config.update
                                                     if not i.key.startswith("_")})
            elif kind == "history":
                for i in r.history.item:
                    if not _item_key(i).startswith("_"):
                        run["history"].setdefault(_item_key(i), []).append(
                            (int(r.history.step.num), json.loads(i.value_json)))
            elif kind == "summary":
                run["summary"].update({_item_key(i): json.loads(i.value_json)
                                       for i in r.summary.update})
            elif kind == "exit":
                run["exit"] = r.exit.exit_code
    return runs


@pytest.mark.slow
def test_every_trial_is_a_wandb_offline_run_that_matches_its_folder(tracked) -> None:  # noqa: ANN001
    exp, _ = tracked
    runs = wandb_offline_runs(exp)
    trials = exp.trials()
    assert len(runs) == len(trials) + 1  # and the sweep's own run
    for t in trials:
        run = runs[trackers.run_ids(t)["wandb"]]
        params, state = t.params(), t.status()["state"]
        assert run["name"] == t.name and run["group"] == exp.name
        assert f"trial={t.name}" in run["tags"] and f"state={state}" in run["tags"]
        assert run["summary"]["state"] == state and run["exit"] == 0
        assert run["config"]["sweep.seed"] == marks.seed_of(params)
        for k, v in marks.public(params).items():
            assert run["config"][k] == v
        evals, train = _expected(t)
        for key, points in {**evals, **train}.items():
            assert _same(sorted(run["history"][key]), points), (t.name, key)
    sweep_run = runs[read_json(exp.root / trackers.STATE_FILE)["wandb"]["parent_run_id"]]
    assert sweep_run["summary"]["verdict"]


# 300 steps at the stand-in's 0.05 s a step: ~15 s of training to interrupt in (its eval job
# may skip checkpoints under load, so a trial can report 20 and then its last step).
RESUME_SPACE = """\
parameters:
  num_steps: 300
  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}
"""


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_into_the_same_runs(shared_ray, server: Server,  # noqa: F811
                                                         monkeypatch) -> None:  # noqa: ANN001
    """Ctrl-C (SIGINT to the driver) mid-trial, then `sweep resume`: every trial's MLflow and
    W&B run is the one it started with, every step is logged once, no run is added."""
    root, pipeline = shared_ray
    (root / "resume.yaml").write_text(RESUME_SPACE)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(root / "wandb-data"))
    monkeypatch.chdir(root)
    exp = Experiment(root / "experiments" / "rsm")
    fired: dict[str, dict] = {}

    def interrupt() -> None:  # once the trial's runs exist and it reported an evaluation
        deadline = time.time() + 300
        while time.time() < deadline:
            for t in exp.trials():
                if (len(trackers.run_ids(t)) == 2 and t.status().get("state") == "RUNNING"
                        and 20 <= int(t.status().get("reported_step", -1)) < 200):
                    fired[t.name] = trackers.run_ids(t)
                    os.kill(os.getpid(), signal.SIGINT)  # Ray Tune's handler takes it
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt, daemon=True)
    watcher.start()
    rc = cli.main(["run", "--space", "resume.yaml", "--pipeline", str(pipeline), "--name", "rsm",
                   "--num-trials", "1", "--scheduler", "fifo",
                   "--eval-every", "20", "--no-dashboard", "--no-report",
                   "--mlflow", server.uri, "--wandb", "sweep-tests"])
    watcher.join(timeout=5)
    assert rc == 130 and fired, (rc, fired)
    (name, ids), = fired.items()
    t = exp.trial(name)
    assert t.status()["state"] == "INTERRUPTED"
    client = _client(server.uri)
    assert client.get_run(ids["mlflow"]).info.status == "KILLED"  # until it goes on
    assert cli.main(["resume", "rsm", "--no-dashboard", "--no-report"]) == 0
    assert trackers.run_ids(t) == ids
    assert t.status()["state"] == COMPLETED
    _check_mlflow(exp, server.uri)  # one run per trial (+ the parent), each step once
    runs = wandb_offline_runs(exp)
    assert len(runs) == len(exp.trials()) + 1
    run = runs[ids["wandb"]]
    assert len(run["files"]) == 2  # the same W&B run, continued by the resumed driver
    evals, train = _expected(t)
    for key, points in {**evals, **train}.items():
        assert _same(sorted(run["history"][key]), points), key
    assert run["summary"]["state"] == COMPLETED


@pytest.mark.slow
def test_a_tracker_that_goes_away_mid_sweep_fails_no_trial_and_catches_up(
        shared_ray, server: Server, monkeypatch, capfd) -> None:  # noqa: ANN001, F811
    root, pipeline = shared_ray
    monkeypatch.setattr(trackers, "RETRY_S", 1.0)
    monkeypatch.setattr(trackers, "FINAL_TRIES", 400)  # the server's restart takes a while here
    trials = root / "experiments" / "away" / "trials"
    events: dict[str, float] = {}

    def outage() -> None:
        # Kill the server once the first trial's run exists, start it again once a later
        # evaluation had to be kept for it.
        deadline = time.time() + 300
        while time.time() < deadline and not any(
                trackers.run_ids(TrialDir(p)).get("mlflow") for p in trials.glob("*")):
            time.sleep(0.05)
        server.kill()
        events["killed"] = time.time()
        while time.time() < deadline and not any(
                TrialDir(p).status().get("state") in ENDED for p in trials.glob("*")):
            time.sleep(0.1)
        server.start()
        events["restarted"] = time.time()

    watcher = threading.Thread(target=outage, daemon=True)
    watcher.start()
    exp = _sweep(root, pipeline, "away", "--num-trials", "3", "--mlflow", server.uri)
    watcher.join(timeout=60)
    server.wait_up()
    assert "killed" in events and "restarted" in events, events
    err = capfd.readouterr().err
    assert "is not answering" in err and "answers again: logging resumed" in err, err
    assert all(t.status()["state"] in (COMPLETED, STOPPED) for t in exp.trials())
    _check_mlflow(exp, server.uri)
