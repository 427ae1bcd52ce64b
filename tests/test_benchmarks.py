"""The issue-12 benchmark scripts (benchmarks/): their logic on synthetic timelines and result
files (fast), and the scripts end to end with the stand-in worker at tiny sizes (slow: Ray).
No timing is asserted: the benchmarks measure, the lead reads the numbers."""

from __future__ import annotations

import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import asha_vs_fifo  # noqa: E402
import control_plane  # noqa: E402
import search_quality  # noqa: E402
import summary  # noqa: E402
import sweeps  # noqa: E402
import vs_hand  # noqa: E402

from tests.fake_worker import append_event  # noqa: E402

# ----------------------------------------------------------------------------- summary.py

FIVE = ["overhead_vs_hand b/a", "overhead_vs_limit b/c", "asha_vs_fifo_train_steps_real_sweeps",
        "tpe_vs_random_best_map", "control_plane_vs_ray_tune", "replay_table", "replay_seeds",
        "asha_vs_fifo_train_steps", "default_vs_random_best_map"]


def _tail(text: str) -> list[str]:
    return text.rstrip().splitlines()[-len(FIVE):]


def test_summary_ends_with_the_five_lines_from_the_latest_results(tmp_path: Path) -> None:
    (tmp_path / "vs_hand.json").write_text(json.dumps({"b_over_a": 0.8123, "b_over_c": 14.5}))
    (tmp_path / "asha_vs_fifo.json").write_text(json.dumps({"steps_ratio_median": 2.5}))
    (tmp_path / "search_quality.json").write_text(json.dumps({"tpe_minus_random": -0.0123}))
    (tmp_path / "control_plane.json").write_text(json.dumps({"ratio": 1.234}))
    (tmp_path / "search_replay.json").write_text(json.dumps({
        "table_line": "48 configs x 2 seeds, 600 steps, eval every 50", "replay_seeds": 50,
        "asha_vs_fifo_train_steps": 3.14159,
        "default_vs_random": {"mean": 0.0123, "lo": -0.004, "hi": 0.0301}}))
    assert summary.main(["--results", str(tmp_path)]) == 0
    assert _tail((tmp_path / "summary.md").read_text()) == [
        "overhead_vs_hand b/a: 0.81",
        "overhead_vs_limit b/c: 14.50",
        "asha_vs_fifo_train_steps_real_sweeps: 2.50x fewer",
        "tpe_vs_random_best_map: -0.012",
        "control_plane_vs_ray_tune: 1.23x",
        "replay_table: 48 configs x 2 seeds, 600 steps, eval every 50",
        "replay_seeds: 50",
        "asha_vs_fifo_train_steps: 3.14x fewer",
        "default_vs_random_best_map: +0.012 [-0.004, +0.030]",
    ]


def test_summary_says_which_results_are_missing_or_empty(tmp_path: Path) -> None:
    (tmp_path / "asha_vs_fifo.json").write_text(json.dumps({"steps_ratio_median": None,
                                                            "fake": True}))
    text = summary.render(tmp_path)
    tail = _tail(text)
    assert [line.split(":")[0] for line in tail] == FIVE
    assert tail[0] == "overhead_vs_hand b/a: n/a (not run)"
    assert tail[2] == "asha_vs_fifo_train_steps_real_sweeps: n/a (no result in the last run)"
    assert tail[-1] == "default_vs_random_best_map: n/a (not run)"
    assert "numbers mean nothing" in text  # a --fake result is flagged as such


# ------------------------------------------------------------------- sweeps.py (timelines)

def _trace(evals: list[tuple[float, str, int, float]],
           train: dict[str, list[tuple[float, int]]], best: float | None) -> sweeps.Trace:
    tr = sweeps.Trace("x", "DetectionBoxes_Precision/mAP", "max", t0=100.0, evals=sorted(evals),
                      train=train, best=best)
    tr.total_steps = sum(max(s for _, s in rows) for rows in train.values())
    tr.wall_s = 50.0
    return tr


def test_until_counts_every_trials_steps_up_to_the_first_good_enough_result() -> None:
    tr = _trace(evals=[(110.0, "a", 10, 0.20), (120.0, "b", 10, 0.30), (130.0, "a", 20, 0.395)],
                train={"a": [(105.0, 10), (125.0, 20)], "b": [(108.0, 10), (128.0, 20)]},
                best=0.40)
    got = sweeps.until(tr, 0.40, 0.01)
    assert got == {"steps": 40, "wall_s": 30.0, "trial": "a", "step": 20, "value": 0.395}
    # 0.30 is within 0.1 of 0.40: reached at the second evaluation, with 10 + 10 steps done.
    assert sweeps.until(tr, 0.40, 0.1)["steps"] == 20
    assert sweeps.until(tr, 0.50, 0.01) is None  # never within 0.01 of 0.50


