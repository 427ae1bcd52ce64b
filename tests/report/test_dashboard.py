"""`sweep dashboard`: optuna-dashboard, started as a user would, answers with the experiment's
trials (a synthetic experiment's real SQLite study; two studies in the storage)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
from report_fixtures import make_experiment


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - our own 127.0.0.1 server
        assert r.status == 200
        return r.read()


@pytest.mark.slow  # seconds, not milliseconds: the fast set stays under 2 min
def test_dashboard_serves_the_experiments_study(tmp_path: Path) -> None:
    se = make_experiment(tmp_path / "exps", seed=3, name="dash")
    settings = se.exp.settings()
    # Another study in the same database must not be the one shown.
    optuna.create_study(storage=settings["storage_url"], study_name="someone-else")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "dashboard", "dash", "--storage",
         str(tmp_path / "exps"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path.cwd())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)/dashboard/studies/(\d+)", line)
        assert found, line + proc.stdout.read() if proc.poll() is not None else line
        base, study_id = found.group(1), int(found.group(2))
        assert b"<html" in _get(f"{base}/dashboard/studies/{study_id}").lower()
        studies = {s["study_name"]: s["study_id"]
                   for s in json.loads(_get(f"{base}/api/studies"))["study_summaries"]}
        assert studies["dash"] == study_id
        detail = json.loads(_get(f"{base}/api/studies/{study_id}?after=0"))
        expected = optuna.load_study(study_name="dash", storage=settings["storage_url"])
        assert len(detail["trials"]) == len(expected.trials) == 6  # PENDING ones are not added
        for got, want in zip(sorted(detail["trials"], key=lambda t: t["number"]),
                             expected.trials, strict=True):
            assert got["state"].upper() == want.state.name
            params = {p["name"]: p["param_internal_value"] for p in got["params"]}
            assert params == {k: want.distributions[k].to_internal_repr(v)
                              for k, v in want.params.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dashboard_without_a_study_says_what_to_do(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    from sweep import cli

    se = make_experiment(tmp_path / "exps", seed=4, name="nostudy", with_study=False)
    assert cli.main(["dashboard", "nostudy", "--storage", str(tmp_path / "exps")]) == 2
    err = capsys.readouterr().err
    assert "does not exist yet" in err and "sweep run" in err
    assert not se.exp.study_db.exists()  # nothing created
