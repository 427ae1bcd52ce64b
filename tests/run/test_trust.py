"""A verdict you can bet on (issues 23 and 28): seeded trials, a base config never stopped
early, confirmation over seeds, and the interval that takes training and eval-image noise in.

Fast checks of the rules first; then one stand-in sweep (real Ray, real Optuna, the stand-in
worker with seed-drawn training noise) that many checks read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from sweep.core.experiment import COMPLETED, Experiment
from sweep.report import confirmation
from sweep.search import marks

# ------------------------------------------------------------------------------ fast


def test_trial_seeds_are_a_function_of_the_sweep_seed_and_the_trial_number() -> None:
    seeds = [marks.trial_seed(0, n) for n in range(50)]
    assert seeds == [marks.trial_seed(0, n) for n in range(50)]  # reproducible
    assert len(set(seeds)) == 50  # every trial its own
    assert seeds != [marks.trial_seed(1, n) for n in range(50)]  # another --seed, other seeds
    assert all(0 <= s < 2**31 for s in seeds)


def test_only_the_enqueued_base_point_is_marked_base(tmp_path: Path) -> None:
    from sweep.search.space import load_space

    space = tmp_path / "s.yaml"
    space.write_text("parameters:\n  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}\n")
    sp = load_space(space)
    base_point = {"l2_weight": 4.0e-4}
    study = optuna.create_study()
    study.enqueue_trial({"l2_weight": 1.0e-5})
    study.enqueue_trial(dict(base_point))
    define = marks.MarkedDefineByRun(sp, 7, base_point)
    got = []
    for _ in range(3):  # a known point, the base point, a sampled one
        t = study.ask()
        got.append(define(t))
        study.tell(t, 0.5)
    assert [marks.is_base(g) for g in got] == [False, True, False]
    assert [g[marks.SEED] for g in got] == [marks.trial_seed(7, n) for n in range(3)]
    assert [t.user_attrs["seed"] for t in study.trials] == [g[marks.SEED] for g in got]
    assert study.trials[1].user_attrs.get("base") is True


def test_the_two_level_interval_against_a_case_computed_by_hand() -> None:
    """Base: one run at 0.5 on every image draw. Best: two seeds at 0.6 and 0.7. A resample
    draws 2 of the best's seeds with replacement: means 0.6, 0.65 or 0.7 with probabilities
    1/4, 1/2, 1/4, so best - base is 0.1, 0.15 or 0.2, and the 95% interval is [0.1, 0.2]."""
    draws = 4000
    base = np.full((1, draws), 0.5)
    best = np.vstack([np.full(draws, 0.6), np.full(draws, 0.7)])
    low, high, used = confirmation.two_level_interval(base, best, resamples=draws)
    assert used == draws
    assert low == pytest.approx(0.1) and high == pytest.approx(0.2)
    # Image noise on top widens it: the same run varies with the image draw.
    rng = np.random.default_rng(0)
    wobble = rng.normal(0, 0.05, draws)
    low2, high2, _ = confirmation.two_level_interval(base + wobble, best, resamples=draws)
    assert low2 < 0.1 - 0.03 and high2 > 0.2 + 0.03


def test_seeds_needed_to_settle_a_difference() -> None:
    a = confirmation.ConfirmedConfig("a", True, {"x": 0.50, "y": 0.54})
    b = confirmation.ConfirmedConfig("b", False, {"z": 0.56, "w": 0.60})
    # sd 0.0283 each: 1.96² * (0.0008 + 0.0008) / 0.06² = 1.7 -> at least 2
    assert confirmation.seeds_needed(a, b) == 2
    c = confirmation.ConfirmedConfig("c", False, {"z": 0.51, "w": 0.55})
    # difference 0.01: 1.96² * 0.0016 / 0.0001 = 61.5 -> 62
    assert confirmation.seeds_needed(a, c) == 62


def test_a_confirmed_verdict_picks_the_best_mean_not_the_luckiest_run() -> None:
    base = confirmation.ConfirmedConfig("t0", True, {"c-t0-0": 0.50, "c-t0-1": 0.52}, step=40)
    lucky = confirmation.ConfirmedConfig("t1", False, {"c-t1-0": 0.70, "c-t1-1": 0.30}, step=40)
    steady = confirmation.ConfirmedConfig("t2", False, {"c-t2-0": 0.56, "c-t2-1": 0.58}, step=40)
    v = confirmation.decide([base, lucky, steady], "max")
    assert v is not None and v.winner is steady  # mean 0.57 beats lucky's 0.50
    assert v.diff == pytest.approx(0.06)
    text = " ".join(confirmation.describe(v, "mAP", "exp"))
    assert "t2's config mAP 0.57" in text and "2 seeds" in text


# ------------------------------------------------------------------------------ slow: stand-in

# Conditional parameters: runs of different branches carry different keys (Ray fills the
# others' with None, which a confirmation run must not take for values).
SPACE = """\
parameters:
  num_steps: 40
  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}
  learning_rate:
    choice:
      cosine_decay_learning_rate:
        cosine_decay_learning_rate.learning_rate_base: {loguniform: [3.0e-3, 0.1]}
      constant_learning_rate:
        constant_learning_rate.learning_rate: {loguniform: [1.0e-3, 0.05]}
