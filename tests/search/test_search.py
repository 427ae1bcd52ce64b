"""How the sweep searches (samplers, study names and URLs): fast checks of the sampler set-up, the
pre-launch refusals and the study URL handling; then every sampler and every scheduler, known points
beyond the budget and ASHA's early stop run for real (Ray, Optuna) with the stand-in worker
(tests/fake_worker.py) in one Ray shared by the module's sweeps."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from sweep import cli
from sweep.core import errors, study_url
from sweep.core.experiment import COMPLETED, STOPPED, Experiment
from sweep.run import tune_backend, validate
from sweep.run.settings import SweepSettings
from sweep.search import samplers, space, study

# Conditional and all discrete (so grid runs on it too).
SPACE = """\
parameters:
  num_steps: 40
  l2_weight: {categorical: [1.0e-4, 1.0e-3]}
  focal_loss.gamma: {stepped: [1.0, 3.0, 1.0]}
  learning_rate:
    choice:
      cosine_decay_learning_rate:
        cosine_decay_learning_rate.learning_rate_base: {categorical: [0.01, 0.04]}
        cosine_decay_learning_rate.total_steps: {derived: num_steps}
        cosine_decay_learning_rate.warmup_steps: {int: [0, 2]}
      constant_learning_rate:
        constant_learning_rate.learning_rate: {categorical: [0.01, 0.02]}
points:
  - base
