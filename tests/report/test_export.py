"""`sweep export`: which trial and checkpoint; (slow) a real SavedModel from a real checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report_fixtures import make_experiment

from sweep.report.export import export_trial, find_trial, plan_export
from sweep.report.report import best_trial


def test_plan_exports_the_best_trials_best_checkpoint(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=11)
    plan = plan_export(se.exp)
    best = best_trial(se.exp)
    assert best is not None and plan.trial == best
    ckpt, step = se.truth[best.name].kept_best
    assert plan.checkpoint == best.path / "best" / ckpt
    assert plan.step == plan.best_step == step


def test_plan_for_a_given_trial_by_name_or_number(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=12, runner_best=False)
    assert find_trial(se.exp, "3") == find_trial(se.exp, "trial_0003") == se.exp.trial(
        "trial_0003")
    plan = plan_export(se.exp, "3")
    kept = se.truth["trial_0003"].checkpoint_steps
    assert plan.checkpoint.parent == se.exp.trial("trial_0003").path
    assert kept[plan.checkpoint.name] == plan.step
    with pytest.raises(FileNotFoundError, match="no trial 'trial_9999'; trials: trial_0000"):
        find_trial(se.exp, "trial_9999")


def test_plan_without_evaluations_takes_the_newest_checkpoint(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=13, runner_best=False)
    trial = se.exp.trial("trial_0002")
    shutil.rmtree(trial.path / "eval")
    plan = plan_export(se.exp, "trial_0002")
    assert plan.checkpoint == trial.checkpoints()[-1][1] and plan.step is None


def test_nothing_to_export(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=14, finished=False)
    with pytest.raises(FileNotFoundError, match="trial_0006 .* has no checkpoint"):
        plan_export(se.exp, "trial_0006")  # PENDING: never trained
    for t in se.exp.trials():
        shutil.rmtree(t.path / "eval", ignore_errors=True)
    with pytest.raises(FileNotFoundError, match="no trial has been evaluated yet"):
        plan_export(se.exp)


def test_bad_input_type(tmp_path: Path) -> None:
    se = make_experiment(tmp_path, seed=15)
    with pytest.raises(ValueError, match="input_type must be one of .* but got 'jpeg'"):
        export_trial(se.exp, None, tmp_path / "out", input_type="jpeg")


def test_an_unreadable_checkpoint_is_a_clear_error_and_leaves_no_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The fixture's checkpoints are placeholders, as a truncated one would be: TensorFlow's
    error (stood in for here: no TF) becomes the usual message, and --out is not left behind."""
    from sweep import cli
    from sweep.report import export

    se = make_experiment(tmp_path / "exps" / "x", seed=16)

    def tf_fails(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise ValueError("Unable to load checkpoint: data is truncated\n<a long TF trace>")

    monkeypatch.setattr(export, "run_exporter", tf_fails)
    out = tmp_path / "new" / "out"
    rc = cli.main(["export", str(se.exp.root), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "checkpoint cannot be exported (ValueError: Unable to load checkpoint: data is " \
           "truncated)" in err and "Fix: " in err and "Traceback" not in err, err
    assert not (tmp_path / "new").exists()


# --- TFLite: what is refused before anything is built (tests/report/test_export_tflite.py
# exports a real one) -------------------------------------------------------------------------

def _export_cli(args: list[str], monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """`sweep export ARGS` in this process, with every TF step replaced by a failure: a refusal
    must come before any of them."""
    from sweep import cli
    from sweep.odapi import tflite
    from sweep.report import export

    def no_tf(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("TensorFlow work started before the refusal")

    for mod, name in ((export, "run_exporter"), (export, "_tflite_and_scores"),
                      (tflite, "export_graph"), (tflite, "convert")):
        monkeypatch.setattr(mod, name, no_tf)
    rc = cli.main(["export", *args])
    return rc, capsys.readouterr().err


def test_tflite_refuses_a_non_ssd_model_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from sweep.odapi.render import load_pipeline, write_pipeline

    se = make_experiment(tmp_path / "exps" / "x", seed=17)
    best = best_trial(se.exp)
    assert best is not None
    cfg = load_pipeline(best.pipeline_path)
    cfg.model.faster_rcnn.num_classes = 3  # the model oneof is now faster_rcnn
    write_pipeline(cfg, best.pipeline_path)
    out = tmp_path / "new" / "out"
    rc, err = _export_cli([str(se.exp.root), "--format", "tflite", "--out", str(out)],
                          monkeypatch, capsys)
    assert rc == 2, err
    assert f"{best.pipeline_path}: model: the model is faster_rcnn, and TFLite export " \
           "supports SSD models only" in err and "Fix: export this trial as a SavedModel" in err
    assert not (tmp_path / "new").exists()


def test_tflite_refuses_missing_records_naming_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from sweep.odapi.render import load_pipeline, write_pipeline

    se = make_experiment(tmp_path / "exps" / "x", seed=18)
    best = best_trial(se.exp)
    assert best is not None
    cfg = load_pipeline(best.pipeline_path)
    cfg.eval_input_reader[0].tf_record_input_reader.input_path[:] = [str(tmp_path / "gone.rec")]
    cfg.train_input_reader.tf_record_input_reader.input_path[:] = [str(tmp_path / "tr.rec")]
    write_pipeline(cfg, best.pipeline_path)
    out = tmp_path / "out"
    rc, err = _export_cli([str(se.exp.root), "--format", "tflite", "--quantize", "int8",
                           "--out", str(out)], monkeypatch, capsys)
    assert rc == 2, err
    assert f"eval_input_reader.tf_record_input_reader.input_path: no file matches " \
           f"'{tmp_path / 'gone.rec'}'" in err, err
    assert "train_input_reader.tf_record_input_reader.input_path: no file matches" in err
    assert not out.exists()


def test_quantize_without_tflite_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    se = make_experiment(tmp_path / "x", seed=19)
    rc, err = _export_cli([str(se.exp.root), "--quantize", "int8", "--out",
                           str(tmp_path / "o")], monkeypatch, capsys)
    assert rc == 2 and "--quantize: quantizing applies to a TFLite model only" in err, err
    assert not (tmp_path / "o").exists()
