"""The walking skeleton, for real: `sweep run` with the OD API, Ray and Optuna (slow).

All tests here inspect the one session-scoped sweep of ``conftest.real_sweep``.
"""

from __future__ import annotations

import json
import math
import os

import optuna
import pytest

from sweep.core import errors
from sweep.core.experiment import COMPLETED, FAILED, STOPPED, Experiment
from sweep.odapi import metrics

pytestmark = pytest.mark.slow


def _exp(real_sweep) -> Experiment:  # noqa: ANN001
    return Experiment(real_sweep.experiment)


BASE, DIVERGING, HEAVY_L2 = 0.0004, 0.0005, 0.01  # the l2_weight of each e2e point


def _by_l2(exp: Experiment) -> dict[float, object]:
    return {t.params()["l2_weight"]: t for t in exp.trials()}


def test_sweep_exits_saying_how_many_trials_failed(real_sweep) -> None:  # noqa: ANN001
    """The diverging point fails by design: the sweep runs to its end, exits 1 (some trials
    failed) and its last line says how many, why, and where to look."""
    assert real_sweep.returncode == errors.EXIT_TRIALS_FAILED, real_sweep.output[-4000:]
    assert "3/3 trials done" in real_sweep.output
    assert "1 of 3 trials failed (diverged 1)" in real_sweep.output.strip().splitlines()[-1]


def test_every_trial_has_a_folder_a_person_can_read(real_sweep) -> None:  # noqa: ANN001
    trials = _exp(real_sweep).trials()
    assert len(trials) == 3
    for t in trials:
        for name in ("params.json", "pipeline.config", "status.json", "train.log", "eval.log"):
            assert (t.path / name).is_file(), f"{t.path}/{name} missing"
        assert (t.path / "train").is_dir()
        # The rendered config carries the trial's own learning rate (protobuf text format).
        lr = t.params()["cosine_decay_learning_rate.learning_rate_base"]
        from sweep.odapi import render

        cfg = render.load_pipeline(t.pipeline_path)
        got = (cfg.train_config.optimizer.momentum_optimizer.learning_rate
               .cosine_decay_learning_rate.learning_rate_base)
        assert math.isclose(got, lr, rel_tol=1e-6)


def test_baseline_trains_and_reports_real_coco_metrics(real_sweep) -> None:  # noqa: ANN001
    exp = _exp(real_sweep)
    base = _by_l2(exp)[BASE]  # the base config's own learning_rate_base
    assert base.status()["state"] == COMPLETED
    m = metrics.read_trial(base.path)
    assert sorted(m.eval) == [20, 40]
    for step in (20, 40):
        for tag in (metrics.MAP, metrics.MAP50, metrics.MAP75, metrics.AR100):
            assert 0.0 <= m.eval[step][tag] <= 1.0
    assert m.last_train_step == 40
    assert math.isfinite(m.train[40][metrics.TOTAL_LOSS])
    # The best checkpoint is kept beside the last N, with the eval it came from.
    best = json.loads((base.path / "best" / "best.json").read_text())
    assert best["step"] in (20, 40)
    assert math.isclose(best["value"], m.train[best["step"]][metrics.TOTAL_LOSS], rel_tol=1e-6)
    assert list((base.path / "best").glob(best["checkpoint"] + ".index"))


def test_a_killed_train_process_is_retried_from_its_checkpoint(real_sweep) -> None:  # noqa: ANN001
    """The fixture kill -9'd the baseline's OD API train process right after its step-20
    checkpoint: the trial restarted it, train_loop restored that checkpoint (no step trained
    from 0 again), and the trial still completed."""
    assert real_sweep.killed.get("pid"), real_sweep.killed
    base = _by_l2(_exp(real_sweep))[BASE]
    assert real_sweep.killed["trial"] == base.name
    st = base.status()
    assert st["state"] == COMPLETED and st["restarts"] == 1
    assert st["last_failure"].startswith("killed: train process exited with -9")
    assert st["train_pid"] != real_sweep.killed["pid"]
    files = metrics.event_files(base.path / "train")
    assert len(files) == 2  # one per train process
    second = [s.step for s in metrics.read_scalars(base.path / "train")
              if s.wall_time >= real_sweep.killed["at"]]
    assert second and min(second) > 20 and max(second) == 40
    assert base.train_log.read_text().count("start train") == 2


