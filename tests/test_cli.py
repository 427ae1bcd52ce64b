"""The command line: help, bad input stops before launch, experiments are never clobbered."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep import cli
from sweep.core.errors import ConfigError
from sweep.run.settings import SweepSettings


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in cli.COMMANDS]])
def test_every_command_explains_itself(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: sweep" in out
    if argv[0] == "run":
        for opt in ("--space", "--pipeline", "--num-trials", "--max-concurrent", "--sampler",
                    "--scheduler", "--metric", "--mode", "--time-budget", "--step-budget",
                    "--seed", "--cpus-per-trial", "--gpus-per-trial", "--storage", "--address"):
            assert opt in out


def _settings(tmp_path: Path, **kw) -> SweepSettings:  # noqa: ANN003
    space = tmp_path / "s.yaml"
    space.write_text("parameters: {}\n")
    pipe = tmp_path / "p.config"
    pipe.write_text("")
    return SweepSettings(name=kw.pop("name", "x"), space=space, pipeline=pipe,
                         storage=tmp_path / "exps", **kw)


@pytest.mark.parametrize(("kw", "key", "words"), [
    ({"num_trials": 0}, "--num-trials", "must be >= 1"),
    ({"sampler": "bayes"}, "--sampler", "unknown sampler 'bayes'"),
    ({"scheduler": "hyperband"}, "--scheduler", "unknown scheduler 'hyperband'"),
    ({"scheduler": "pbt"}, "--eval-every", "PBT needs evaluations during training"),
    ({"scheduler": "pbt", "eval_every": 20, "perturbation_interval": 30},
     "--perturbation-interval", "not a multiple of --eval-every 20"),
    ({"scheduler": "asha", "pbt_sync": True}, "--pbt-sync", "applies to --scheduler pbt or pb2"),
    ({"modes": ["up"]}, "--mode", "neither 'max' nor 'min'"),
    ({"metrics": ["a", "b"], "modes": ["max"]}, "--mode", "2 metrics but 1 modes"),
    ({"sampler": "nsga2"}, "--sampler", "multi-objective sampler but one metric"),
    ({"sampler": "cmaes", "metrics": ["a", "b"], "modes": ["max", "min"]}, "--sampler",
     "does not support multiple objectives"),
    ({"gpus_per_trial": 1.5}, "--gpus-per-trial", "above 1 it must be whole"),
    ({"name": "../up"}, "--name", "not a plain folder name"),
])
def test_bad_options_name_the_option_and_the_fix(tmp_path: Path, kw: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        _settings(tmp_path, **kw).check()
    msg = str(e.value)
    assert key in msg and words in msg and "Fix:" in msg


def test_settings_round_trip_through_experiment_json(tmp_path: Path) -> None:
    s = _settings(tmp_path, metrics=["Loss/total_loss", "DetectionBoxes_Precision/mAP"],
                  modes=["min", "max"], sampler="nsga2", gpus_per_trial=0.5, declare_gpus=1)
    s.check()
    data = s.to_json()
    assert data["storage_url"].startswith("sqlite:///") and data["storage_url"].endswith("x/study.db")
    back = SweepSettings.from_json(data)
    assert back == s


def test_an_existing_experiment_is_never_overwritten(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    exp = cli.prepare_experiment(s, overwrite=False)
    (exp.root / "trials").mkdir()
    (exp.root / "trials" / "precious").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists.*sweep resume x"):
        cli.prepare_experiment(s, overwrite=False)
    assert (exp.root / "trials" / "precious").read_text() == "keep me"
    cli.prepare_experiment(s, overwrite=True)  # moved aside, not deleted
    aside = [p for p in (tmp_path / "exps").iterdir() if p.name.startswith("x.old-")]
    assert len(aside) == 1 and (aside[0] / "trials" / "precious").read_text() == "keep me"
    assert not (exp.root / "trials").exists()


def test_validate_failure_exits_2_and_launches_nothing(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text("parameters:\n  l2_weight: {loguniform: [0.0, 1.0]}\n")
    code = cli.main(["run", "--space", str(space), "--pipeline", str(tmp_path / "missing.config"),
                     "--storage", str(tmp_path / "exps"), "--name", "n"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nothing was launched" in err and "missing.config" in err
    assert not (tmp_path / "exps").exists()


def test_status_of_unknown_experiment_says_where_it_looked(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["status", "nope", "--storage", str(tmp_path)]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(("launched", "error", "code"), [
    (False, OSError(13, "Permission denied", "/x/report.html"), 2),
    (True, OSError(13, "Permission denied", "/x/report.html"), 4),
    (True, ConfigError("the report's plots need matplotlib"), 4),
    (True, RuntimeError("a bug while writing the report"), 4),
])
def test_an_error_is_exit_2_only_before_anything_was_launched(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, launched: bool,
        error: Exception, code: int) -> None:
    """errors.py: exit 2 is "nothing was launched". Once trials ran, an error (here raised
    where the report would be written) is errors.EXIT_ERROR_AFTER_LAUNCH."""
    from sweep.core import errors

    def command(a: object) -> int:
        if launched:
            errors.mark_launched()
        raise error

    monkeypatch.setitem(cli.COMMANDS, "status", command)
    assert cli.main(["status", "e"]) == code
    err = capsys.readouterr().err
    assert ("the trials ran" in err) == launched and ("nothing was" in err) == (
        not launched and isinstance(error, ConfigError))
