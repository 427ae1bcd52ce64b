"""Reports: numbers against the event files, the best config, failures, partial runs, the HTML
in a real browser. A synthetic experiment (tests/report_fixtures.py) stands in for a sweep."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from report_fixtures import (
    BASE_PARAMS,
    KEEP,
    LR,
    SyntheticExperiment,
    TrialTruth,
    make_experiment,
    reported_value,
)

from sweep.core.experiment import FAILED, Experiment, write_json
from sweep.odapi import metrics as m
from sweep.report.report import (
    BEST,
    EVAL,
    MIN_TRIALS_FOR_IMPORTANCES,
    PARAM,
    TRAIN,
    best_trial,
    fmt,
    gather,
    leaderboard,
    nearest_checkpoint,
    param_importances,
    write_report,
)
from sweep.report.short_names import num


def _expected_best(truth: dict[str, TrialTruth], tag: str, mode: str) -> tuple[str, int, float]:
    """(trial, step, value) computed from what the fixture wrote, not through sweep.odapi.metrics."""
    pick = max if mode == "max" else min
    cands = [(name, step, reported_value(t, tag, step)) for name, t in truth.items()
             if t.state != FAILED for step in t.eval]
    return pick([c for c in cands if math.isfinite(c[2])], key=lambda c: c[2])


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticExperiment, Path]:
    se = make_experiment(tmp_path_factory.mktemp("fin"), finished=True, seed=1)
    return se, write_report(se.exp, se.exp.root.parent / "report")


@pytest.fixture(scope="module")
def partial(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticExperiment, Path]:
    se = make_experiment(tmp_path_factory.mktemp("part"), finished=False, multi_objective=True,
                         seed=2)
    return se, write_report(se.exp, se.exp.root.parent / "report")


def _md_table(text: str, column: str) -> list[dict[str, str]]:
    """Rows of the first markdown table with a header cell ``column``."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines[:-1])
                 if lines[i + 1].startswith("|---") and f"| {column} |" in ln)
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(header, [c.strip() for c in ln.strip("|").split(" | ")],
                             strict=True)))
    return rows


# ---------------------------------------------------------------- numbers

@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
@pytest.mark.parametrize("which", ["finished", "partial"])
def test_leaderboard_numbers_are_the_event_files(which: str, request: pytest.FixtureRequest
                                                 ) -> None:
    se, out = request.getfixturevalue(which)
    board = pd.read_csv(out / "leaderboard.csv").set_index("trial")
    settings = se.exp.settings()
    tag, mode = settings["metrics"][0], settings["modes"][0]
    assert set(board.index) == set(se.truth)
    for name, t in se.truth.items():
        row = board.loc[name]
        assert row["state"] == t.state
        if not t.train:
            assert pd.isna(row["steps"]) and pd.isna(row["objective"])
            continue
        last = max(t.train)
        assert row["steps"] == last
        for k, v in t.train[last].items():
            if math.isnan(v):
                assert pd.isna(row[TRAIN + k])
            else:
                assert row[TRAIN + k] == pytest.approx(v, rel=1e-7)
        last_eval = t.eval[max(t.eval)]
        for k, v in last_eval.items():
            assert row[EVAL + k] == pytest.approx(v, rel=1e-7)
        pick = max if mode == "max" else min
        step = pick(t.eval, key=lambda s, t=t: reported_value(t, tag, s))
        assert row["best_step"] == step
        assert row["objective"] == pytest.approx(reported_value(t, tag, step), rel=1e-7)
        for k, v in t.eval[step].items():
            assert row[BEST + k] == pytest.approx(v, rel=1e-7)
        for k, v in t.params.items():
            if not k.startswith("_"):
                assert row[PARAM + k] == pytest.approx(v)
    # ...and through the one reader too: the same numbers sweep status shows.
    for trial in se.exp.trials():
        tm = m.read_trial(trial.path)
        if tm.last_eval():
            assert board.loc[trial.name, EVAL + m.MAP] == pytest.approx(tm.last_eval()[m.MAP])


def test_leaderboard_is_ranked_and_failed_trials_are_not(finished: tuple) -> None:
    se, _ = finished
    board = leaderboard(se.exp)
    ranked = board[board["rank"].notna()]
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    assert ranked["objective"].is_monotonic_decreasing  # mAP: max
    assert (board.loc[board["state"] == FAILED, "rank"].isna()).all()
    assert board.loc[board["trial"] == "trial_0004", "reason"].item() == "diverged"