points:
  - {l2_weight: 1.0e-5, learning_rate: constant_learning_rate, constant_learning_rate.learning_rate: 0.01}
  - l2_weight: 2.0e-5
    learning_rate: cosine_decay_learning_rate
    cosine_decay_learning_rate.learning_rate_base: 0.02
  - base
"""


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One stand-in sweep under ASHA, one trial at a time: two good known points first, then
    the base config, the worst at its first rung (its l2_weight 4e-4 scores 0.71 of the good
    ones' ~0.99); then confirmation runs, 2 seeds each of the base and the best."""
    import ray

    from sweep import cli
    from tests.conftest import REPO, make_workspace, start_local_ray

    root = tmp_path_factory.mktemp("trust")
    pipeline = make_workspace(root, n_train=8, n_eval=4)
    (root / "space.yaml").write_text(SPACE)
    saved = dict(os.environ)
    os.environ.update(SWEEP_WORKER_MODULE="tests.fake_worker", FAKE_MODE="ok", FAKE_NOISE="0.1",
                      PYTHONPATH=str(REPO))
    start_local_ray(2)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = cli.main(["run", "--space", "space.yaml", "--pipeline", str(pipeline), "--name",
                       "trust", "--no-dashboard", "--eval-every", "10", "--num-trials", "3",
                       "--max-concurrent", "1", "--scheduler", "asha", "--seed", "5",
                       "--confirm", "2"])
        yield root, Experiment(root / "experiments" / "trust"), rc
    finally:
        os.chdir(cwd)
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.slow
def test_the_base_trains_to_the_end_under_asha_though_worst_at_its_rung(trusted) -> None:  # noqa: ANN001
    _, exp, rc = trusted
    assert rc == 0
    search = [t for t in exp.trials() if not t.name.startswith("c-")]
    base = [t for t in search if marks.is_base(t.params())]
    assert len(base) == 1 and base[0].status()["base"] is True
    st = base[0].status()
    assert st["state"] == COMPLETED and st["trained_steps"] == st["num_steps"] == 40, st
    # It was the worst at the first rung: ASHA would have stopped it there.
    from sweep.odapi import metrics

    first = {t.name: metrics.read_trial(t.path).eval[10][metrics.MAP] for t in search}
    assert first[base[0].name] < min(v for k, v in first.items() if k != base[0].name)


