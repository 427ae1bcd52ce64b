"""Bad input never gets past the door (issue 15): each case exits 2 with the file or option,
the problem and a fix in the message, before Ray starts and before anything is written; no
traceback; nothing the user had is changed. Fast: Ray's start is replaced by a tripwire."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from sweep import cli
from sweep.core.errors import ConfigError, Problem
from sweep.core.experiment import Experiment, trust_problem, write_json
from sweep.core.inputs import MAX_BYTES, short
from sweep.odapi import render
from sweep.run import tune_backend, validate
from sweep.run.settings import SweepSettings

TINY = Path(cli.PACKAGE_ROOT) / "odapi" / "templates" / "tiny_ssd_mobilenet_v2.config"
SPACE = "parameters:\n  num_steps: 40\n  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}\n"
MEAN_STDDEV = "box_coder { mean_stddev_box_coder { stddev: 0.1 } }"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import make_workspace

    return make_workspace(tmp_path_factory.mktemp("ws"), n_train=4, n_eval=2)


class RayStarted(AssertionError):
    pass


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A tripwire in place of Ray's start: a refused case must never reach it."""
    started: list[str] = []

    def tripwire(settings: SweepSettings) -> None:
        started.append(settings.name)
        raise RayStarted("Ray was started")

    monkeypatch.setattr(tune_backend, "init_ray", tripwire)
    return started


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if not p.is_symlink()}


def refused(argv: list[str], capsys: pytest.CaptureFixture, *words: str) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, f"{w!r} not in {err}"
    return err


# --- 1 and 2: the space and pipeline files -----------------------------------------------------

BOMB = "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
               for p, n in zip("abcdefgh", "bcdefghi", strict=True))
FILES = {
    "choice_empty": ("parameters:\n  learning_rate: {choice: {}}\n",
                     ["learning_rate.choice", "non-empty mapping", "Fix:"]),
    "choice_list": ("parameters:\n  learning_rate: {choice: [a, b]}\n",
                    ["learning_rate.choice", "got ['a', 'b']", "categorical"]),
    "choice_scalar": ("parameters:\n  learning_rate: {choice: 3}\n",
                      ["learning_rate.choice", "got 3"]),
    "dup_param": ("parameters:\n  batch_size: 4\n  batch_size: 8\n",
                  ["line 3", "found the key 'batch_size' twice (first at line 2)",
                   "give each key once"]),
    "dup_top": (SPACE + "parameters:\n  batch_size: 4\n", ["'parameters' twice"]),
    "dup_in_spec": ("parameters:\n  momentum: {uniform: [0.1, 0.9], uniform: [0.2, 0.3]}\n",
                    ["'uniform' twice"]),
    "dup_in_option": ("parameters:\n  learning_rate:\n    choice:\n      constant_learning_rate:\n"
                      "        constant_learning_rate.learning_rate: 0.1\n"
                      "        constant_learning_rate.learning_rate: 0.2\n",
                      ["'constant_learning_rate.learning_rate' twice"]),
    "bomb_value": ("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + BOMB
                   + "parameters:\n  batch_size: {categorical: *i}\n", ["more than 100000"]),
    "bomb_bounds": ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + BOMB
                    + "parameters:\n  momentum: {uniform: *i}\n", ["more than 100000"]),
    "recursive_alias": ("parameters:\n  batch_size: &x {categorical: [*x]}\n",
                        ["more than 100000"]),
    "deep": ("parameters:\n  batch_size: " + "[" * 5000 + "]" * 5000 + "\n", ["nested too deeply"]),
    "not_yaml": ("parameters: [\n", ["invalid YAML", "line"]),
    "top_list": ("- a\n- b\n", ["expected a mapping with 'parameters'"]),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_bad_space_file(case: str, tmp_path: Path, workspace: Path, no_ray: list,
                        capsys: pytest.CaptureFixture) -> None:
    text, words = FILES[case]
    space = tmp_path / "space.yaml"
    space.write_text(text)
    before = snapshot(tmp_path)
    err = refused(["validate", str(space), str(workspace), "--no-data"], capsys, "space.yaml",
                  "Fix:", *words)
    assert len(err) < 5000  # a bounded message, whatever the file expands to
    refused(["run", "--space", str(space), "--pipeline", str(workspace), "--name", "n",
             "--storage", str(tmp_path / "exps")], capsys, *words)
    assert snapshot(tmp_path) == before and not no_ray


