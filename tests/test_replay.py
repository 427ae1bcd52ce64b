"""Issue 24's table, replay and benchmark (benchmarks/record_table.py, replay.py,
search_replay.py): extraction from a synthetic experiment, a tiny table with a known best,
and that the replay builds the sampler and scheduler `sweep run` builds. Fast: Ray's
scheduler classes are imported, no Ray is started."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.report_fixtures import make_experiment

sys.path.insert(0, str(REPO / "benchmarks"))

import record_table  # noqa: E402
import replay  # noqa: E402
import search_replay  # noqa: E402

from sweep.core.experiment import COMPLETED  # noqa: E402
from sweep.odapi import metrics as m  # noqa: E402
from sweep.search.space import load_space  # noqa: E402

# ------------------------------------------------------------------------------- extract


def test_extract_writes_every_completed_trials_evaluations_as_the_trial_reported_them(
        tmp_path: Path) -> None:
    syn = make_experiment(tmp_path / "exps", name="tbl-r0")
    ex = record_table.extract_experiments(record_table.find_repeats(tmp_path / "exps", "tbl"))
    csv_path, side = record_table.write_table(ex, tmp_path / "data" / "tbl", command="test")

    rows = list(csv.DictReader(io.StringIO(gzip.decompress(csv_path.read_bytes()).decode())))
    assert list(rows[0]) == list(record_table.COLUMNS)
    completed = {n: t for n, t in syn.truth.items() if t.state == COMPLETED}
    assert completed and len(completed) < len(syn.truth)
    ids = {record_table.config_id(syn.exp.trial(n).params()): n for n in completed}
    assert {r["config"] for r in rows} == set(ids)
    for r in rows:
        t = syn.truth[ids[r["config"]]]
        step = int(r["step"])
        assert r["seed"] == "0"
        assert float(r["mAP"]) == pytest.approx(t.eval[step][m.MAP], abs=1e-6)
        assert float(r["AR_100"]) == pytest.approx(t.eval[step][m.AR100], abs=1e-6)
        # total_loss as the trial reported it: the training job's, not the eval job's
        assert float(r["total_loss"]) == pytest.approx(t.train[step][m.TOTAL_LOSS], abs=1e-6)
        assert float(r["seconds"]) > 0
    for cid, name in ids.items():
        assert sorted(int(r["step"]) for r in rows if r["config"] == cid) == sorted(
            syn.truth[name].eval)
    meta = json.loads(side.read_text())
    assert set(meta["configs"]) == set(ids)
    assert {lo["trial"] for lo in meta["left_out"]} == set(syn.truth) - set(completed)
    assert meta["made"]["command"] == "test" and meta["base_pipeline"]
    # the replay reads it back: one curve per completed trial, seconds increasing
    table = replay.load_table(tmp_path / "data" / "tbl")
    assert set(table.configs) == set(ids) and table.max_steps == 40
    assert all(c.seconds == sorted(c.seconds) for c in table.curves.values())


def test_extract_adds_an_earlier_tables_repeats_whose_folders_are_gone(tmp_path: Path) -> None:
    make_experiment(tmp_path / "old", name="tbl-r0")
    old = record_table.extract_experiments(record_table.find_repeats(tmp_path / "old", "tbl"))
    record_table.write_table(old, tmp_path / "data" / "r0", command="test")
    make_experiment(tmp_path / "new", name="tbl-r1", seed=1)  # another disk; r0 is gone
    new = record_table.extract_experiments(record_table.find_repeats(tmp_path / "new", "tbl"))
    n_new = len(new.rows)
    both = record_table.add_earlier(new, tmp_path / "data" / "r0")

    assert sorted(both.repeats) == ["tbl-r0", "tbl-r1"]
    assert {r["seed"] for r in both.rows} == {0, 1}
    assert len(both.rows) == n_new + len(old.rows)
    assert sorted(r["mAP"] for r in both.rows if r["seed"] == 0) == sorted(
        r["mAP"] for r in old.rows)
    assert set(both.configs) == set(old.configs) | set(new.configs)
    # the base config (the one cell both repeats ran) has one id and both seeds' curves
    assert {r["config"] for r in both.rows if r["seed"] == 0} & {
        r["config"] for r in both.rows if r["seed"] == 1}
    # a repeat the experiments hold is not taken twice
    again = record_table.add_earlier(both, tmp_path / "data" / "r0")
    assert len(again.rows) == len(both.rows)


def test_extract_refuses_an_earlier_table_of_another_base_config(tmp_path: Path) -> None:
    make_experiment(tmp_path / "old", name="tbl-r0")
    old = record_table.extract_experiments(record_table.find_repeats(tmp_path / "old", "tbl"))
    old.base_pipeline = old.base_pipeline.replace("batch_size: ", "batch_size: 1")
    record_table.write_table(old, tmp_path / "data" / "r0", command="test")
    make_experiment(tmp_path / "new", name="tbl-r1", seed=1)
    new = record_table.extract_experiments(record_table.find_repeats(tmp_path / "new", "tbl"))
    with pytest.raises(SystemExit, match="base pipeline.config differs"):
        record_table.add_earlier(new, tmp_path / "data" / "r0")
    with pytest.raises(SystemExit, match="does not exist"):
        record_table.add_earlier(new, tmp_path / "data" / "nope")


def test_a_resumed_trials_seconds_leave_out_the_time_it_was_not_running() -> None:
    # ran 0-100 s (evaluations at 40 and 90), was interrupted, resumed at 5000 s, evaluated
    # at 5030 and 5080, ended at 5090: 100 + 90 s of running time in all
    status = {"created_at": 0.0, "started_at": 5000.0, "ended_at": 5090.0, "elapsed": 190.0,
              "attempts": 2}
    got = record_table.eval_seconds(status, {50: 40.0, 100: 90.0, 150: 5030.0, 200: 5080.0})
    assert got == {50: 40.0, 100: 90.0, 150: 130.0, 200: 180.0}
    once = {"created_at": 10.0, "started_at": 10.0, "ended_at": 200.0, "elapsed": 190.0,
            "attempts": 1}
    assert record_table.eval_seconds(once, {50: 60.0, 200: 199.0}) == {50: 50.0, 200: 189.0}


def test_record_runs_every_point_with_fifo_once_per_repeat_seeded_by_the_repeat() -> None:
    args = record_table.record_args(REPO / "benchmarks" / "data" / "demo_tiny_table.yaml",
                                    Path("p.config"), name="t", k=1, storage=Path("e"),
                                    eval_every=50)
    opt = dict(zip(args[::2], args[1::2], strict=False))
    assert opt["--name"] == "t-r1" and opt["--seed"] == "1"
    assert opt["--sampler"] == "random" and opt["--scheduler"] == "fifo"
    assert opt["--num-trials"] == "48" and opt["--eval-every"] == "50"


# ------------------------------------------------------------------- a tiny known table

LRS = [0.001, 0.01, 0.1]
BATCHES = [4, 8]
BEST = {"lr": 0.01, "batch": 8}  # the cell with the best mean final mAP


def _tiny_table(tmp_path: Path) -> tuple[Path, Path]:
    """6 cells x 2 repeats, 200 steps, eval every 50; BEST is best on average, though one
    other cell's lucky repeat beats it once (so the winner's curse has something to show)."""
    space = {"parameters": {"num_steps": 200,
                            "learning_rate": {"categorical": LRS},
                            "batch_size": {"categorical": BATCHES}}}
    space_path = tmp_path / "space.yaml"
    space_path.write_text(yaml.safe_dump(space))
    rows, configs = [], {}
    for lr in LRS:
        for b in BATCHES:
            params = {"learning_rate": lr, "batch_size": b, "num_steps": 200}
            cid = record_table.config_id(params)
            configs[cid] = params
            final = (0.6 if (lr, b) == (BEST["lr"], BEST["batch"])
                     else 0.2 + 0.05 * LRS.index(lr) + 0.02 * b / 4)
            for k in range(2):
                lucky = 0.5 if (lr, b) == (0.1, 4) and k == 1 else 0.0
                for step in (50, 100, 150, 200):
                    v = (final + lucky) * step / 200
                    rows.append({"config": cid, "seed": k, "step": step, "mAP": round(v, 6),
                                 "mAP_50": round(v * 1.5, 6), "AR_100": round(v, 6),
                                 "total_loss": round(1 - v, 6), "seconds": 10.0 + step})
    ex = record_table.Extracted(rows=rows, configs=configs)
    record_table.write_table(ex, tmp_path / "tiny", command="test")
    return tmp_path / "tiny", space_path


@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
def test_replay_benchmark_finds_the_known_best_and_measures_the_winners_curse(
        tmp_path: Path) -> None:
    table_path, space_path = _tiny_table(tmp_path)
    a = Namespace(table=table_path, space=space_path, samplers=["random", "tpe"],
                  schedulers=["fifo", "asha"], seeds=3, budgets=[8], max_concurrent=2,
                  eval_every=50, name="t", out=tmp_path / "out", partial=False,
                  equal_steps=False)
    data = search_replay.run(a)
    table = replay.load_table(table_path)
    best = data["cells"]["best"]
    assert best["params"]["learning_rate"] == BEST["lr"]
    assert best["params"]["batch_size"] == BEST["batch"]
    assert best["true_mAP"] == pytest.approx(0.6)
    rows = data["pairs"]["8"]["rows"]
    # 8 trials over 6 cells: FIFO runs them all and recommends the lucky run's cell or the
    # best; its true quality is the table's mean, never the lucky value it saw.
    for r in rows.values():
        for v in r["finals"]:
            assert any(v == pytest.approx(table.true_quality(c)) for c in table.configs)
    curse = rows["random+fifo"]["curse"]["mean"]
    assert curse > 0  # the lucky run (0.85 reported) overstates its cell (0.6 mean)
    assert rows["random+fifo"]["steps"] == 8 * 200
    assert rows["random+asha"]["steps"] < 8 * 200  # ASHA stopped some
    assert (tmp_path / "out" / "t_8.png").stat().st_size > 0
    assert math.isfinite(data["default_vs_random"]["mean"])
    # every curve here ranks cells at step 50 as at its end: a rung there knows as much as
    # the end does (only the lucky repeat disagrees with its cell's mean)
    corr = list(data["early_vs_final"].values())
    assert len(corr) == 4 and corr[0] > 0.5 and corr == [pytest.approx(corr[0])] * 4


def test_a_draw_plays_its_own_cell_and_a_continuous_one_the_nearest_in_log_scale(
        tmp_path: Path) -> None:
    table_path, space_path = _tiny_table(tmp_path)
    table = replay.load_table(table_path)
    exact = replay.CellIndex(table, load_space(space_path))
    for cid, params in table.configs.items():
        assert exact.nearest(params) == cid
    cont = tmp_path / "cont.yaml"
    cont.write_text(yaml.safe_dump({"parameters": {
        "learning_rate": {"loguniform": [0.001, 0.1]}, "batch_size": {"categorical": [4, 8]}}}))
    near = replay.CellIndex(table, load_space(cont))
    # 0.004 is nearer 0.01 than 0.001 in log scale (linear would say 0.001)
    got = table.configs[near.nearest({"learning_rate": 0.004, "batch_size": 8})]
    assert (got["learning_rate"], got["batch_size"]) == (0.01, 8)


def test_the_repeat_a_trial_plays_depends_on_the_sweep_seed_and_trial_only() -> None:
    picks = [replay.repeat_of(3, i, [0, 1]) for i in range(40)]
    assert picks == [replay.repeat_of(3, i, [0, 1]) for i in range(40)]
    assert set(picks) == {0, 1}
    assert picks != [replay.repeat_of(4, i, [0, 1]) for i in range(40)]


# ------------------------------------------------------- the same objects as `sweep run`


def _simple(obj: object) -> dict:
    return {k: v for k, v in vars(obj).items()
            if isinstance(v, int | float | str | bool | type(None))}


@pytest.mark.parametrize(("sampler", "scheduler", "every"), [
    ("tpe", "asha", 0), ("tpe", "asha", 50), ("random", "median", 0), ("cmaes", "fifo", 0),
    ("qmc", "asha", 50)])
def test_replay_builds_the_sampler_and_scheduler_sweep_run_builds(
        sampler: str, scheduler: str, every: int) -> None:
    from sweep import cli
    from sweep.run import schedulers, tune_backend

    space_path = REPO / "search_spaces" / "demo_tiny.yaml"
    space = load_space(space_path)
    a = cli.build_parser().parse_args(
        ["run", "--space", str(space_path), "--pipeline", "p/pipeline.config", "--sampler",
         sampler, "--scheduler", scheduler, "--num-trials", "16", "--seed", "3"]
        + (["--eval-every", str(every)] if every else []))  # none: sweep run's default
    settings = cli._settings(a, space_path, Path("p/pipeline.config"), "x")
    # as `sweep run` resolves --eval-every before it builds the scheduler
    settings.eval_every, _ = schedulers.eval_points(settings.scheduler, settings.eval_every, 600)
    want_sampler = tune_backend.make_sampler(settings, space, 1)
    want_sched = tune_backend.make_scheduler(settings, 600, space)

    searcher, sched, _ = replay.build(replay.Options(sampler, scheduler, 16, seed=3,
                                                     eval_every=every), space,
                                      [{"batch_size": 8}], 600)
    got_sampler = searcher._sampler
    assert type(got_sampler) is type(want_sampler)
    assert _simple(got_sampler) == _simple(want_sampler)
    assert type(sched) is type(want_sched)
    assert _simple(sched) == _simple(want_sched)
    if scheduler == "asha":
        assert ([[r[0] for r in b._rungs] for b in sched._brackets]
                == [[r[0] for r in b._rungs] for b in want_sched._brackets])
    assert searcher.metric == "mAP" and searcher.mode == settings.modes[0]


def test_a_grace_period_what_if_moves_ashas_first_rung_and_only_when_asked() -> None:
    space = load_space(REPO / "search_spaces" / "demo_tiny.yaml")

    def rungs(**kw: int) -> list[int]:
        _, sched, _ = replay.build(replay.Options("random", "asha", 16, **kw), space, [], 600)
        return sorted(r[0] for r in sched._brackets[0]._rungs)

    assert rungs() == [150, 300, 600]  # sweep run's default: evaluations every quarter
    assert rungs(eval_every=50) == [50, 100, 200, 400]
    assert rungs(eval_every=50, grace_period=200) == [200, 400]


def test_what_ifs_reach_the_scheduler_and_sampler_sweep_run_builds_and_only_when_asked(
        ) -> None:
    space = load_space(REPO / "search_spaces" / "demo_tiny.yaml")

    def built(sampler: str, scheduler: str) -> tuple:
        (sa, sa_kw), (sc, sc_kw) = search_replay.variant(sampler), search_replay.variant(scheduler)
        searcher, sched, _ = replay.build(replay.Options(sa, sc, 16, eval_every=50, **sa_kw,
                                                         **sc_kw), space, [], 600)
        return searcher._sampler, sched

    sampler, sched = built("tpe", "asha")
    assert sampler._n_startup_trials == 4 and sched._reduction_factor == 2
    assert len(sched._brackets) == 1
    sampler, sched = built("tpe@s8", "asha@g100r3b2")
    assert sampler._n_startup_trials == 8
    assert sched._reduction_factor == 3 and len(sched._brackets) == 2
    assert sorted(r[0] for r in sched._brackets[0]._rungs) == [100, 300]  # 100 x 3^k < 600
    with pytest.raises(SystemExit, match="asha@g150r3"):
        search_replay.variant("asha@x3")


@pytest.mark.parametrize(("scheduler", "every", "steps"), [
    ("fifo", 0, [200]), ("asha", 0, [50, 100, 150, 200]), ("fifo", 100, [100, 200]),
    ("median", 100, [100, 200])])
def test_a_replayed_trial_reports_where_sweep_run_would_evaluate_it(
        tmp_path: Path, scheduler: str, every: int, steps: list[int]) -> None:
    """The table holds an evaluation every 50 steps; a replayed trial reports only at the
    steps `sweep run` with these options evaluates (fifo by default: the end only), so its
    best and the scheduler's decisions see what a real sweep's would."""
    table_path, space_path = _tiny_table(tmp_path)
    table = replay.load_table(table_path)
    opts = replay.Options("random", scheduler, 3, eval_every=every, max_concurrent=1)
    assert replay.eval_steps(opts, table.max_steps) == steps
    trace = replay.simulate(table, load_space(space_path), opts, points=[])
    assert len(trace.trials) == 3
    # each trial's results were at steps[0], steps[1], ... up to its last (stopped or not)
    assert all(t.steps in steps for t in trace.trials), [t.steps for t in trace.trials]
    assert len(trace.timeline) == sum(steps.index(t.steps) + 1 for t in trace.trials)
    assert trace.timeline[0][0] == steps[0]  # one at a time: the first result's train steps


def test_equal_steps_gives_early_stopping_the_steps_it_saved_as_more_trials(
        tmp_path: Path) -> None:
    """`--equal-steps`: every pair gets N x num_steps train steps (`sweep run --step-budget`):
    FIFO runs its N trials, ASHA runs more (it stops some early) and the sweep stops once
    the trials' reported steps add up to the budget, as sweep run's budget rule says."""
    from sweep.run.tune_backend import step_budget_spent

    table_path, space_path = _tiny_table(tmp_path)
    table, space = replay.load_table(table_path), load_space(space_path)
    budget = 6 * table.max_steps
    fifo = search_replay.equal_steps(replay.Options("random", "fifo", 6), table.max_steps)
    asha = search_replay.equal_steps(replay.Options("random", "asha", 6, eval_every=50),
                                     table.max_steps)
    assert (fifo.num_trials, fifo.step_budget) == (6, budget)
    assert (asha.num_trials, asha.step_budget) == (24, budget)  # 24 x 50 steps fit
    for opts in (fifo, asha):
        trace = replay.simulate(table, space, opts, points=[])
        spent = [row[0] for row in trace.timeline]
        assert spent[-1] >= budget and all(s < budget for s in spent[:-1])
        assert trace.total_steps == spent[-1]
        assert step_budget_spent({t.trial_id: t.steps for t in trace.trials}, budget)
        if opts is asha:
            assert len(trace.trials) > 6 and any(t.stopped for t in trace.trials)
        else:
            assert len(trace.trials) == 6 and not any(t.stopped for t in trace.trials)
    assert not step_budget_spent({"a": 100, "b": 50}, 200)
    assert not step_budget_spent({"a": 1000}, None)
    # the benchmark's flag: the same steps for both, ASHA's spent on more trials
    a = Namespace(table=table_path, space=space_path, samplers=["random"],
                  schedulers=["fifo", "asha"], seeds=3, budgets=[6], max_concurrent=2,
                  eval_every=50, name="t", out=tmp_path / "out", partial=False,
                  equal_steps=True)
    rows = search_replay.run(a)["pairs"]["6"]["rows"]
    assert rows["random+fifo"]["trials"] == 6 and rows["random+asha"]["trials"] > 6
    assert rows["random+asha"]["steps"] >= budget and rows["random+fifo"]["steps"] == budget
    assert "6 trials' train steps (1200" in "\n".join(search_replay.markdown(
        {**search_replay.run(a), "name": "t"}))


def test_a_curve_seen_at_steps_the_table_lacks_plays_the_next_recorded_one() -> None:
    c = replay.Curve([50, 100, 150, 200], {"mAP": [0.1, 0.2, 0.3, 0.4]}, [1.0, 2.0, 3.0, 4.0])
    v = c.at([75, 150, 160, 200])
    assert v.steps == [100, 150, 200] and v.values["mAP"] == [0.2, 0.3, 0.4]
    assert v.seconds == [2.0, 3.0, 4.0]


# ------------------------------------------------- slow: record with the stand-in worker

@pytest.mark.slow
def test_record_then_extract_then_replay_with_the_stand_in(tmp_path: Path) -> None:
    from _bench import demo_pipeline

    pipeline = demo_pipeline(tmp_path / "ws", fake=True)
    space_path = tmp_path / "two.yaml"
    space_path.write_text(yaml.safe_dump({
        "parameters": {"num_steps": 40, "l2_weight": {"categorical": [1.0e-4, 1.0e-3]}},
        "points": [{"l2_weight": 1.0e-4}, {"l2_weight": 1.0e-3}]}))
    storage = tmp_path / "exps"
    args = ["record", "--space", str(space_path), "--pipeline", str(pipeline), "--name", "two",
            "--repeats", "2", "--eval-every", "10", "--storage", str(storage), "--fake"]
    assert record_table.main(args) == 0
    assert sorted(p.name for p in storage.iterdir()) == ["two-r0", "two-r1"]
    runs = {p.name: (p / "experiment.json").stat().st_mtime for p in storage.iterdir()}
    assert record_table.main(args) == 0  # both finished: kept, not run again
    assert runs == {p.name: (p / "experiment.json").stat().st_mtime for p in storage.iterdir()}

    out = tmp_path / "data" / "two"
    assert record_table.main(["extract", "--name", "two", "--storage", str(storage),
                              "--out", str(out)]) == 0
    table = replay.load_table(out)
    assert len(table.configs) == 2 and sorted({k for _, k in table.curves}) == [0, 1]
    # FIFO does not hold training at an evaluation: the eval job may skip a checkpoint (as
    # the real table's did), so a curve has some of the steps, always the last
    assert all(set(c.steps) <= {10, 20, 30, 40} and c.steps[-1] == 40
               for c in table.curves.values())
    assert json.loads(out.with_name("two.json").read_text())["missing"] == []
    trace = replay.simulate(table, load_space(space_path),
                            replay.Options("random", "asha", 4, eval_every=10))
    assert len(trace.trials) == 4 and trace.recommended is not None