def test_asha_vs_fifo_compares_steps_to_fifos_final_best() -> None:
    fifo = _trace([(110.0, "a", 40, 0.30), (150.0, "b", 40, 0.50)],
                  {"a": [(110.0, 40)], "b": [(150.0, 40)]}, 0.50)
    asha = _trace([(105.0, "a", 10, 0.10), (115.0, "b", 40, 0.495)],
                  {"a": [(105.0, 10)], "b": [(115.0, 40)]}, 0.495)
    row = asha_vs_fifo.compare(fifo, asha)
    assert row["fifo_to_target"]["steps"] == 80 and row["asha_to_target"]["steps"] == 50
    assert row["steps_ratio"] == pytest.approx(80 / 50)
    worse = _trace([(105.0, "a", 10, 0.10)], {"a": [(105.0, 10)]}, 0.10)
    row = asha_vs_fifo.compare(fifo, worse)
    assert row["asha_to_target"] is None and "steps_ratio" not in row  # not reached: no ratio


def test_search_quality_says_plainly_when_tpe_does_not_beat_random() -> None:
    def data(tpe: float, rnd: float, spread: float) -> dict:
        return {"tpe_minus_random": tpe - rnd, "tpe": {"spread": spread},
                "random": {"spread": spread}}

    assert "TPE does not beat random" in search_quality.verdict(data(0.30, 0.31, 0.0))
    assert "not a clear win" in search_quality.verdict(data(0.32, 0.31, 0.05))
    assert "TPE beats random" in search_quality.verdict(data(0.40, 0.31, 0.05))


# -------------------------------------------------------------------------- vs_hand.py

def test_vs_hand_configurations_pin_steps_and_start_with_the_base(tmp_path: Path) -> None:
    from sweep.odapi import render
    from sweep.search import space
    from tests.conftest import make_workspace

    pipeline = make_workspace(tmp_path, n_train=4, n_eval=2)
    base = render.load_pipeline(pipeline)
    path, configs = vs_hand.configurations(REPO / "search_spaces" / "demo_tiny.yaml", pipeline,
                                           3, 60, 0, tmp_path / "pinned.yaml")
    assert len(configs) == 3 and all(c["num_steps"] == 60 for c in configs)
    pinned = space.load_space(path)  # a valid space whose points are the K configurations
    assert len(pinned.points) == 3 and isinstance(pinned.points[0], space.BasePoint)
    assert configs[0]["batch_size"] == base.train_config.batch_size  # the base config's values
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 3
    for c in configs:
        assert render.num_steps(render.render(base, c)) == 60