def test_what_ray_and_optuna_got_matches_the_event_files(real_sweep) -> None:  # noqa: ANN001
    """Each result the trial reported to Ray Tune reached the Optuna study (as an intermediate
    value) with the numbers the OD API wrote: the train job's total_loss at each eval step."""
    exp = _exp(real_sweep)
    s = exp.settings()
    study = optuna.load_study(study_name=s["study_name"], storage=s["storage_url"])
    base = _by_l2(exp)[BASE]
    ot = next(t for t in study.trials if t.user_attrs.get("ray_trial_id") == base.name)
    m = metrics.read_trial(base.path)
    at_evals = [m.train[step][metrics.TOTAL_LOSS] for step in sorted(m.eval)]
    assert ot.intermediate_values  # Ray passes the last result to on_trial_complete only
    for value in ot.intermediate_values.values():
        assert any(math.isclose(value, v, rel_tol=1e-6) for v in at_evals), (value, at_evals)
    assert math.isclose(ot.value, at_evals[-1], rel_tol=1e-6)
    # The trial ASHA stopped is pruned with the value it was stopped at.
    slow = _by_l2(exp)[HEAVY_L2]
    ot = next(t for t in study.trials if t.user_attrs.get("ray_trial_id") == slow.name)
    m = metrics.read_trial(slow.path)
    assert ot.state == optuna.trial.TrialState.PRUNED
    assert list(ot.intermediate_values.values()) == pytest.approx(
        [m.train[20][metrics.TOTAL_LOSS]], rel=1e-6)


def test_nan_loss_is_marked_diverged_and_the_sweep_goes_on(real_sweep) -> None:  # noqa: ANN001
    t = _by_l2(_exp(real_sweep))[DIVERGING]
    st = t.status()
    assert st["state"] == FAILED
    assert st["reason"] == "diverged"
    assert "Loss/total_loss = nan" in st["detail"] or "inf" in st["detail"]


def test_asha_stops_the_worse_trial_and_its_processes_are_gone(real_sweep) -> None:  # noqa: ANN001
    t = _by_l2(_exp(real_sweep))[HEAVY_L2]
    st = t.status()
    assert st["state"] == STOPPED, st
    assert st["reported_step"] == 20
    # It waited at the rung for ASHA's decision: stopped there, not after training on to 40.
    assert 20 <= st["trained_steps"] <= 20 + 20 and st["trained_steps"] < st["num_steps"], st
    # The gate held the OD API's train_loop at the rung until the trial was ended.
    log = t.train_log.read_text()
    assert "checkpoint at step 20; waiting for the scheduler's decision" in log, log[-2000:]
    assert "going on from step 20" not in log
    # The rung's train loss was on disk before the decision (and is kept): the train job
    # flushes its summaries at each checkpoint instead of every 10 events or 2 minutes.
    steps = {s.step for s in metrics.read_scalars(t.path / "train", [metrics.TOTAL_LOSS])}
    assert 20 in steps, sorted(steps)
    summary = (real_sweep.reports / "report.md").read_text()
    assert f"Early stopping saved {st['num_steps'] - st['trained_steps']} train steps" in summary
    for key in ("train_pid", "eval_pid", "pid"):
        pid = st[key]
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_gpu_ids_are_distinct_across_concurrent_trials(real_sweep) -> None:  # noqa: ANN001
    """Two GPUs declared to Ray, one per trial: overlapping trials never share one, and the
    OD API processes themselves saw the id Ray gave (their log's first line says so)."""
    trials = _exp(real_sweep).trials()
    spans = []
    for t in trials:
        st = t.status()
        gpu = st["cuda_visible_devices"]
        assert gpu in ("0", "1"), st
        assert f"CUDA_VISIBLE_DEVICES={gpu}" in t.train_log.read_text()
        spans.append((st["started_at"], st["ended_at"], gpu, t.name))
    overlapping = 0
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            if a[0] < b[1] and b[0] < a[1]:
                overlapping += 1
                assert a[2] != b[2], f"{a[3]} and {b[3]} ran at once on GPU {a[2]}"
    assert overlapping >= 1


def test_optuna_study_holds_every_trial_with_its_outcome(real_sweep) -> None:  # noqa: ANN001
    exp = _exp(real_sweep)
    s = exp.settings()
    study = optuna.load_study(study_name=s["study_name"], storage=s["storage_url"])
    by_ray_id = {t.user_attrs.get("ray_trial_id"): t for t in study.trials}
    for t in exp.trials():
        ot = by_ray_id[t.name]
        state = t.status()["state"]
        expected = {COMPLETED: optuna.trial.TrialState.COMPLETE,
                    FAILED: optuna.trial.TrialState.FAIL,
                    STOPPED: optuna.trial.TrialState.PRUNED}[state]
        assert ot.state == expected, (t.name, state, ot.state)
        if state == COMPLETED:
            m = metrics.read_trial(t.path)
            assert math.isclose(ot.value, m.train[40][metrics.TOTAL_LOSS], rel_tol=1e-6)


