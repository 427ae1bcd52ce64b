"""Every numeric option of every subcommand is range-checked before the command does anything,
with the usual "command line: --option: problem. Fix: ..." message: walked over the parser, so
a new numeric option without a range fails here."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sweep import cli


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
            ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    return [leaf for name, p in subs[0].choices.items() for leaf in _leaves(p, (*path, name))]


def _required(parser: argparse.ArgumentParser) -> list[str]:
    """Dummy values for what the subcommand requires (never used: the check comes first)."""
    argv: list[str] = []
    for a in parser._actions:
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
            argv.append("x")
        elif a.required:
            argv += [a.option_strings[-1], "x"]
    return argv


def _out_of_range(rule: cli.Range, kind: type) -> list[str]:
    bad = []
    if rule.low is not None:
        bad.append(str(kind(rule.low) if rule.low_open else kind(rule.low) - 1))
    if rule.high is not None:
        bad.append(str(kind(rule.high) if rule.high_open else kind(rule.high) + 1))
    if kind is float:
        bad += ["nan", "inf"]
    return bad


CASES = [(path, action.option_strings[-1], action.type, parser)
         for path, parser in _leaves(cli.build_parser())
         for action in cli.numeric_actions(parser)]


def test_the_walk_finds_the_numeric_options() -> None:
    found = {opt for _, opt, _, _ in CASES}
    assert {"--num-trials", "--seed", "--batch-size", "--port", "--split", "--watch"} <= found
    assert found == set(cli.RANGES), set(cli.RANGES) ^ found  # a range for each, none stale


@pytest.mark.parametrize(("path", "option", "kind", "parser"), CASES,
                         ids=[f"{' '.join(c[0])} {c[1]}" for c in CASES])
def test_out_of_range_values_are_refused_before_anything_runs(
        path: tuple[str, ...], option: str, kind: type, parser: argparse.ArgumentParser,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    # Nothing may run: a command reached would be a bug of the check.
    monkeypatch.setattr(cli, "COMMANDS", {})
    for bad in _out_of_range(cli.RANGES[option], kind):
        rc = cli.main([*path, *_required(parser), f"{option}={bad}"])
        err = capsys.readouterr().err
        assert rc == 2, (path, option, bad, err)
        assert f"  - command line: {option}: must be" in err and "Fix: " in err, err
        assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no folder left behind


def test_in_range_values_pass_the_check() -> None:
    p = cli.build_parser()
    argv = ["run", "--space", "s", "--pipeline", "p", "--seed", "0", "--eval-every", "0",
            "--time-budget", "0.5", "--cpus-per-trial", "1"]
    cli.check_numbers(cli.chosen_parser(p, argv), p.parse_args(argv))