def test_run_table_in_the_seeds_form(finished: tuple) -> None:
    se, out = finished
    rows = {r["Trial"].split()[0]: r
            for r in _md_table((out / "report.md").read_text(), "Model name")}
    settings = se.exp.settings()
    ds = settings["dataset"]
    assert list(rows) == [t.name for t in se.exp.trials()]  # creation order
    for name, t in se.truth.items():
        r = rows[name]
        assert r["Model name"] == settings["model_name"]
        assert r["Dataset (train + eval)"] == f"{ds['train_examples']} + {ds['eval_examples']}"
        assert r["Classes"] == str(ds["num_classes"])
        last = t.train[max(t.train)]
        assert r["Steps"] == str(max(t.train))
        assert r["Total loss"] == fmt(last[m.TOTAL_LOSS])
        assert r["Classification loss"] == fmt(last[m.CLASSIFICATION_LOSS])
        assert r["Learning rate"] == fmt(last[m.LEARNING_RATE])
        last_eval = t.eval[max(t.eval)]
        assert r["mAP"] == fmt(last_eval[m.MAP])
        assert r["mAP@.50"] == fmt(last_eval[m.MAP50])
        assert r["AR@100"] == fmt(last_eval[m.AR100])
        assert re.fullmatch(r"\d+:\d\d:\d\d", r["Training time"])
    assert rows["trial_0004"]["Total loss"] == "NaN"  # the diverged loss, as written


def test_changed_parameters_are_only_the_differences(finished: tuple) -> None:
    se, out = finished
    rows = {r["Trial"].split()[0]: r
            for r in _md_table((out / "report.md").read_text(), "Model name")}
    assert rows["trial_0000"]["Changed parameters"] == "default settings"
    for name, t in se.truth.items():
        cell = rows[name]["Changed parameters"]
        # The space's short names, 3 significant digits, on one line; no proto paths.
        assert "\n" not in cell and "train_config" not in cell
        assert ("batch_size " in cell) == (t.params["batch_size"] != BASE_PARAMS["batch_size"])
        if t.params["batch_size"] != BASE_PARAMS["batch_size"]:
            assert f"batch_size {t.params['batch_size']}" in cell
        if name != "trial_0000":
            assert f"l2_weight {num(t.params['l2_weight'])}" in cell
            assert f"cosine.base {num(t.params[LR])}" in cell


