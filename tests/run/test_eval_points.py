"""No option silently does nothing: an early-stopping scheduler gets evaluation points (a
quarter of num_steps by default, or a refusal naming --eval-every), and the sweep says where
its rungs are before launch. Fast: no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep import cli
from sweep.core.errors import ConfigError
from sweep.run import schedulers


def test_asha_and_median_evaluate_every_quarter_by_default() -> None:
    for name in ("asha", "median"):
        every, note = schedulers.eval_points(name, 0, 100)
        assert every == 25 and "every 25 steps" in note and "--eval-every" in note
    assert schedulers.eval_points("fifo", 0, 100) == (0, None)  # nothing to stop: as given
    assert schedulers.eval_points("asha", 10, 100) == (10, None)


@pytest.mark.parametrize("name", ["asha", "median", "pbt", "pb2"])
def test_eval_every_at_or_past_num_steps_is_refused(name: str) -> None:
    with pytest.raises(ConfigError) as e:
        schedulers.eval_points(name, 100, 100)
    assert e.value.problems[0].key == "--eval-every"
    assert "--eval-every 25" in e.value.problems[0].fix


def test_rungs() -> None:
    assert schedulers.decision_steps("asha", 100, 25) == [25, 50]
    assert schedulers.decision_steps("asha", 80, 10) == [10, 20, 40]
    assert schedulers.decision_steps("median", 100, 25) == [25, 50, 75]
    assert schedulers.decision_steps("pbt", 80, 10, 20) == [20, 40, 60]
    assert schedulers.decision_steps("fifo", 100, 25) == []


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import make_workspace

    root = tmp_path_factory.mktemp("evalpoints")
    (root / "pipeline.txt").write_text(str(make_workspace(root, n_train=4, n_eval=2)))
    (root / "space.yaml").write_text("parameters:\n  num_steps: 100\n"
                                     "  l2_weight: {loguniform: [1.0e-5, 1.0e-2]}\n")
    return root


def _run(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from sweep.run import tune_backend

    def stop_here(*a, **k):  # noqa: ANN002, ANN003, ANN202 - where Ray would start
        raise ConfigError("stopped by the test before launch")

    monkeypatch.setattr(tune_backend, "preflight", stop_here)
    monkeypatch.chdir(root)
    pipeline = (root / "pipeline.txt").read_text()
    return cli.main(["run", "--space", "space.yaml", "--pipeline", pipeline, "--name", "ep",
                     "--no-dashboard", *args])


def test_the_sweep_prints_its_rungs_before_launch(workspace: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    assert _run(workspace, monkeypatch) == 2  # default: asha, --eval-every 0
    out = capsys.readouterr().out
    assert "evaluating every 25 steps (a quarter of num_steps 100)" in out, out
    assert "--scheduler asha decides at steps 25, 50 (of 100)" in out, out


def test_a_useless_eval_every_is_refused_naming_it(workspace: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    assert _run(workspace, monkeypatch, "--eval-every", "100", "--scheduler", "median") == 2
    err = capsys.readouterr().err
    assert "command line: --eval-every: 100 is not below num_steps 100" in err, err
    assert "stopped by the test" not in err  # refused before launch
    assert not (workspace / "experiments" / "ep").exists()