"""


def _space(tmp_path: Path, text: str = SPACE) -> space.SearchSpace:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return space.load_space(path)


def _settings(**kw) -> SweepSettings:  # noqa: ANN003
    return SweepSettings(name="s", space=Path("space.yaml"), pipeline=Path("p.config"), **kw)


# ------------------------------------------------------------------------------ fast

def test_tpe_is_set_up_for_concurrent_conditional_small_sweeps() -> None:
    tpe = tune_backend.make_sampler(_settings(num_trials=16, max_concurrent=2), num_points=1)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    # Optuna keeps these private; they are what this test is about.
    assert tpe._constant_liar and tpe._multivariate and tpe._group
    assert tpe._n_startup_trials == 4  # not Optuna's 10: 12 TPE-guided trials of 16
    small = tune_backend.make_sampler(_settings(num_trials=4, max_concurrent=2), num_points=1)
    assert small._n_startup_trials == 4  # random search up to 8 trials (the replay's finding)
    assert not tune_backend.make_sampler(_settings(max_concurrent=1))._constant_liar


def test_qmc_draws_depend_on_the_seed(tmp_path: Path) -> None:
    # Unscrambled Sobol ignores its seed: every `--sampler qmc` sweep drew the same configs
    # whatever --seed said (the replay benchmark showed 50 seeds giving one result).
    from tests.conftest import REPO

    sp = space.load_space(REPO / "search_spaces" / "demo_tiny.yaml")

    def draws(seed: int) -> list[float]:
        st = optuna.create_study(sampler=tune_backend.make_sampler(
            _settings(sampler="qmc", seed=seed)))
        out = []
        for _ in range(4):
            t = st.ask()
            out.append(sp.sample(t)["l2_weight"])
            st.tell(t, 0.0)
        return out[1:]  # the first trial is the independent (random) sampler's in any case

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)


@pytest.mark.parametrize(("num_trials", "num_points", "startup"),
                         [(4, 0, 4), (4, 1, 4), (8, 3, 8), (9, 0, 2), (16, 1, 4), (20, 0, 5),
                          (20, 8, 8), (100, 1, 10)])
def test_tpe_startup_is_sized_to_the_budget_and_points_count(num_trials, num_points,  # noqa: ANN001
                                                             startup) -> None:  # noqa: ANN001
    assert samplers.tpe_startup_trials(num_trials, num_points) == startup


def test_grid_enumerates_every_discrete_parameter_of_a_conditional_space(tmp_path: Path) -> None:
    grid, continuous = _space(tmp_path).grid()
    assert continuous == []
    assert grid["focal_loss.gamma"] == [1.0, 2.0, 3.0]
    assert grid["cosine_decay_learning_rate.warmup_steps"] == [0, 1, 2]
    assert grid["learning_rate"] == ["cosine_decay_learning_rate", "constant_learning_rate"]
    assert isinstance(tune_backend.make_sampler(_settings(sampler="grid"), _space(tmp_path)),
                      optuna.samplers.GridSampler)


def test_grid_on_continuous_parameters_is_refused_naming_them(tmp_path: Path) -> None:
    sp = _space(tmp_path, SPACE.replace("{categorical: [1.0e-4, 1.0e-3]}",
                                        "{loguniform: [1.0e-5, 1.0e-2]}"))
    problems = validate.search_problems("grid", "asha", sp)
    assert len(problems) == 1 and problems[0].key == "l2_weight"
    assert "continuous" in problems[0].problem and "--sampler tpe" in problems[0].fix
    with pytest.raises(errors.ConfigError, match="l2_weight"):
        tune_backend.make_sampler(_settings(sampler="grid"), sp)


def test_asha_with_a_sampled_num_steps_is_refused_before_launch(tmp_path: Path) -> None:
    sp = _space(tmp_path, SPACE.replace("num_steps: 40", "num_steps: {categorical: [20, 40]}"))
    problems = validate.search_problems("tpe", "asha", sp)
    assert [p.key for p in problems] == ["num_steps"] and "max_t" in problems[0].problem
    assert validate.search_problems("tpe", "median", sp) == []


def test_known_points_beyond_the_budget_are_left_out_with_a_warning(capsys) -> None:  # noqa: ANN001
    points = [{"l2_weight": x} for x in (1, 2, 3, 4, 5)]
    assert samplers.known_points(points, 2) == points[:2]
    assert "5 known points but --num-trials is 2" in capsys.readouterr().err
    assert samplers.known_points(points, 5) == points


def test_a_grid_leaves_out_points_that_do_not_set_every_parameter(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    sp = _space(tmp_path)
    full = {"l2_weight": 1.0e-4, "focal_loss.gamma": 2.0, "learning_rate": "constant_learning_rate",
            "constant_learning_rate.learning_rate": 0.02}
    assert samplers.known_points([full, {"l2_weight": 1.0e-4}], 5, space=sp, sampler="grid") == [full]
    assert "leaving out 1 known point" in capsys.readouterr().err


PASSWORD = "s3cr3t-pw-Zq9"


def test_the_study_url_is_stored_and_shown_without_its_password(monkeypatch) -> None:  # noqa: ANN001
    url = f"postgresql+psycopg://sweep:{PASSWORD}@db.example:5432/optuna"
    assert PASSWORD not in study_url.without_password(url)
    assert study_url.without_password(url) == "postgresql+psycopg://sweep@db.example:5432/optuna"
    assert study_url.masked(url) == "postgresql+psycopg://sweep:***@db.example:5432/optuna"
    data = json.dumps(_settings(study_url=url).to_json())
    assert PASSWORD not in data
    # The password comes back from $SWEEP_STUDY_URL for the same server, user and database only.
    monkeypatch.setenv(study_url.ENV_URL, url)
    assert study_url.with_password(study_url.without_password(url)) == url
    other = "postgresql+psycopg://sweep@other.example:5432/optuna"
    assert study_url.with_password(other) == other
    assert study_url.cli_url(None) == url and study_url.cli_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_new_experiment_never_reuses_a_study_name_in_a_shared_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    assert study.new_study_name("x", url) == "x"
    optuna.create_study(study_name="x", storage=url)
    again = study.new_study_name("x", url)
    assert again != "x" and again.startswith("x-")


@pytest.mark.parametrize("what", ["not a database", "a folder"])
def test_a_storage_whose_studies_cannot_be_listed_is_refused_not_guessed(
        tmp_path: Path, what: str) -> None:
    """Taking the experiment's name unlisted could append to another experiment's study."""
    path = tmp_path / "shared.db"
    if what == "a folder":
        path.mkdir()
    else:
        path.write_bytes(b"not an sqlite file, yet maybe someone's study " * 100)
    with pytest.raises(errors.ConfigError, match="cannot list the studies") as e:
        study.new_study_name("x", f"sqlite:///{path}")
    assert e.value.problems[0].key == "--study-url" and str(path) in str(e.value)
    assert path.is_dir() or path.read_bytes().startswith(b"not an sqlite")  # left as it was


def test_a_refused_study_listing_never_shows_the_password() -> None:
    url = "postgresql+psycopg2://sweep:s3cret@127.0.0.1:1/optuna"  # nothing listens on port 1
    with pytest.raises(errors.ConfigError) as e:
        study.new_study_name("x", url)
    assert "s3cret" not in str(e.value) and "cannot list the studies" in str(e.value)


# ------------------------------------------------------------------------------ slow: Ray

@pytest.fixture(scope="module")
def shared_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One local Ray for the module's sweeps (a Ray start is ~10 s; each sweep is seconds)."""
    import ray

    from tests.conftest import REPO, make_workspace, start_local_ray

    root = tmp_path_factory.mktemp("search")
    pipeline = make_workspace(root, n_train=8, n_eval=4)
    (root / "space.yaml").write_text(SPACE)
    saved = dict(os.environ)
    # Ray's workers (and the trial jobs they start) take the environment of ray.init.
    os.environ.update(SWEEP_WORKER_MODULE="tests.fake_worker", FAKE_MODE="ok",
                      PYTHONPATH=str(REPO))
    start_local_ray(2)
    try:
        yield root, pipeline
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def _sweep(root: Path, pipeline: Path, name: str, *args: str, report: bool = False) -> Experiment:
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = cli.main(["run", "--space", str(root / "space.yaml"), "--pipeline", str(pipeline),
                       "--name", name, "--no-dashboard", "--eval-every", "20",
                       *([] if report else ["--no-report"]), *args])
    finally:
        os.chdir(cwd)
    assert rc == 0
    return Experiment(root / "experiments" / name)