def test_verdict_comes_first_in_short_names_with_proto_paths_collapsed(finished: tuple) -> None:
    se, out = finished
    best = best_trial(se.exp)
    assert best is not None
    md = (out / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Leaderboard") < md.index("## Summary")
    verdict = md[md.index("## Verdict"):md.index("## Leaderboard")]
    assert f"Use {best.name}'s config: best/pipeline.config" in verdict
    # verdict.txt (what `sweep run` prints last) holds the same paragraphs, in plain text.
    plain = (out / "verdict.txt").read_text().splitlines()
    assert plain[0].startswith(f"Use {best.name}'s config") and len(plain) == 4
    assert all(line in verdict for line in plain)
    params = se.truth[best.name].params
    assert (f"What changed: batch_size {params['batch_size']}, cosine.base {num(params[LR])}, "
            f"l2_weight {num(params['l2_weight'])}.") in verdict
    _, at_base, at_best = like_for_like(se, "trial_0000", best.name)
    best_map = se.truth[best.name].eval[at_best][m.MAP]
    base_map = se.truth["trial_0000"].eval[at_base][m.MAP]
    assert f"mAP {fmt(best_map)} vs {fmt(base_map)} ({best_map - base_map:+.3g}," in verdict
    assert "up to the end of training (step 40)" in verdict
    # The full proto paths are there, but collapsed.
    details = verdict[verdict.index("<details>"):verdict.index("</details>")]
    assert "train_config.optimizer.momentum_optimizer.learning_rate." in details
    assert "train_config" not in verdict[:verdict.index("<details>")]
    html = (out / "report.html").read_text()
    assert html.index('id="verdict"') < html.index("<details>") < html.index('id="leaderboard"')


def test_numbers_are_short() -> None:
    assert [num(x) for x in (0.00012296072, 0.013123, 123456.7, 40, 2.5, float("nan"), True)] \
        == ["1.23e-4", "0.0131", "1.23e5", "40", "2.5", "NaN", "true"]


# ---------------------------------------------------------------- best

@pytest.mark.parametrize("which", ["finished", "partial"])
def test_best_trial_and_its_config(which: str, request: pytest.FixtureRequest) -> None:
    se, out = request.getfixturevalue(which)
    settings = se.exp.settings()
    name, step, value = _expected_best(se.truth, settings["metrics"][0], settings["modes"][0])
    best = best_trial(se.exp)
    assert best is not None and best.name == name
    # The best config is the best trial's rendered config, byte for byte.
    assert (out / "best" / "pipeline.config").read_bytes() == best.pipeline_path.read_bytes()
    params = {k: v for k, v in se.truth[name].params.items() if not k.startswith("_")}
    assert json.loads((out / "best" / "params.json").read_text()) == params
    assert yaml.safe_load((out / "best" / "params.yaml").read_text()) == params
    info = json.loads((out / "best" / "trial.json").read_text())
    assert (info["trial"], info["step"]) == (name, step)
    assert info["value"] == pytest.approx(value)


@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
def test_best_config_can_fine_tune_from_the_best_checkpoint(tmp_path: Path) -> None:
    from sweep.odapi.render import changed_fields, load_pipeline

    se = make_experiment(tmp_path, seed=3)
    out = write_report(se.exp, tmp_path / "report", fine_tune_from_best=True)
    best = best_trial(se.exp)
    assert best is not None
    cfg = load_pipeline(out / "best" / "pipeline.config")
    ckpt, step = se.truth[best.name].kept_best
    assert cfg.train_config.fine_tune_checkpoint == str(best.path / "best" / ckpt)
    assert cfg.train_config.fine_tune_checkpoint_type == "full"
    # Nothing else differs from the trial's own config.
    assert set(changed_fields(load_pipeline(best.pipeline_path), cfg)) == {
        "train_config.fine_tune_checkpoint", "train_config.fine_tune_checkpoint_type"}


def test_nearest_kept_checkpoint_without_the_runners_best_copy(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, runner_best=False, seed=4)
    for trial in se.exp.trials():
        t = se.truth[trial.name]
        assert len(t.checkpoint_steps) <= KEEP
        # Only evaluated checkpoints have a step known without TensorFlow (evaluated.jsonl).
        kept = {n: s for n, s in t.checkpoint_steps.items() if s in t.eval}
        if not kept:
            assert nearest_checkpoint(trial, 10) is None
            continue
        for target in (0, 15, 25, 40, 1000):
            found = nearest_checkpoint(trial, target)
            assert found is not None
            prefix, step = found
            assert prefix.parent == trial.path and kept[prefix.name] == step
            assert abs(step - target) == min(abs(s - target) for s in kept.values())


@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
def test_no_best_before_any_evaluation(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, finished=False, seed=5)
    out = tmp_path / "report"
    write_report(se.exp, out)
    assert (out / "best" / "pipeline.config").exists()
    for trial in se.exp.trials():  # as if no eval had run yet
        shutil.rmtree(trial.path / "eval", ignore_errors=True)
    assert best_trial(se.exp) is None
    write_report(se.exp, out)
    assert not (out / "best" / "pipeline.config").exists()  # a stale best would mislead
    assert "No trial has been evaluated yet" in (out / "report.md").read_text()


# ---------------------------------------------------------------- sections

def test_failed_and_stopped_trials_are_listed_with_reasons(finished: tuple) -> None:
    se, out = finished
    md = (out / "report.md").read_text()
    failures = {r["Trial"]: r for r in _md_table(md, "Reason")}
    bad = {n: t for n, t in se.truth.items() if t.state in ("FAILED", "STOPPED")}
    assert set(failures) == set(bad)
    for name, t in bad.items():
        assert failures[name]["State"] == t.state
        assert failures[name]["Reason"] == t.reason
    html = (out / "report.html").read_text()
    section = html[html.index('id="failures"'):]
    section = section[:section.index("</table>")]
    assert "trial_0004" in section and "diverged" in section and "STOPPED" in section


def test_partial_report_is_marked(finished: tuple, partial: tuple) -> None:
    for (_, out), is_partial in ((finished, False), (partial, True)):
        md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
        assert ("PARTIAL REPORT" in md) == is_partial
        assert ('id="partial-banner"' in html) == is_partial
        assert ("PARTIAL REPORT" in (out / "leaderboard.md").read_text()) == is_partial
    md = (partial[1] / "report.md").read_text()
    assert "RUNNING" in md and "PENDING" in md


def like_for_like(se: Any, base: str, best: str) -> tuple[int, int, int]:
    """(the last eval step both reached, base's best eval step up to it, best's), by mAP, from
    the fixture's ground truth."""
    tb, ts = se.truth[base].eval, se.truth[best].eval
    step = min(max(tb), max(ts))
    pick = [max((s for s in t if 0 < s <= step), key=lambda s, t=t: t[s][m.MAP]) for t in (tb, ts)]
    return step, pick[0], pick[1]


def test_best_vs_base(finished: tuple) -> None:
    se, out = finished
    md = (out / "report.md").read_text()
    best = best_trial(se.exp)
    assert best is not None and best.name != "trial_0000"
    rows = {r[""]: r for r in _md_table(md, "change")}
    base_col, best_col = "base (trial_0000)", f"best ({best.name})"
    step, at_base, at_best = like_for_like(se, "trial_0000", best.name)
    assert rows["evaluation compared (step)"][base_col] == str(at_base)
    mean_ap = rows["mAP there"]
    base_v = se.truth["trial_0000"].eval[at_base][m.MAP]
    best_v = se.truth[best.name].eval[at_best][m.MAP]
    assert mean_ap[base_col] == fmt(base_v) and mean_ap[best_col] == fmt(best_v)
    assert mean_ap["change"].startswith(f"{best_v - base_v:+.3g}")


def test_a_base_stopped_early_is_compared_at_the_step_it_reached(tmp_path: Path) -> None:
    """The base stopped at step 20 of 40: the best is compared at its best evaluation up to
    step 20, not at its later (better-trained) one, and the verdict says where."""
    from sweep.report.report_data import compare

    se = make_experiment(tmp_path, seed=4)
    stopped = next(n for n, t in se.truth.items() if t.state == "STOPPED")
    g = gather(se.exp)
    best = g.best_name()
    assert best is not None and best != stopped
    c = compare(g, stopped, best)
    assert c is not None and c.step == 20 and not c.at_end and c.stopped == stopped
    step, at_base, at_best = like_for_like(se, stopped, best)
    assert (c.step, c.base_step, c.best_step) == (step, at_base, at_best)
    assert c.scores[m.MAP] == (se.truth[stopped].eval[at_base][m.MAP],
                               se.truth[best].eval[at_best][m.MAP])
    g.base_name = lambda: stopped
    from sweep.report.report import _verdict

    text = " ".join(_verdict(g, {"value": 0.5, "step": 40}).text)
    assert f"up to step 20, the last both reached ({stopped} stopped there)" in text


def test_no_percentage_from_a_reference_near_zero() -> None:
    from sweep.report.report import _change

    assert _change(0.008446, 0.6507) == "+0.642, from ~0"
    assert _change(0.4, 0.5) == "+0.1, +25.0%"


def test_plots(finished: tuple, partial: tuple) -> None:
    _, out = finished
    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert {"loss_curves.png", "map_curves.png", "params_vs_metric.png",
            "parallel_coordinates.png"} <= plots
    assert "pareto.png" not in plots  # one objective: no Pareto front
    # 4 completed trials: importances would rank noise, and the report says so.
    assert "param_importances.png" not in plots
    assert (f"importances mean something from {MIN_TRIALS_FOR_IMPORTANCES} completed trials"
            in (out / "report.md").read_text())
    html = (out / "report.html").read_text()
    for key in ("history", "intermediate", "loss", "slice", "parallel", "contour"):
        assert f'id="fig-{key}"' in html
    assert 'id="fig-importances"' not in html and 'id="fig-pareto"' not in html
    assert html.count("plotly.js v") == 1  # plotly.js inlined once, whatever the figures
    assert 'id="fig-pareto"' in (partial[1] / "report.html").read_text()
    for p in (out / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pareto.png" in {p.name for p in (partial[1] / "plots").glob("*.png")}


@pytest.mark.parametrize("study", [True, False])
def test_pareto_front_is_the_non_dominated_trials(study: bool, partial: tuple,
                                                  tmp_path: Path) -> None:
    from sweep.report.report import _load_study, pareto_front

    se = partial[0] if study else make_experiment(tmp_path, finished=False, seed=2,
                                                  multi_objective=True, with_study=False)
    g = gather(se.exp)
    front, how = pareto_front(g, _load_study(g))
    assert ("Optuna" in how) == study  # else computed from the event files
    # Ray reports the last eval to Optuna; recompute the front from what was written.
    pts = {n: (reported_value(t, m.TOTAL_LOSS, max(t.eval)), t.eval[max(t.eval)][m.MAP])
           for n, t in se.truth.items() if t.state == "COMPLETED"}  # STOPPED is PRUNED
    expected = {n for n, (loss, ap) in pts.items()
                if not any(l2 <= loss and a2 >= ap and (l2, a2) != (loss, ap)
                           for l2, a2 in pts.values())}
    assert set(front) == expected


def test_importances_need_enough_trials(tmp_path: Path) -> None:
    import optuna

    se = make_experiment(tmp_path, seed=6)
    g = gather(se.exp)
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(
        params={"x": 1.0}, distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
        value=1.0))
    values, why = param_importances(g, study)
    assert values == {} and why.startswith("not enough trials")
    assert param_importances(g, None)[0] == {}


@pytest.mark.parametrize("n", [MIN_TRIALS_FOR_IMPORTANCES - 1, MIN_TRIALS_FOR_IMPORTANCES])
def test_importances_from_the_threshold_on(n: int, tmp_path: Path) -> None:
    """A study where only x matters: importances appear at the threshold and rank x first."""
    import optuna

    from sweep.report.report_figures import figures

    g = gather(make_experiment(tmp_path, seed=6).exp)
    study = optuna.create_study(direction="maximize")
    dists = {"x": optuna.distributions.FloatDistribution(0, 1),
             "y": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(n):
        x, y = (i * 7 % n) / n, (i * 3 % n) / n
        study.add_trial(optuna.trial.create_trial(params={"x": x, "y": y}, distributions=dists,
                                                  value=x))
    values, why = param_importances(g, study)
    figs, _ = figures(g, study, "mAP")
    assert ("importances" in {f.key for f in figs}) == (n >= MIN_TRIALS_FOR_IMPORTANCES)
    if n >= MIN_TRIALS_FOR_IMPORTANCES:
        assert list(values)[0] == "x" and why.startswith(f"from {n} completed trials")
    else:
        assert values == {} and why.startswith("not enough trials")


def test_without_a_study(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, with_study=False, seed=7)
    out = write_report(se.exp, tmp_path / "report")
    # The figures are drawn from the trials as the report reads them, study or not.
    assert 'id="fig-history"' in (out / "report.html").read_text()
    assert not se.exp.study_db.exists()  # reading must not create an empty database


def test_report_touches_only_its_own_files(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=8)
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    mine = [out / "notes.txt", out / "plots" / "my_plot.png", out / "best" / "keep.txt"]
    for p in mine:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("user file")
    (out / "plots" / "pareto.png").write_bytes(b"stale")  # ours, from a multi-objective past
    assert write_report(se.exp, out) == out
    assert all(p.read_text() == "user file" for p in mine)
    assert not (out / "plots" / "pareto.png").exists()


@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
def test_default_out_dir_is_reports_experiment(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    se = make_experiment(tmp_path / "exps", seed=9, name="my_sweep")
    monkeypatch.chdir(tmp_path)
    out = write_report(se.exp)
    assert out == Path("reports") / "my_sweep" and (tmp_path / out / "report.html").exists()


def test_empty_experiment(tmp_path: Path) -> None:
    exp = Experiment(tmp_path / "empty")
    exp.root.mkdir()
    write_json(exp.settings_path, {"name": "empty", "metrics": [m.MAP], "modes": ["max"]})
    out = write_report(exp, tmp_path / "report")
    assert best_trial(exp) is None and leaderboard(exp).empty
    assert "No trial has been evaluated yet" in (out / "report.md").read_text()


def test_bad_modes_are_rejected(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=10)
    settings = se.exp.settings()
    write_json(se.exp.settings_path, dict(settings, modes=["maximize"]))
    with pytest.raises(ValueError, match="must be 'max' or 'min', but got 'maximize'"):
        leaderboard(se.exp)


# ---------------------------------------------------------------- the HTML, in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
         "--v=0", "--hide-scrollbars", *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180)


@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
@pytest.mark.skipif(CHROMIUM is None,
                    reason="needs Debian's chromium (apt-get install -y chromium, as .ci/run does)")
@pytest.mark.parametrize("which", ["finished", "partial"])
def test_html_opens_in_a_headless_browser(which: str, request: pytest.FixtureRequest,
                                          tmp_path: Path) -> None:
    from PIL import Image

    _, out = request.getfixturevalue(which)
    page = out / "report.html"
    # Self-contained: no script, stylesheet or image loaded from anywhere else.
    text = page.read_text()
    assert not re.search(r"<script[^>]*\ssrc=|<link[^>]*\shref=|<img[^>]*src=\"(?!data:)", text)
    assert text.count("plotly.js v") == 1
    # Reasonable: plotly.js is ~4.8 MB of it; figures, tables and pictures add little.
    assert page.stat().st_size < 6_000_000
    n_figs = len(re.findall(r'<div id="fig-[a-z]+" class="plotly-graph-div"', text))
    assert n_figs >= 6
    proc = _chromium(page, tmp_path / "profile", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:2000]
    # Every figure drew its SVG (CHECK_JS counts them once the page has loaded).
    assert f'data-figures="{n_figs}/{n_figs}"' in body.group(0)
    assert 'data-report-ok="yes"' in body.group(0)
    assert "data-js-error" not in body.group(0)
    assert dom.count('<svg class="main-svg"') >= n_figs
    assert '<table id="run-table">' in dom and '<table id="leaderboard" class="sortable">' in dom
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    # What a person sees: a screenshot with the figures' traces painted (plotly's first
    # colour, #636efa) and the verdict's text, not a blank or unstyled page.
    shot = tmp_path / "report.png"
    proc = _chromium(page, tmp_path / "profile2", f"--screenshot={shot}",
                     "--window-size=1280,4000")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 4000)
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is not None
    counts = {c: n for n, c in colors}
    plotly_blue = sum(n for c, n in counts.items()
                      if abs(c[0] - 0x63) < 12 and abs(c[1] - 0x6E) < 12 and abs(c[2] - 0xFA) < 12)
    assert plotly_blue > 200, "no plotly trace painted in the screenshot"
    dark = sum(n for c, n in counts.items() if sum(c) < 150)
    assert dark > 2000, "no text painted in the screenshot"


def test_base_trial_without_the_marker(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=17)
    base = se.exp.trial("trial_0000")
    write_json(base.params_path, {k: v for k, v in base.params().items() if k != "_base"})
    # The first trial whose config equals the base config, wherever it is in the order.
    status = base.status()
    write_json(base.status_path, dict(status, created_at=status["created_at"] + 1e6))
    g = gather(se.exp)
    assert g.df["trial"].iloc[-1] == "trial_0000" and g.base_name() == "trial_0000"


@pytest.mark.slow
def test_numbers_from_event_files_tensorflow_wrote(tmp_path: Path) -> None:
    """The OD API writes with tf.summary (TF2 tensor summaries); the report reads those."""
    import tensorflow as tf

    se = make_experiment(tmp_path, seed=18)
    name = "trial_0001"
    t, trial = se.truth[name], se.exp.trial(name)
    for sub, rows in (("train", t.train), ("eval", t.eval)):
        for f in (trial.path / sub).glob("events.out.tfevents.*"):
            f.unlink()
        writer = tf.summary.create_file_writer(str(trial.path / sub))
        with writer.as_default():
            for step, tags in rows.items():
                for tag, value in tags.items():
                    tf.summary.scalar(tag, value, step=step)
        writer.close()
    row = leaderboard(se.exp).set_index("trial").loc[name]
    last = t.train[max(t.train)]
    assert row[TRAIN + m.TOTAL_LOSS] == pytest.approx(last[m.TOTAL_LOSS], rel=1e-7)
    best_step = max(t.eval, key=lambda s: t.eval[s][m.MAP])
    assert (row["best_step"], row["objective"]) == (best_step,
                                                     pytest.approx(t.eval[best_step][m.MAP]))


@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
def test_an_unreadable_trial_config_does_not_stop_the_report(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=19)
    se.exp.trial("trial_0002").pipeline_path.write_text("model { ssd { nonsense: 1 } }")
    out = write_report(se.exp, tmp_path / "report")
    md = (out / "report.md").read_text()
    assert "trial_0002: " in md and "not a valid pipeline.config" in md
    row = next(r for r in _md_table(md, "Model name") if r["Trial"] == "trial_0002")
    # The sampled values that differ from the base trial's instead (batch_size is the base's).
    t = se.truth["trial_0002"]
    assert row["Changed parameters"] == (f"cosine.base {num(t.params[LR])}, "
                                         f"l2_weight {num(t.params['l2_weight'])}")


# ---------------------------------------------------------------- is the win real?

def test_an_unconfirmed_verdict_never_claims_a_win_beyond_the_noise(finished: tuple) -> None:
    """One run per config: the verdict gives the eval-image noise of the compared evaluations
    (the bootstrap of the detections kept there, recomputed here from the files) but never
    says the win is real, and names the command that would confirm it."""
    from sweep.odapi import detections
    from sweep.report import bootstrap

    se, out = finished
    best = best_trial(se.exp)
    assert best is not None
    md = (out / "report.md").read_text()

    def kept(name: str) -> tuple[dict, list]:
        t = se.truth[name]
        step = max(t.eval, key=lambda s: t.eval[s][m.MAP])
        ckpt = f"ckpt-{step // 10}"  # the fixture checkpoints every 10 steps
        found = detections.read(se.exp.trial(name).path, ckpt)
        assert found is not None
        return found

    gt, base_dets = kept("trial_0000")
    iv = bootstrap.paired(gt, base_dets, kept(best.name)[1])
    assert (f"Eval-image noise alone: mAP {best.name} - trial_0000 = {iv.diff:+.3g}, 95% "
            f"interval [{iv.low:+.3g}, {iv.high:+.3g}] (paired bootstrap over the 16 eval "
            "images") in md
    assert "How sure: this rests on one run per config." in md
    assert f"sweep confirm {se.exp.name} --seeds 3" in md
    for claim in ("larger than this eval set's noise", "beyond", "excludes 0"):
        assert claim not in md[md.index("## Verdict"):md.index("## Leaderboard")]
    board = {r["Trial"].split()[0]: r for r in _md_table(md, "mAP behind best (95%)")}
    assert board[best.name]["mAP behind best (95%)"] == "best"
    assert board["trial_0000"]["mAP behind best (95%)"].startswith(
        f"{iv.diff:+.3g} [{iv.low:+.3g}, {iv.high:+.3g}]")
    csv = pd.read_csv(out / "leaderboard.csv").set_index("trial")
    assert csv.loc["trial_0000", "map_behind_best"] == pytest.approx(iv.diff)


@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
def test_noise_flag_when_the_gap_is_within_the_interval(tmp_path: Path) -> None:
    """Give a trial the best's own detections but one: its gap is noise, marked '~'."""
    from report_fixtures import detections_for

    from sweep.odapi import detections

    se = make_experiment(tmp_path, seed=1)
    best = best_trial(se.exp)
    assert best is not None
    other = "trial_0005"
    gt, _ = detections.read(best.path, "ckpt-4") or ({}, [])
    for name in (best.name, other):  # two detectors of equal skill, different luck
        detections.write_detections(se.exp.trial(name).path, "ckpt-4", gt,
                                    detections_for(gt, 0.6, seed=len(name) + (name == other)))
    out = write_report(se.exp, tmp_path / "report")
    board = {r["Trial"].split()[0]: r
             for r in _md_table((out / "report.md").read_text(), "mAP behind best (95%)")}
    assert board[other]["mAP behind best (95%)"].endswith(" ~")


def test_without_kept_detections_the_verdict_says_so(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=2)
    for trial in se.exp.trials():
        shutil.rmtree(trial.path / "eval" / "detections", ignore_errors=True)
    md = (write_report(se.exp, tmp_path / "report") / "report.md").read_text()
    assert "Eval-image noise: not measured (the eval job kept no per-image detections for" in md
    assert "mAP behind best" not in md


def test_detection_pictures_of_best_and_base(finished: tuple) -> None:
    """The eval's side-by-side pictures at each trial's best step, best then base, embedded."""
    import base64

    from report_fixtures import picture

    se, out = finished
    best = best_trial(se.exp)
    assert best is not None
    md = (out / "report.md").read_text()
    assert md.index("## Leaderboard") < md.index("## Detections: best and base") < md.index(
        "## Summary")
    html = (out / "report.html").read_text()
    for role, name in (("best", best.name), ("base", "trial_0000")):
        t = se.truth[name]
        step = max(t.eval, key=lambda s, t=t: t.eval[s][m.MAP])
        for i in range(3):
            png = out / "plots" / f"detections_{role}_{i}.png"
            assert png.read_bytes() == picture(name, step, i)
            assert f"({png.relative_to(out)})" in md
            assert f"{role} ({name}), step {step}, eval image {i + 1}" in md
            assert base64.b64encode(picture(name, step, i)).decode() in html
        assert not (out / "plots" / f"detections_{role}_3.png").exists()  # 3 per trial


@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
@pytest.mark.skipif(CHROMIUM is None,
                    reason="needs Debian's chromium (apt-get install -y chromium, as .ci/run does)")
def test_leaderboard_sorts_and_filters_in_the_browser(finished: tuple, tmp_path: Path) -> None:
    """Click a header (twice: ascending, then descending) and type in the filter box, in a
    real browser, through the page's own script."""
    se, out = finished
    drive = """<script>
    window.addEventListener('load', function () {
      var t = document.getElementById('leaderboard');
      var col = Array.prototype.findIndex.call(t.tHead.rows[0].cells,
        function (c) { return c.textContent.indexOf('Best mAP') === 0; });
      function names() { return Array.prototype.filter.call(t.tBodies[0].rows,
          function (r) { return r.style.display !== 'none'; })
        .map(function (r) { return r.cells[1].textContent.split(' ')[0]; }).join(','); }
      var th = t.tHead.rows[0].cells[col];
      th.click(); document.body.setAttribute('data-asc', names());
      th.click(); document.body.setAttribute('data-desc', names());
      var box = document.getElementById('leaderboard-filter');
      box.value = 'STOPPED'; box.dispatchEvent(new Event('input'));
      document.body.setAttribute('data-filtered', names());
    });
    </script></body>"""
    page = tmp_path / "driven.html"
    page.write_text((out / "report.html").read_text().replace("</body>", drive))
    proc = _chromium(page, tmp_path / "profile", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body
    attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', body.group(0)))
    board = leaderboard(se.exp)
    by_value = board.sort_values("objective", kind="stable")
    assert attrs["data-asc"].split(",") == list(by_value["trial"])
    assert attrs["data-desc"].split(",") == list(board.sort_values(
        "objective", ascending=False, kind="stable")["trial"])
    stopped = [n for n, t in se.truth.items() if t.state == "STOPPED"]
    assert attrs["data-filtered"].split(",") == stopped


def test_when_the_base_is_best_the_verdict_gives_its_detection_scores(tmp_path: Path) -> None:
    """The demo's verdict must show what the best detector scores even when no sampled config
    beat the base: mAP, mAP@.50 and AR@100 from the trial's table row."""
    from sweep.report.report import _verdict

    se = make_experiment(tmp_path, seed=3)
    g = gather(se.exp)
    best = g.best_name()
    g.base_name = lambda: best  # the base config is the best trial
    row = g.df.set_index("trial").loc[best]
    text = " ".join(_verdict(g, {"value": 0.5, "step": 40}).text)
    assert f"The base config ({best}, seed -) is the best trial so far (mAP " in text
    for tag in (m.MAP, m.MAP50, m.AR100):
        assert fmt(float(row[BEST + tag])) in text


# ---------------------------------------------------------------- at the user's scale

def test_the_best_trials_detections_are_matched_once_not_once_per_ranked_trial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """COCOeval on a 5,000-image eval set takes seconds: the gaps to the best match the
    best's detections once, and each other trial's once, for the top GAP_TOP trials only; the
    verdict's eval-image noise (base vs best at the compared steps) matches nothing again."""
    from sweep.report import bootstrap
    from sweep.report.report_data import compare, eval_noise, noise_vs_best

    se = make_experiment(tmp_path, seed=5)
    g = gather(se.exp)
    calls: list[int] = []
    real = bootstrap.evaluate
    monkeypatch.setattr(bootstrap, "evaluate", lambda gt, d: calls.append(1) or real(gt, d))
    assert noise_vs_best(g, resamples=20, top=2) is None
    ranked = g.ranked().set_index("trial")["best_step"]
    best, base = g.best_name(), g.base_name()
    c = compare(g, base, best)
    keys = {(str(n), int(ranked[n])) for n in list(ranked.index)[:3]}  # the best, two others
    keys |= {(c.base, c.base_step), (c.best, c.best_step)}
    assert len(g.vs_best) == 2 and len(calls) == len(keys)  # each (trial, step) once
    assert not isinstance(eval_noise(g, c, resamples=20), str) and len(calls) == len(keys)


def test_only_the_pictures_of_the_evaluation_shown_are_read(tmp_path: Path) -> None:
    from report_fixtures import picture, write_pictures

    d = tmp_path / "eval"
    d.mkdir()
    write_pictures(d, "t", [10, 20, 40], n=2)
    at, images = m.read_images_near(d, 25)
    assert at == 20 and images == {f"eval_side_by_side_{i}_0": picture("t", 20, i)
                                   for i in range(2)}
    assert m.read_images_near(d, 39)[0] == 40
    assert m.read_images_near(tmp_path / "none", 10) is None
