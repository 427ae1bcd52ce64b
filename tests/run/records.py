"""One check that a sweep's five records of its trials agree (issue 26, item 1), whatever ended
it: the trial folders (the truth), the Optuna study, `sweep status`, the report's leaderboard
and the sweep's closing line with its exit code.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import optuna

from sweep.core import errors
from sweep.core.experiment import COMPLETED, ENDED, FAILED, INTERRUPTED, STOPPED, Experiment
from tests.conftest import run_cli

# What the study says of a trial whose folder says X: an interrupted trial stays RUNNING in the
# study, for the resumed searcher to finish.
STUDY_OF = {COMPLETED: "COMPLETE", STOPPED: "PRUNED", FAILED: "FAIL", INTERRUPTED: "RUNNING"}


def study_states(exp: Experiment) -> dict[str, str]:
    """Optuna's state of each trial, by its Ray trial id (the folder's name)."""
    s = exp.settings()
    study = optuna.load_study(study_name=s["study_name"], storage=exp.storage_url())
    return {t.user_attrs.get("ray_trial_id", f"#{t.number}"): t.state.name for t in study.trials}


def status_states(text: str) -> dict[str, str]:
    """The state column of `sweep status`'s table, by trial (columns as its header places them)."""
    lines = text.splitlines()
    h = next(i for i, line in enumerate(lines) if line.startswith("trial ") and " state " in line)
    start = lines[h].index(" state ") + 1
    rows = {}
    for line in lines[h + 2:]:
        if not line.strip() or not re.match(r"[0-9a-z_-]+\s", line):
            break
        rows[line.split()[0]] = line[start:].split()[0]
    return rows


def leaderboard_states(report: Path) -> dict[str, str]:
    with open(report / "leaderboard.csv", newline="") as f:
        return {row["trial"]: row["state"] for row in csv.DictReader(f)}


def closing_line(out: str, name: str) -> str:
    """The sweep's last line about itself (`sweep NAME ...`)."""
    return [line for line in out.splitlines() if line.startswith(f"sweep {name} ")][-1]


def assert_records_agree(root: Path, name: str, out: str, rc: int) -> dict[str, str]:
    """Folder, study, status, report and closing line (with ``rc``) of experiment ``name``
    under ``root``/experiments say the same of every trial; returns the folders' states and
    `sweep status`'s output (key "status"). The report is written to root/reports/name."""
    exp = Experiment(root / "experiments" / name)
    folders = {t.name: t.status()["state"] for t in exp.trials()}
    assert folders, f"{name}: no trial folders"

    study = study_states(exp)
    for trial, state in folders.items():
        assert study.get(trial) == STUDY_OF[state], (name, trial, state, study)

    status = run_cli(["status", name], root)
    assert status.returncode == 0, status.stderr[-2000:]
    assert status_states(status.stdout) == folders, (name, status.stdout)

    report = run_cli(["report", name], root)
    assert report.returncode == 0, report.stderr[-2000:]
    assert leaderboard_states(root / "reports" / name) == folders, name

    line = closing_line(out, name)
    counts = {s: sum(1 for v in folders.values() if v == s) for s in STUDY_OF}
    ended = sum(counts[s] for s in ENDED)
    total = int(exp.settings().get("num_trials") or len(folders))
    if m := re.match(rf"sweep {name} interrupted \((SIG\w+)\): (\d+) of (\d+) trials done, "
                     r"(\d+) interrupted .* (\d+) not started\. Continue with: sweep resume ",
                     line):
        assert rc == {"SIGINT": 130, "SIGTERM": 143}[m[1]], (line, rc)
        assert (int(m[2]), int(m[3]), int(m[4])) == (ended, total, counts[INTERRUPTED]), (
            line, folders)
        assert int(m[5]) == total - ended - counts[INTERRUPTED], line
    elif m := re.match(rf"sweep {name} stopped: the (step|time) budget .*; (\d+) of (\d+) trials "
                       r"ran", line):
        assert rc == errors.EXIT_OK, (line, rc)
        assert (int(m[2]), int(m[3])) == (ended, total), (line, folders)
        assert counts[INTERRUPTED] == counts[FAILED] == 0, folders
    elif m := re.match(rf"sweep {name} finished, but (\d+) of (\d+) trials failed", line):
        assert rc == errors.EXIT_TRIALS_FAILED, (line, rc)
        assert (int(m[1]), int(m[2])) == (counts[FAILED], len(folders)), (line, folders)
        assert counts[INTERRUPTED] == 0, folders
    else:
        assert line == f"sweep {name} finished: every trial completed or was stopped early", line
        assert rc == errors.EXIT_OK, (line, rc)
        assert set(folders.values()) <= {COMPLETED, STOPPED}, folders
        assert len(folders) == total, (folders, total)
    return {**folders, "status": status.stdout}