def _finished_cleanly(exp: Experiment, n: int) -> optuna.Study:
    s = exp.settings()
    st = optuna.load_study(study_name=s["study_name"], storage=exp.storage_url())
    states = [t.state for t in st.trials]
    assert len(states) == n, states
    assert all(x.is_finished() for x in states), states  # nothing RUNNING or WAITING
    assert s.get("finished") is True
    return st


SAMPLERS = ["tpe", "random", "cmaes", "grid", "qmc", "nsga2"]
SCHEDULERS = ["fifo", "asha", "median"]


# Every sampler once, every scheduler with two of them (the 18 pairs took 18 sweeps; the sampler
# and the scheduler do not meet but through Ray's searcher and scheduler interfaces, which
# every pair here crosses).
PAIRS = [(s, SCHEDULERS[i % len(SCHEDULERS)]) for i, s in enumerate(SAMPLERS)]


@pytest.mark.slow
@pytest.mark.parametrize(("sampler", "scheduler"), PAIRS)
def test_every_sampler_and_every_scheduler_run(shared_ray, sampler: str, scheduler: str) -> None:  # noqa: ANN001
    root, pipeline = shared_ray
    metric = ["--metric", "mAP", "--metric", "total_loss"] if sampler == "nsga2" else []
    exp = _sweep(root, pipeline, f"m-{sampler}-{scheduler}", "--sampler", sampler,
                 "--scheduler", scheduler, "--num-trials", "2", *metric)
    _finished_cleanly(exp, 2)
    for t in exp.trials():
        assert t.status()["state"] in (COMPLETED, STOPPED), (t.name, t.status())
        p = t.params()
        # Conditional parameters: only the chosen branch's are set.
        lr = p["learning_rate"]
        other = ({"cosine_decay_learning_rate", "constant_learning_rate"} - {lr}).pop()
        assert not any(k.startswith(other + ".") for k in p), p


@pytest.mark.slow
def test_known_points_beyond_the_budget_end_cleanly_with_a_report(shared_ray, capfd) -> None:  # noqa: ANN001
    root, pipeline = shared_ray
    points = "".join(f"  - {{l2_weight: {v}}}\n" for v in (1.0e-4, 1.0e-3, 1.0e-4, 1.0e-3))
    (root / "space5.yaml").write_text(SPACE + points)  # base + 4 = 5 points
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = cli.main(["run", "--space", "space5.yaml", "--pipeline", str(pipeline), "--name",
                       "points", "--no-dashboard", "--eval-every", "20", "--num-trials", "2",
                       "--scheduler", "fifo"])
    finally:
        os.chdir(cwd)
    err = capfd.readouterr().err
    assert rc == 0, err[-3000:]
    assert "5 known points but --num-trials is 2" in err
    exp = Experiment(root / "experiments" / "points")
    _finished_cleanly(exp, 2)
    assert (root / "reports" / "points" / "report.html").exists()