def test_status_command_shows_every_trial(real_sweep) -> None:  # noqa: ANN001
    from tests.conftest import run_cli

    out = run_cli(["status", "e2e"], real_sweep.cwd, timeout=120)
    assert out.returncode == 0, out.stderr
    for t in _exp(real_sweep).trials():
        assert t.name in out.stdout
    assert "diverged" in out.stdout and "COMPLETED" in out.stdout and "STOPPED" in out.stdout


def test_report_leaderboard_and_best_config_match_the_real_trials(real_sweep) -> None:  # noqa: ANN001
    """`sweep run` ended by writing reports/e2e/: the leaderboard's numbers are the event
    files', and best/pipeline.config is the best trial's rendered config."""
    import pandas as pd

    exp = _exp(real_sweep)
    board = pd.read_csv(real_sweep.reports / "leaderboard.csv").set_index("trial")
    assert set(board.index) == {t.name for t in exp.trials()}
    for t in exp.trials():
        row, m = board.loc[t.name], metrics.read_trial(t.path)
        assert row["state"] == t.status()["state"]
        assert row["steps"] == m.last_train_step
        for tag, v in m.last_train().items():
            got = row[f"train:{tag}"]
            assert (math.isnan(v) and pd.isna(got)) or got == pytest.approx(v, rel=1e-6)
        for tag, v in m.last_eval().items():
            assert row[f"eval:{tag}"] == pytest.approx(v, rel=1e-6)
    # Ranked by total_loss (min) over the reported evals: the baseline beats the heavy-L2 one.
    base = _by_l2(exp)[BASE]
    assert (real_sweep.reports / "best" / "pipeline.config").read_bytes() == \
        base.pipeline_path.read_bytes()
    md = (real_sweep.reports / "leaderboard.md").read_text()
    assert base.name in md
    html = (real_sweep.reports / "report.html").read_text()
    assert "diverged" in html and 'class="plotly-graph-div"' in html
    assert html.index('id="verdict"') < html.index('id="leaderboard"')


def test_eval_job_keeps_the_detections_its_map_came_from(real_sweep) -> None:  # noqa: ANN001
    """Every evaluation left its per-image detections (COCO results), and COCO mAP recomputed
    from them is the mAP the OD API's eval reported: what the report's bootstrap resamples."""
    from sweep.odapi import detections
    from sweep.odapi.worker import read_evaluated
    from sweep.report import bootstrap

    checked = 0
    for t in _exp(real_sweep).trials():
        for row in read_evaluated(t.path):
            if metrics.MAP not in row.get("metrics", {}):
                continue  # the warm-up on ckpt-0 records no metrics
            kept = detections.read(t.path, row["checkpoint"])
            assert kept is not None, (t.name, row["checkpoint"])
            gt, dets = kept
            assert gt["images"] and gt["annotations"]
            assert {d["image_id"] for d in dets} <= {i["id"] for i in gt["images"]}
            got = bootstrap.mean_ap(bootstrap.evaluate(gt, dets))
            assert got == pytest.approx(row["metrics"][metrics.MAP], abs=1e-9), t.name
            checked += 1
    assert checked >= 3


def test_report_shows_the_evals_own_detection_pictures(real_sweep) -> None:  # noqa: ANN001
    """The OD API eval draws detections beside the ground truth (num_visualizations, 10 by
    default); the report shows the best trial's at its best step, and the leaderboard gives
    each trial's mAP gap to the best with its bootstrap interval."""
    from PIL import Image

    plots = real_sweep.reports / "plots"
    pictures = sorted(plots.glob("detections_best_*.png"))
    assert [p.name for p in pictures] == [f"detections_best_{i}.png" for i in range(3)]
    for p in pictures:
        with Image.open(p) as im:
            w, h = im.size
        assert (w, h) == (2 * 128, 128)  # eval image | ground truth, 128 px each
    md = (real_sweep.reports / "report.md").read_text()
    assert "## Detections: best and base" in md and "(plots/detections_best_0.png)" in md
    assert "mAP behind best (95%)" in (real_sweep.reports / "leaderboard.md").read_text()