@pytest.mark.slow
def test_every_trial_has_its_seed_in_folder_study_and_leaderboard(trusted) -> None:  # noqa: ANN001
    root, exp, _ = trusted
    seeds = {t.name: t.params()[marks.SEED] for t in exp.trials()}
    assert len(set(seeds.values())) == len(seeds)  # confirmation runs get new seeds
    for t in exp.trials():
        assert t.status()["seed"] == seeds[t.name]
    study = optuna.load_study(study_name=exp.settings()["study_name"], storage=exp.storage_url())
    by_ray = {t.user_attrs["ray_trial_id"]: t.user_attrs["seed"] for t in study.trials}
    assert by_ray == {n: s for n, s in seeds.items() if not n.startswith("c-")}
    assert [marks.trial_seed(5, t.number) for t in study.trials] == [
        t.user_attrs["seed"] for t in study.trials]
    board = pd.read_csv(root / "reports" / "trust" / "leaderboard.csv").set_index("trial")
    assert {n: int(board.loc[n, "seed"]) for n in seeds} == seeds


@pytest.mark.slow
def test_confirmation_runs_are_tagged_trials_that_never_feed_the_sampler(trusted) -> None:  # noqa: ANN001
    root, exp, _ = trusted
    runs = [t for t in exp.trials() if t.name.startswith("c-")]
    assert len(runs) == 4 and all(t.status()["state"] == COMPLETED for t in runs)
    roles = {marks.confirm_of(t.params())["of"] for t in runs}
    base = next(t.name for t in exp.trials() if marks.is_base(t.params()))
    assert base in roles and len(roles) == 2
    study = optuna.load_study(study_name=exp.settings()["study_name"], storage=exp.storage_url())
    assert len(study.trials) == 3
    from sweep.report.status import render_status

    status = render_status(exp)
    assert status.count("confirm base") == 2 and "confirm " in status
    assert ": 3/3 trials + 4 confirmation runs |" in status.splitlines()[0]
    board = pd.read_csv(root / "reports" / "trust" / "leaderboard.csv").set_index("trial")
    assert board.loc[[t.name for t in runs], "rank"].isna().all()  # not ranked one by one


@pytest.mark.slow
def test_the_verdict_rests_on_the_confirmation_means(trusted) -> None:  # noqa: ANN001
    root, exp, _ = trusted
    from sweep.odapi import metrics

    finals: dict[str, list[float]] = {}
    for t in exp.trials():
        c = marks.confirm_of(t.params())
        if c:
            tm = metrics.read_trial(t.path)
            finals.setdefault(c["of"], []).append(tm.eval[40][metrics.MAP])
    means = {k: float(np.mean(v)) for k, v in finals.items()}
    base = next(t.name for t in exp.trials() if marks.is_base(t.params()))
    other = next(k for k in means if k != base)
    verdict = (root / "reports" / "trust" / "verdict.txt").read_text()
    assert "Confirmed over seeds, each scored at its final evaluation (step 40)" in verdict
    assert f"vs the base config {means[base]:.4g}" in verdict
    winner = other if means[other] >= means[base] else base
    assert verdict.startswith(f"Keep the base config ({base})" if winner == base
                              else f"Use {winner}'s config")
    best = json.loads((root / "reports" / "trust" / "best" / "trial.json").read_text())
    assert best["trial"] == winner  # best/ follows the confirmed winner
    # The per-seed strip plot, in the verdict of report.md.
    md = (root / "reports" / "trust" / "report.md").read_text()
    verdict = md[md.index("## Verdict"):md.index("## Leaderboard")]
    assert "(plots/confirmation.png)" in verdict
    assert (root / "reports" / "trust" / "plots" / "confirmation.png").stat().st_size > 5000


@pytest.mark.slow
def test_confirming_again_runs_only_what_is_missing(trusted, capsys) -> None:  # noqa: ANN001
    root, exp, _ = trusted
    from sweep import cli

    before = {t.name for t in exp.trials()}
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = cli.main(["confirm", "trust", "--seeds", "3", "--no-dashboard", "--no-report"])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert rc == 0
    assert "confirmation: 6 runs (3 seeds x the base config and the top 1), 4 already done" in out
    new = {t.name for t in exp.trials()} - before
    # c-<config hash>-<seed index>: the third seed of each confirmed config (a hash may hold "-0").
    assert sorted(new) == sorted(n.removesuffix("-0") + "-2" for n in before
                                 if n.startswith("c-") and n.endswith("-0"))