@pytest.mark.slow
def test_asha_stops_a_trial_at_its_rung_not_after_training_on(shared_ray) -> None:  # noqa: ANN001
    root, pipeline = shared_ray
    # One at a time, in this order: a good trial sets the rung, a worse one is stopped at it.
    points = "".join(f"  - {{l2_weight: {v}, learning_rate: constant_learning_rate}}\n"
                     for v in (1.0e-4, 1.0e-3, 1.0e-3))
    (root / "space_asha.yaml").write_text(SPACE.replace("  - base\n", points))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = cli.main(["run", "--space", "space_asha.yaml", "--pipeline", str(pipeline),
                       "--name", "asha", "--no-dashboard", "--eval-every", "10",
                       "--num-trials", "3", "--max-concurrent", "1", "--scheduler", "asha",
                       "--no-report"])
    finally:
        os.chdir(cwd)
    assert rc == 0
    exp = Experiment(root / "experiments" / "asha")
    stopped = [t.status() for t in exp.trials() if t.status()["state"] == STOPPED]
    assert stopped, [t.status() for t in exp.trials()]
    for st in stopped:
        # Stopped at the rung it reported last, having trained no further than the next
        # evaluation (with the gate: not at all).
        assert st["trained_steps"] <= st["reported_step"] + 10, st
        assert st["trained_steps"] < st["num_steps"], st
    from sweep.report.report import steps_saved

    assert steps_saved(exp) == sum(st["num_steps"] - st["trained_steps"] for st in stopped) > 0


@pytest.mark.slow
def test_overwrite_starts_a_new_study_and_leaves_the_old_one_intact(shared_ray, tmp_path) -> None:  # noqa: ANN001
    root, pipeline = shared_ray
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = _sweep(root, pipeline, "hyg", "--study-url", url, "--num-trials", "2",
                   "--scheduler", "fifo", "--sampler", "random")
    name1 = first.settings()["study_name"]
    second = _sweep(root, pipeline, "hyg", "--study-url", url, "--num-trials", "2",
                    "--scheduler", "fifo", "--sampler", "random", "--overwrite")
    name2 = second.settings()["study_name"]
    assert name1 != name2
    assert len(optuna.load_study(study_name=name1, storage=url).trials) == 2  # untouched
    assert len(optuna.load_study(study_name=name2, storage=url).trials) == 2  # not 4


@pytest.mark.slow
def test_an_error_after_the_trials_ran_is_not_exit_2(shared_ray, capfd) -> None:  # noqa: ANN001
    """The report cannot be written (its folder is a file): the trials ran, so the exit code
    is not 2 ("nothing was launched") but errors.EXIT_ERROR_AFTER_LAUNCH, and the experiment
    is kept for `sweep report`."""
    root, pipeline = shared_ray
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / "late").write_text("a file where the report folder goes")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = cli.main(["run", "--space", str(root / "space.yaml"), "--pipeline", str(pipeline),
                       "--name", "late", "--no-dashboard", "--eval-every", "20",
                       "--num-trials", "1", "--scheduler", "fifo", "--sampler", "random"])
    finally:
        os.chdir(cwd)
    err = capfd.readouterr().err
    assert rc == errors.EXIT_ERROR_AFTER_LAUNCH, (rc, err[-2000:])
    assert "the trials ran" in err and "sweep report late" in err
    exp = Experiment(root / "experiments" / "late")
    assert [t.status()["state"] for t in exp.trials()] == [COMPLETED]


def test_reconcile_fails_running_trials_and_never_crashes_on_waiting_ones(tmp_path: Path) -> None:
    from sweep.core.experiment import Experiment
    from sweep.run.tune_backend import reconcile

    url = f"sqlite:///{tmp_path / 'study.db'}"
    st = optuna.create_study(study_name="r", storage=url)
    st.enqueue_trial({"x": 1.0})  # a known point never asked for: WAITING
    st.enqueue_trial({"x": 2.0})
    running = st.ask()  # takes the first point: RUNNING, as a trial of a killed driver
    running.set_user_attr("ray_trial_id", "abc")
    (tmp_path / "exp").mkdir()
    assert reconcile(Experiment(tmp_path / "exp"), url, "r") == ["abc"]
    states = [t.state for t in optuna.load_study(study_name="r", storage=url).trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