@pytest.mark.slow
@pytest.mark.tf
def test_hand_training_saves_at_its_last_step(tmp_path: Path) -> None:
    """model_main_tf2 saves every 1000 steps and not at the end: the hand run of a short
    configuration, through the tutorial's real model_main_tf2.py with the benchmark's flags,
    leaves a checkpoint of its last step (else its eval job would score step 0)."""
    import re

    from sweep.odapi import render
    from tests.conftest import make_workspace

    pipeline = tmp_path / "p.config"
    render.write_pipeline(render.render(render.load_pipeline(
        make_workspace(tmp_path, n_train=4, n_eval=1)),
        {"num_steps": 100, "batch_size": 2, "cosine_decay_learning_rate.warmup_steps": 0}),
        pipeline)
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    proc = vs_hand._model_main_proc(vs_hand.hand_train_args(pipeline, model_dir),
                                     tmp_path / "train.log")
    assert proc.wait(900) == 0, (tmp_path / "train.log").read_text()[-3000:]
    latest = re.search(r'model_checkpoint_path: "([^"]+)"', (model_dir / "checkpoint").read_text())
    assert latest is not None
    import tensorflow as tf

    step = tf.train.load_variable(str(model_dir / latest.group(1)), "step/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(step) == 100


def test_steady_step_leaves_out_the_first_iteration(tmp_path: Path) -> None:
    # steps_per_sec per 10-step iteration: the first carries the tracing.
    for step, sps in ((10, 0.5), (20, 10.0), (30, 20.0), (40, 10.0)):
        append_event(tmp_path / "train", step, {"steps_per_sec": sps})
    assert vs_hand.steady_step_s(tmp_path) == pytest.approx(0.1)
    assert vs_hand.steady_step_s(tmp_path / "none") is None


def test_control_plane_subtracts_the_stand_ins_sleep() -> None:
    assert control_plane.stand_in_sleep_s(10) == pytest.approx(0.05)  # one 10-step iteration
    assert control_plane.stand_in_sleep_s(40) == pytest.approx(0.2)
    # 100 trials, 2 at a time, in 10 s: each held its slot 200 ms, 50 of them the stand-in's.
    assert control_plane.per_trial_ms(10.0, 100, 2, 0.05) == pytest.approx(150.0)


# --------------------------------------------------------------- slow: the scripts, --fake

@pytest.mark.slow
def test_asha_vs_fifo_and_search_quality_share_sweeps_with_the_stand_in(tmp_path: Path) -> None:
    from sweep.core.experiment import Experiment
    from sweep.run import best
    from sweep.search.space import load_space

    budget = 3 * int(load_space(REPO / "search_spaces" / "demo_tiny.yaml").constants()["num_steps"])

    # 3 trials with 4 evaluations each: the smallest sweeps that still compare (seconds each).
    common = ["--fake", "--seeds", "1", "--trials", "3", "--eval-every", "150",
              "--work", str(tmp_path / "work"), "--out", str(tmp_path / "results")]
    assert asha_vs_fifo.main(common) == 0
    data = json.loads((tmp_path / "results" / "asha_vs_fifo.json").read_text())
    row = data["per_seed"]["0"]
    fifo = Experiment(tmp_path / "work" / "fake" / "experiments" / row["fifo"])
    assert row["fifo_best"] == best.experiment_best(fifo).value  # the project's rule
    assert row["fifo_total_steps"] == budget  # FIFO trains every trial to num_steps
    assert row["fifo_to_target"]["steps"] <= row["fifo_total_steps"]
    assert row["asha_total_steps"] <= budget
    written = fifo.settings_path.stat().st_mtime

    assert search_quality.main(common) == 0
    assert fifo.settings_path.stat().st_mtime == written  # FIFO+TPE reused, not run again
    sq = json.loads((tmp_path / "results" / "search_quality.json").read_text())
    assert sq["per_seed"]["0"]["tpe"]["sweep"] == row["fifo"]
    assert sq["equal_budget"] and sq["train_steps_per_sweep"] == {"tpe": [budget], "random": [budget]}
    assert sq["tpe"]["median"] == row["fifo_best"]
    assert sq["base"]["median"] is not None
    md = (tmp_path / "results" / "search_quality.md").read_text()
    assert "load before" in md and "mean nothing" in md

    summary.main(["--results", str(tmp_path / "results")])
    tail = _tail((tmp_path / "results" / "summary.md").read_text())
    assert tail[3] == f"tpe_vs_random_best_map: {sq['tpe_minus_random']:+.3f}"


@pytest.mark.slow
def test_control_plane_runs_both_sides_with_the_stand_in(tmp_path: Path) -> None:
    assert control_plane.main(["--trials", "2", "--also-no-reuse", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "control_plane.json").read_text())
    row = data["sizes"]["2"]
    for side in ("plain", "plain_jobs", "sweep", "plain_no_reuse", "sweep_no_reuse"):
        assert row[f"{side}_wall_s"] > 0, side
    # Each side counted the Ray actors it ran on: one or two reused, one per trial without reuse.
    assert 1 <= row["plain_actors"] <= 2 and 1 <= row["sweep_actors"] <= 2
    assert row["plain_no_reuse_actors"] == 2 and row["sweep_no_reuse_actors"] == 2
    assert row["ratio_vs_jobs"] == pytest.approx(row["sweep_ms"] / row["plain_jobs_ms"])
    assert data["ratio_at"] == 2 and data["ratio"] == pytest.approx(row["sweep_ms"] / row["plain_ms"])
    assert "sweep/plain at 2 trials" in (tmp_path / "control_plane.md").read_text()


def test_control_plane_marginal_cost_cancels_fixed_costs() -> None:
    sizes = {"1000": {"plain_wall_s": 110.0, "sweep_wall_s": 1010.0, "ratio": 9.0},
             "100": {"plain_wall_s": 20.0, "sweep_wall_s": 110.0, "ratio": 5.0}}
    got = control_plane.totals(sizes, 2, 0.05)
    assert got["ratio"] == 9.0 and got["ratio_at"] == 1000  # the largest size is the headline
    # 900 more trials cost plain 90 s and the sweep 900 s (2 slots; minus 50 ms of sleep).
    assert got["marginal_ms"] == pytest.approx({"plain": 200.0, "sweep": 1950.0})
    assert "marginal_ms" not in control_plane.totals({"5": sizes["100"]}, 2, 0.05)


def test_scripts_have_help() -> None:
    for mod in (asha_vs_fifo, search_quality, control_plane, summary):
        with pytest.raises(SystemExit) as e:
            mod.main(["--help"])
        assert e.value.code == 0
    with pytest.raises(SystemExit):
        vs_hand.main(["--help"])


def test_sweep_names_tell_sweeps_apart_and_follow_the_demo(tmp_path: Path) -> None:
    space = REPO / "search_spaces" / "demo_tiny.yaml"
    a = Namespace(trials=8, eval_every=10, space=space)
    names = {sweeps.sweep_name(sch, smp, seed, a) for sch in ("fifo", "asha")
             for smp in ("tpe", "random") for seed in range(3)}
    assert len(names) == 12
    changed = tmp_path / space.name  # the same space name, other contents: another demo
    changed.write_text(space.read_text() + "\n# another demo\n")
    assert sweeps.sweep_name("fifo", "tpe", 0, Namespace(trials=8, eval_every=10, space=changed)) \
        != sweeps.sweep_name("fifo", "tpe", 0, a)