def test_a_huge_value_is_truncated_in_the_message(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  momentum: {uniform: [" + "x" * 500_000 + ", 1]}\n")
    err = refused(["validate", str(space), str(TINY), "--no-data"], capsys, "...")
    assert len(err) < 2000


def test_a_huge_constant_is_truncated_in_a_render_message(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  batch_size: [" + ", ".join(["x"] * 50_000) + "]\n")
    (p,) = validate.validate(space, TINY, check_data=False)
    assert "batch_size takes an integer" in p.problem and len(str(p)) < 600


@pytest.mark.parametrize("which", ["space", "pipeline", "label_map"])
@pytest.mark.parametrize("content", ["binary", "huge"])
def test_binary_or_huge_files(which: str, content: str, tmp_path: Path, workspace: Path,
                              capsys: pytest.CaptureFixture) -> None:
    data = bytes(range(128, 256)) * 4 if content == "binary" else b"#" * (MAX_BYTES + 10)
    words = ["not UTF-8 text"] if content == "binary" else ["larger than 1 MiB"]
    space, pipeline = tmp_path / "space.yaml", tmp_path / "pipeline.config"
    space.write_text(SPACE)
    pipeline.write_text(workspace.read_text())
    if which == "label_map":
        cfg = render.load_pipeline(pipeline)
        label_map = Path(cfg.train_input_reader.label_map_path)
        bad = tmp_path / "label_map.pbtxt"
        bad.write_bytes(data)
        pipeline.write_text(workspace.read_text().replace(str(label_map), str(bad)))
    else:
        (space if which == "space" else pipeline).write_bytes(data)
    refused(["validate", str(space), str(pipeline)], capsys, *words, "Fix:")


def test_count_nodes_stops_at_the_limit() -> None:
    from sweep.core.inputs import count_nodes

    shared: list = [1] * 10
    for _ in range(12):
        shared = [shared] * 10  # 10**13 values once expanded
    assert count_nodes(shared, 1000) == 1001
    assert count_nodes({"a": [1, 2], "b": 3}, 1000) == 7  # the dict, 2 keys, the list, 3 values


def test_short_never_builds_the_whole_repr() -> None:
    shared: list = ["lol"] * 10
    for _ in range(12):
        shared = [shared] * 10
    text = short(shared)
    assert len(text) <= 80 and "..." in text
    assert short("abc") == "'abc'"
    p = Problem("f", "k", "x" * 10_000, "fix")
    assert len(str(p)) < 600


# --- 3: options ----------------------------------------------------------------------------

OPTIONS = [
    (["--metric", "not_a_metric"], "--metric", "unknown metric 'not_a_metric'"),
    (["--metric", "mAP", "--metric", "map", "--mode", "max", "--mode", "max",
      "--sampler", "nsga2"], "--metric", "the same metric twice"),
    (["--eval-every", "-1"], "--eval-every", "must be >= 0"),
    (["--keep-checkpoints", "-1"], "--keep-checkpoints", "must be >= 1"),
    (["--keep-checkpoints", "0"], "--keep-checkpoints", "must be >= 1"),
    (["--max-failures", "-1"], "--max-failures", "must be >= 0"),
    (["--max-consecutive-failures", "0"], "--max-consecutive-failures", "must be >= 1"),
    (["--time-budget", "-5"], "--time-budget", "must be > 0 minutes"),
    (["--time-budget", "0"], "--time-budget", "must be > 0 minutes"),
    (["--time-budget", "nan"], "--time-budget", "finite"),
    (["--step-budget", "-1"], "--step-budget", "must be > 0"),
    (["--step-budget", "0"], "--step-budget", "must be > 0"),
    (["--name", ""], "--name", "is not a plain folder name"),
    (["--name", "a/b"], "--name", "is not a plain folder name"),
    (["--name", ".."], "--name", "is not a plain folder name"),
    (["--gpus-per-trial", "4"], "--gpus-per-trial", "no trial could ever start"),
    (["--gpus-per-trial", "2", "--declare-gpus", "1"], "--gpus-per-trial",
     "--declare-gpus says 1"),
    (["--cpus-per-trial", "10000"], "--cpus-per-trial", "this machine has"),
    (["--cpus-per-trial", "inf"], "--cpus-per-trial", "finite"),
    (["--declare-gpus", "-1"], "--declare-gpus", "must be >= 0"),
    (["--sampler", "grid"], "l2_weight", "--sampler grid needs every searched parameter discrete"),
    (["--study-url", "notaurl"], "--study-url", "cannot open the Optuna study storage"),
    (["--study-url", "foo://x"], "--study-url", "cannot open the Optuna study storage"),
    (["--study-url", "sqlite:////nonexistent-dir/x/study.db"], "--study-url",
     "unable to open database file"),
    (["--study-url", "postgresql+psycopg://u:secret@127.0.0.1:1/db"], "--study-url",
     "Connection refused"),
]


@pytest.mark.parametrize(("extra", "key", "words"), OPTIONS,
                         ids=[" ".join(o[0])[:40] for o in OPTIONS])
def test_bad_option_is_refused_before_launch(extra: list[str], key: str, words: str,
                                             tmp_path: Path, workspace: Path, no_ray: list,
                                             capsys: pytest.CaptureFixture) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    before = snapshot(tmp_path)
    argv = ["run", "--space", str(space), "--pipeline", str(workspace), "--storage",
            str(tmp_path / "exps"), "--name", "n", *extra]
    if "--name" in extra:
        argv.remove("n"), argv.remove("--name")
    err = refused(argv, capsys, "nothing was launched", key, words, "Fix:")
    assert "secret" not in err  # a study URL's password is not echoed
    assert snapshot(tmp_path) == before and not no_ray


@pytest.mark.parametrize("extra", [["--metric", "nope"], ["--max-failures", "-1"],
                                   ["--space", "SPACE"]])
def test_demo_refuses_before_writing_its_data(extra: list[str], tmp_path: Path, no_ray: list,
                                              capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.yaml").write_text("parameters:\n  a: 1\n  a: 2\n")
    extra = [str(tmp_path / "bad.yaml") if x == "SPACE" else x for x in extra]
    refused(["demo", "--workspace", str(tmp_path / "ws"), "--storage", str(tmp_path / "exps"),
             *extra], capsys, "Fix:")
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.yaml"] and not no_ray


@pytest.mark.parametrize("storage", ["file", "file/sub"])
def test_storage_that_is_a_file(storage: str, tmp_path: Path, workspace: Path, no_ray: list,
                                capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("mine")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    refused(["run", "--space", str(space), "--pipeline", str(workspace), "--storage",
             str(tmp_path / storage)], capsys, "--storage", "is a file")
    assert (tmp_path / "file").read_text() == "mine" and not no_ray


CHECK_STORAGE = """
import sys
from pathlib import Path
from sweep.core.errors import ConfigError
from sweep.run.settings import SweepSettings
ro = Path(sys.argv[1])
try:
    SweepSettings(name="n", space=ro / "s", pipeline=ro / "p", storage=ro / "x").check()
except ConfigError as e:
    print(e)
"""


def test_storage_not_writable(tmp_path: Path) -> None:
    """Permission bits stop a user; root (CI) writes through them, so there the folder is a
    read-only bind mount, made in a mount namespace of its own that ends with the check."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    if os.geteuid() != 0:
        s = SweepSettings(name="n", space=tmp_path / "s", pipeline=tmp_path / "p",
                          storage=ro / "x")
        with pytest.raises(ConfigError, match="not writable"):
            s.check()
        return
    if not shutil.which("unshare"):
        pytest.skip("root, and no unshare(1) to make a read-only mount")
    script = (f'mount --bind "{ro}" "{ro}" && mount -o remount,bind,ro "{ro}" && '
              f'exec "{sys.executable}" -c "$0" "{ro}"')
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                          CHECK_STORAGE], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode != 0 and "mount" in out.stderr:
        pytest.skip(f"root, but no read-only mount here: {out.stderr.strip()[:200]}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--storage" in out.stdout and "not writable" in out.stdout, out.stdout
    (ro / "still-writable-outside").write_text("the mount was private to the check")


@pytest.mark.parametrize("metric", ["mAP", "classification_loss", "Loss/total_loss",
                                    "DetectionBoxes_Recall/AR@100", "steps_per_sec"])
def test_every_reported_metric_is_accepted(metric: str, tmp_path: Path) -> None:
    from sweep.run.settings import DEFAULT_MODES, metric_tag

    tag = metric_tag(metric)
    s = SweepSettings(name="n", space=tmp_path / "s", pipeline=tmp_path / "p",
                      storage=tmp_path / "e", metrics=[tag],
                      modes=[DEFAULT_MODES.get(tag, "max")])
    s.check()
    assert metric != "classification_loss" or s.modes == ["min"]  # a loss is minimised


def test_gpus_declared_are_enough(tmp_path: Path) -> None:
    SweepSettings(name="n", space=tmp_path / "s", pipeline=tmp_path / "p", storage=tmp_path,
                  gpus_per_trial=1, declare_gpus=1).check()


NODES = [{"Alive": True, "Resources": {"CPU": 2.0}},
         {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
         {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]


@pytest.mark.parametrize(("cpus", "gpus", "ok"), [
    (2, 0, True), (8, 1, True), (4, 0.5, True), (16, 0, False), (1, 2, False), (64, 8, False)])
def test_cluster_must_have_a_node_that_holds_a_trial(cpus: float, gpus: float, ok: bool,
                                                     tmp_path: Path) -> None:
    s = SweepSettings(name="n", space=tmp_path / "s", pipeline=tmp_path / "p",
                      cpus_per_trial=cpus, gpus_per_trial=gpus, address="10.0.0.1:6379")
    if ok:
        s.check_cluster(NODES)
    else:
        with pytest.raises(ConfigError, match="at most 8 CPUs and 1 GPUs each"):
            s.check_cluster(NODES)


def test_cluster_check_runs_right_after_connecting(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    calls: list[str] = []
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append("init"))
    monkeypatch.setattr(ray, "nodes", lambda: NODES)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    s = SweepSettings(name="n", space=tmp_path / "s", pipeline=tmp_path / "p",
                      storage=tmp_path / "exps", gpus_per_trial=4, address="10.0.0.1:6379")
    s.check()  # the local machine's GPUs do not matter for a cluster
    with pytest.raises(ConfigError, match="--gpus-per-trial"):
        tune_backend.init_ray(s)
    assert calls == ["init", "shutdown"] and not (tmp_path / "exps").exists()


def test_an_address_nothing_listens_on_is_refused_at_once(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import ray

    def tripwire(**kw: object) -> None:
        raise RayStarted("ray.init would retry this address for minutes")

    monkeypatch.setattr(ray, "init", tripwire)
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = SweepSettings(name="n", space=tmp_path / "s", pipeline=tmp_path / "p",
                             address=f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="no Ray cluster answers at 127.0.0.1"):
        tune_backend.init_ray(settings)


# --- 4: failing after the folder is written leaves nothing behind ------------------------------

@pytest.fixture
def fails_in_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **kw: object) -> None:
        raise RuntimeError("the sweep failed")

    monkeypatch.setattr(tune_backend, "init_ray", lambda settings: None)
    monkeypatch.setattr(tune_backend, "run_sweep", boom)


def _run_argv(tmp_path: Path, workspace: Path, *extra: str) -> list[str]:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return ["run", "--space", str(space), "--pipeline", str(workspace), "--storage",
            str(tmp_path / "exps"), "--name", "n", "--no-report", *extra]


def test_failure_after_the_folder_removes_what_this_run_made(
        tmp_path: Path, workspace: Path, fails_in_sweep: None,
        capsys: pytest.CaptureFixture) -> None:
    from sweep.core import errors

    assert cli.main(_run_argv(tmp_path, workspace)) == errors.EXIT_ERROR_AFTER_LAUNCH
    assert not (tmp_path / "exps").exists()  # the storage folder too: this run made it
    err = capsys.readouterr().err
    assert "RuntimeError: the sweep failed" in err  # the cause, with its traceback
    assert "what this run created was removed" in err and "is kept" not in err


def test_failure_leaves_an_empty_folder_the_user_made(tmp_path: Path, workspace: Path,
                                                      fails_in_sweep: None) -> None:
    (tmp_path / "exps" / "n").mkdir(parents=True)
    (tmp_path / "exps" / "other").mkdir()
    assert cli.main(_run_argv(tmp_path, workspace)) != 0
    assert sorted(p.name for p in (tmp_path / "exps").iterdir()) == ["n", "other"]
    assert list((tmp_path / "exps" / "n").iterdir()) == []


def test_failure_with_overwrite_puts_the_old_experiment_back(tmp_path: Path, workspace: Path,
                                                             fails_in_sweep: None) -> None:
    old = tmp_path / "exps" / "n"
    old.mkdir(parents=True)
    write_json(old / "experiment.json", {"mine": True})
    assert cli.main(_run_argv(tmp_path, workspace, "--overwrite")) != 0
    assert [p.name for p in (tmp_path / "exps").iterdir()] == ["n"]
    assert (old / "experiment.json").read_text().strip().startswith('{\n  "mine": true')


def test_an_existing_experiment_is_refused_and_untouched(tmp_path: Path, workspace: Path,
                                                         fails_in_sweep: None,
                                                         capsys: pytest.CaptureFixture) -> None:
    old = tmp_path / "exps" / "n"
    old.mkdir(parents=True)
    write_json(old / "experiment.json", {"mine": True})
    before = snapshot(tmp_path / "exps")
    refused(_run_argv(tmp_path, workspace), capsys, "already exists", "sweep resume n")
    assert snapshot(tmp_path / "exps") == before


def _experiment(tmp_path: Path, workspace: Path) -> Experiment:
    """An experiment folder as `sweep run` leaves it, with a (never unpickled) Ray state."""
    root = tmp_path / "exps" / "n"
    s = SweepSettings(name="n", space=tmp_path / "space.yaml", pipeline=workspace,
                      storage=tmp_path / "exps")
    (tmp_path / "space.yaml").write_text(SPACE)
    exp = cli.prepare_experiment(s, overwrite=False)
    (root / "ray").mkdir()
    (root / "ray" / "tuner.pkl").write_bytes(b"not a pickle: preflight never loads it")
    for p in (root, root / "ray"):
        p.chmod(0o755)
    (root / "ray" / "tuner.pkl").chmod(0o644)
    return exp


@pytest.mark.parametrize(("db", "words"), [
    ("garbage", "is not an SQLite database"), ("empty_file", "is not an SQLite database"),
    ("no_optuna", "holds no Optuna study"), ("other_study", "the study 'n' is not in")])
def test_resume_refuses_a_corrupt_study(db: str, words: str, tmp_path: Path, workspace: Path,
                                        no_ray: list, capsys: pytest.CaptureFixture) -> None:
    exp = _experiment(tmp_path, workspace)
    if db == "garbage":
        exp.study_db.write_bytes(b"\x00garbage" * 100)
    elif db == "empty_file":
        exp.study_db.write_bytes(b"")
    elif db == "no_optuna":
        with sqlite3.connect(exp.study_db) as c:
            c.execute("create table t (x)")
    else:
        import optuna

        optuna.create_study(study_name="someone-else", storage=f"sqlite:///{exp.study_db}")
    before = snapshot(tmp_path)
    refused(["resume", "n", "--storage", str(tmp_path / "exps")], capsys, "study.db", words,
            "Fix:")
    assert snapshot(tmp_path) == before and not no_ray


# --- 5: a named parameter never replaces the structure that is there ---------------------------

def _mean_stddev(tmp_path: Path) -> Path:
    text = TINY.read_text()
    start = text.index("box_coder {")
    end = text.index("\n", start)
    p = tmp_path / "pipeline.config"
    p.write_text(text[:start] + MEAN_STDDEV + text[end:])
    return p


@pytest.mark.parametrize("name", ["box_coder.y_scale", "box_coder.width_scale"])
def test_box_coder_scale_refuses_another_box_coder(name: str, tmp_path: Path) -> None:
    pipe = _mean_stddev(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(f"parameters:\n  {name}: {{uniform: [5.0, 20.0]}}\n")
    problems = validate.validate(space, pipe, check_data=False)
    assert len(problems) == 1, problems
    assert "mean_stddev_box_coder, not faster_rcnn_box_coder" in problems[0].problem
    assert "model.ssd.box_coder.mean_stddev_box_coder.<field>" in problems[0].fix
    with pytest.raises(render.ParamError, match="would replace it"):
        render.render(render.load_pipeline(pipe), {name: 10.0})
    # The fix works: search the box coder that is there by its proto path.
    space.write_text("parameters:\n  model.ssd.box_coder.mean_stddev_box_coder.stddev:"
                     " {uniform: [0.05, 0.2]}\n")
    assert validate.validate(space, pipe, check_data=False) == []


def test_l2_weight_refuses_an_l1_regularizer(tmp_path: Path) -> None:
    pipe = tmp_path / "pipeline.config"
    pipe.write_text(TINY.read_text().replace("l2_regularizer { weight: 0.0004 }",
                                             "l1_regularizer { weight: 0.0004 }", 1))
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  l2_weight.feature_extractor: {loguniform: [1.0e-5, 1.0e-3]}\n")
    (p,) = validate.validate(space, pipe, check_data=False)
    assert "is l1_regularizer, not l2_regularizer" in p.problem
    space.write_text("parameters:\n  l2_weight.box_predictor: {loguniform: [1.0e-5, 1.0e-3]}\n")
    assert validate.validate(space, pipe, check_data=False) == []  # that one is l2


@pytest.mark.parametrize("name", ["constant_learning_rate.learning_rate",
                                  "manual_step_learning_rate.schedule"])
def test_schedule_fields_refuse_another_schedule(name: str, tmp_path: Path) -> None:
    value = "0.01" if name.endswith("learning_rate") else "[[10, 0.01]]"
    space = tmp_path / "space.yaml"
    space.write_text(f"parameters:\n  {name}: {value}\n")
    (p,) = validate.validate(space, TINY, check_data=False)
    assert "is cosine_decay_learning_rate" in p.problem and "learning_rate:" in p.fix
    # The fix works: choose the schedule in the space too.
    space.write_text(f"parameters:\n  learning_rate: {name.split('.')[0]}\n  {name}: {value}\n")
    assert validate.validate(space, TINY, check_data=False) == []


def test_a_sampled_schedule_with_fields_of_one_schedule_is_caught(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  learning_rate: {categorical: [cosine_decay_learning_rate,"
                     " constant_learning_rate]}\n"
                     "  cosine_decay_learning_rate.warmup_steps: {int: [0, 5]}\n")
    problems = validate.validate(space, TINY, check_data=False)
    assert any("would replace it" in p.problem for p in problems), problems


# --- 6: each message's fix works when applied --------------------------------------------------

def test_fix_empty_range_of_a_dotted_name(tmp_path: Path) -> None:
    name = "cosine_decay_learning_rate.warmup_steps"
    space = tmp_path / "space.yaml"
    space.write_text(f"parameters:\n  {name}: {{int: [3, 3]}}\n")
    (p,) = validate.validate(space, TINY, check_data=False)
    fix = p.fix.split("`")[1]
    assert fix == f"{name}: 3"
    space.write_text(f"parameters:\n  {fix}\n")
    assert validate.validate(space, TINY, check_data=False) == []


@pytest.mark.parametrize(("ids", "num_classes", "want"), [
    ([1, 2], 3, 2), ([1, 2, 3, 4], 3, 4), ([1, 3], 3, None), ([1, 2, 3], 3, None)])
def test_fix_label_map_vs_num_classes(ids: list[int], num_classes: int, want: int | None,
                                      tmp_path: Path, workspace: Path) -> None:
    label_map = tmp_path / "label_map.pbtxt"
    label_map.write_text("".join(f"item {{ id: {i} name: 'c{i}' }}\n" for i in ids))
    cfg = render.load_pipeline(workspace)
    old = cfg.train_input_reader.label_map_path
    pipe = tmp_path / "pipeline.config"
    pipe.write_text(workspace.read_text().replace(old, str(label_map)))
    render.write_pipeline(render.render(render.load_pipeline(pipe),
                                        {"model.ssd.num_classes": num_classes}), pipe)
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    found = [p for p in validate.validate(space, pipe) if p.key == "model.ssd.num_classes"]
    if want is None:
        assert found == []  # never a fix that says to set what is already set
        return
    (p,) = found
    assert f"set model.ssd.num_classes: {want}" in p.fix
    space.write_text(SPACE + f"  model.ssd.num_classes: {want}\n")  # "as a constant in the space"
    assert validate.validate(space, pipe) == []


def test_fix_duplicate_key(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE + "  num_steps: 20\n")
    (p,) = validate.validate(space, TINY, check_data=False)
    assert "give each key once" in p.fix
    space.write_text(SPACE)
    assert validate.validate(space, TINY, check_data=False) == []


def test_fix_gpus_per_trial(tmp_path: Path) -> None:
    s = SweepSettings(name="n", space=tmp_path / "s", pipeline=tmp_path / "p", storage=tmp_path,
                      gpus_per_trial=4)
    with pytest.raises(ConfigError) as e:
        s.check()
    (p,) = e.value.problems
    s.gpus_per_trial = float(p.fix.split("--gpus-per-trial ")[1].split(",")[0])
    s.check()


# --- 8: an experiment folder is trusted input ------------------------------------------------

@pytest.mark.parametrize("where", ["root", "ray", "ray/tuner.pkl"])
@pytest.mark.parametrize("bits", [stat.S_IWGRP, stat.S_IWOTH])
def test_resume_refuses_a_folder_others_can_write(where: str, bits: int, tmp_path: Path,
                                                  workspace: Path, no_ray: list,
                                                  capsys: pytest.CaptureFixture) -> None:
    exp = _experiment(tmp_path, workspace)
    path = exp.root if where == "root" else exp.root / where
    path.chmod(path.stat().st_mode | bits)
    err = refused(["resume", "n", "--storage", str(tmp_path / "exps")], capsys, "writable by",
                  "pickled Ray state", "chmod -R go-w")
    assert not no_ray
    # The fix works.
    os.system(err.split("Fix: if you trust its contents: ")[1].split(", then")[0])  # noqa: S605
    assert trust_problem(exp) is None


def test_resume_refuses_a_renamed_folder(tmp_path: Path, workspace: Path, no_ray: list,
                                         capsys: pytest.CaptureFixture) -> None:
    exp = _experiment(tmp_path, workspace)
    exp.root.rename(exp.root.with_name("copy"))
    refused(["resume", "copy", "--storage", str(tmp_path / "exps")], capsys,
            "holds experiment 'n'", "rename the folder back to 'n'")
    assert not no_ray and not exp.root.exists()


def test_a_private_folder_is_trusted(tmp_path: Path, workspace: Path) -> None:
    assert trust_problem(_experiment(tmp_path, workspace)) is None


# --- no traceback for broken experiment folders ----------------------------------------------

@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"[]", b"not json",
                                     b'{"name": "n", "num_tri'])  # a write cut short
@pytest.mark.parametrize("command", ["status", "report", "resume", "export"])
def test_broken_experiment_json(content: bytes, command: str, tmp_path: Path, no_ray: list,
                                capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "exps" / "n"
    root.mkdir(parents=True, mode=0o755)
    root.chmod(0o755)
    (root / "experiment.json").write_bytes(content)
    before = snapshot(tmp_path)
    out = ["--out", str(tmp_path / "out")] if command in ("report", "export") else []
    err = refused([command, "n", "--storage", str(tmp_path / "exps"), *out], capsys,
                  f"{root / 'experiment.json'}: is damaged", "restore it from a copy")
    assert "no experiment here" not in err
    assert snapshot(tmp_path) == before and not no_ray


def test_resume_of_incomplete_settings(tmp_path: Path, no_ray: list,
                                       capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "exps" / "n"
    root.mkdir(parents=True)
    root.chmod(0o755)
    (root / "experiment.json").write_text("{}")
    refused(["resume", "n", "--storage", str(tmp_path / "exps")], capsys, "experiment.json",
            "incomplete")
    assert not no_ray


# --- damaged state: every command names the file and what to do; nothing is overwritten ------

def _damage(exp: Experiment, what: str) -> Path:
    """Truncate one of the experiment's records as a full disk or a killed write would."""
    if what == "status":
        path = exp.trials()[1].status_path
        path.write_text(path.read_text()[:15])
    elif what == "study":
        path = exp.study_db
        path.write_bytes(path.read_bytes()[:600])
    else:
        exp.ray_dir.mkdir(exist_ok=True)
        path = exp.ray_dir / "experiment_state-2026-12-01_10-00-00.json"
        path.write_text('{"trial_data": [["{\\"trial_id')
        (exp.ray_dir / "tuner.pkl").write_bytes(b"\x80\x04" * 20)
    return path


@pytest.mark.parametrize("what", ["status", "study", "ray"])
def test_status_and_report_name_a_damaged_file_and_go_on(what: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from tests.report_fixtures import make_experiment

    exp = make_experiment(tmp_path / "exps", name="x").exp
    path = _damage(exp, what)
    before = snapshot(exp.root)
    # The report (seconds) where it matters: it must not open a damaged study.
    commands = [["status", "x"]] + ([["report", "x", "--out", str(tmp_path / "r")]]
                                   if what == "study" else [])
    for argv in commands:
        assert cli.main([*argv, "--storage", str(tmp_path / "exps")]) == 0, argv
        err = capsys.readouterr().err
        assert f"warning: {path}: " in err and "Fix: " in err, (argv, err)
        assert "Traceback" not in err
    assert snapshot(exp.root) == before  # read, never written (the study least of all)
    if what == "study":
        assert "report is from the trials' folders only" in (tmp_path / "r" / "report.md"
                                                             ).read_text()


@pytest.mark.parametrize(("what", "words"), [
    ("study", "Optuna study database cannot be read"),
    ("ray", "not Ray Tune's experiment state")])
def test_resume_refuses_damaged_state_it_cannot_rebuild(what: str, words: str, tmp_path: Path,
                                                        workspace: Path, no_ray: list,
                                                        capsys: pytest.CaptureFixture) -> None:
    exp = _experiment(tmp_path, workspace)
    import optuna

    optuna.create_study(study_name="n", storage=f"sqlite:///{exp.study_db}")
    path = _damage(exp, what)
    before = snapshot(tmp_path)
    refused(["resume", "n", "--storage", str(tmp_path / "exps")], capsys, str(path), words,
            "Fix:")
    assert snapshot(tmp_path) == before and not no_ray


def test_a_damaged_trial_status_is_rebuilt_from_its_folder(tmp_path: Path) -> None:
    from sweep.core.experiment import COMPLETED, INTERRUPTED, read_json
    from sweep.run.trial import rebuild_status
    from tests.report_fixtures import make_experiment

    exp = make_experiment(tmp_path / "exps", name="x", finished=False).exp
    states = {t.name: t.status()["state"] for t in exp.trials()}
    for t in exp.trials():
        # The synthetic trials evaluate to step 40 of their rendered config's num_steps.
        t.pipeline_path.write_text(re.sub(r"num_steps: \d+", "num_steps: 40",
                                          t.pipeline_path.read_text()))
        if states[t.name] in (COMPLETED, "RUNNING", "FAILED"):
            original = t.status_path.read_text()
            t.status_path.write_text(original[:15])
            status, kept = rebuild_status(t)
            assert kept.read_text() == original[:15]  # kept beside it, as it was
            assert read_json(t.status_path) == status and status["rebuilt_from"] == kept.name
            expected = {"RUNNING": INTERRUPTED}.get(states[t.name], states[t.name])
            assert status["state"] == expected, (t.name, states[t.name], status)
