"""The docs say what the code does: every `sweep ...` command in the README and docs/ parses with
the real command-line parser, every relative link leads somewhere, and every "docs/<page>.md:
<section>" the code points users to exists. Fast: parsing builds no sweep and starts nothing."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweep.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = {"sweep", ".venv/bin/sweep"}
SHELL_FENCES = {"bash", "sh", "shell", "console"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
ELISION = "..."  # "sweep run ... --overwrite": the rest of a command, left out


# --- what the pages hold -------------------------------------------------------------------

def split_blocks(text: str) -> tuple[list[tuple[str, int, list[str]]], str]:
    """The code blocks of a Markdown text as (kind, first line number, lines), kind being a
    fenced block's language ('' when none) or 'indented'; and the prose outside them."""
    blocks: list[tuple[str, int, list[str]]] = []
    prose: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", line)
        if fence:
            marker, lang, start, body = fence.group(1), fence.group(2).lower(), i + 2, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                body.append(lines[i])
                i += 1
            blocks.append((lang, start, body))
            i += 1
            continue
        if line.startswith("    ") and line.strip() and (i == 0 or not lines[i - 1].strip()):
            start, body = i + 1, []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            blocks.append(("indented", start, body))
            continue
        prose.append(line)
        i += 1
    return blocks, "\n".join(prose)


def logical_lines(body: list[str], first: int) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined, each with the number of its first line."""
    joined, start = "", first
    for n, line in enumerate(body, first):
        if not joined:
            start = n
        if line.rstrip().endswith("\\"):
            joined += line.rstrip()[:-1] + " "
            continue
        yield start, joined + line
        joined = ""
    if joined:
        yield start, joined


def sweep_argv(line: str) -> list[str] | None:
    """The arguments of the `sweep` command a shell line runs, or None when it runs none.
    Handles `VAR=value sweep ...`, `./run.sh sweep ...` and `ray job submit ... -- sweep ...`;
    `[--opt value]` (an optional part) counts as written."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    if tokens[:2] == ["./run.sh", "sweep"]:
        tokens = tokens[1:]
    elif tokens and tokens[0] not in PROGRAMS and "--" in tokens:
        tokens = tokens[tokens.index("--") + 1:]
    if not tokens or tokens[0] not in PROGRAMS:
        return None
    return [t.strip("[]") for t in tokens[1:] if t.strip("[]")]


def commands(text: str) -> list[tuple[int, str, list[str]]]:
    """Every `sweep` command in the shell blocks (```bash, indented) of a Markdown text, as
    (line number, line, argv). Other fenced blocks (program output, YAML) are not commands."""
    found = []
    blocks, _ = split_blocks(text)
    for kind, first, body in blocks:
        if kind not in SHELL_FENCES and kind != "indented":
            continue
        for n, line in logical_lines(body, first):
            argv = sweep_argv(line)
            if argv is not None:
                found.append((n, line.strip(), argv))
    return found


def doc_commands() -> list[tuple[str, int, str, list[str]]]:
    return [(page.relative_to(ROOT).as_posix(), n, line, argv)
            for page in PAGES for n, line, argv in commands(page.read_text())]


# --- the real parser -------------------------------------------------------------------------

def _parsers(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def parse_error(argv: list[str]) -> str | None:
    """What the real `sweep` parser says about argv (None: it parses). A command whose rest is
    left out (`...`) or that asks for --help need not give the required options."""
    parser = build_parser()
    relaxed = ELISION in argv or "--help" in argv or "-h" in argv
    argv = [a for a in argv if a not in (ELISION, "--help", "-h")]
    if relaxed:
        for p in _parsers(parser):
            for action in p._actions:
                if action.option_strings:
                    action.required = False
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else "exit"
    return None


def inline_option_errors(span: str) -> list[str]:
    """Options in an inline `sweep ...` span that the (sub)command it names does not have."""
    tokens = span.split()
    parser = build_parser()
    for token in tokens[1:]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and token in subs[0].choices:
            parser = subs[0].choices[token]
    known = parser._option_string_actions
    return [t for t in tokens if t.startswith("-") and t.strip("[]").split("=")[0] not in known
            and t not in ("-", "--")]


# --- the tests ---------------------------------------------------------------------------------

def test_the_docs_have_commands_and_the_readme_keeps_its_set_up() -> None:
    found = doc_commands()
    assert len(found) >= 15, found
    named = {argv[0] for *_, argv in found if argv}
    assert {"run", "validate", "status", "report", "resume", "export", "dashboard", "data",
            "init"} <= named, named
    readme = README.read_text()
    assert "./run.sh demo" in readme and "./run.sh test" in readme  # .ci/run runs ./run.sh test


@pytest.mark.parametrize("page, line_no, line, argv", doc_commands(),
                         ids=[f"{p}:{n}" for p, n, *_ in doc_commands()])
def test_each_command_in_the_docs_parses(page: str, line_no: int, line: str, argv: list[str]) -> None:
    error = parse_error(argv)
    assert error is None, f"{page}:{line_no}: `{line}` does not parse: {error}"


def test_inline_sweep_commands_name_real_options() -> None:
    """`sweep validate SPACE PIPELINE --no-data` in a sentence: each option exists."""
    bad, with_options = [], 0
    for page in PAGES:
        _, prose = split_blocks(page.read_text())
        for span in re.findall(r"`([^`]+)`", prose):
            span = " ".join(span.split())
            if span.startswith("sweep ") and not span.startswith("sweep."):
                with_options += " -" in span
                bad += [f"{page.name}: `{span}`: {o}" for o in inline_option_errors(span)]
    assert with_options >= 5 and not bad, bad


def test_the_command_check_catches_what_is_wrong() -> None:
    """The check is not vacuous: a made-up option, command or choice fails it."""
    assert parse_error(["run", "--space", "S", "--pipeline", "P", "--no-such-option"])
    assert parse_error(["frobnicate", "EXPERIMENT"])
    assert parse_error(["run", "--space", "S", "--pipeline", "P", "--eval-device", "tpu"])
    assert parse_error(["run", "--study-urll", "sqlite://", ELISION])  # elided, still checked
    assert parse_error(["data", "voc", "images/"])  # --out is required
    assert parse_error(["status", "EXPERIMENT", "--watch", "often"])  # not a number
    assert parse_error(["status", "<experiment>", "--storage", "/shared", "--watch", "30"]) is None
    assert inline_option_errors("sweep validate SPACE PIPELINE --no-such-check")
    assert not inline_option_errors("sweep validate SPACE PIPELINE --no-data")


def test_commands_are_found_only_where_they_are_commands() -> None:
    sample = "\n".join([
        "```", "sweep demo-20261126 finished: every trial completed", "```",
        "```yaml", "sweep: run --nothing", "```",
        "```bash",
        ".venv/bin/sweep data gtsrb GTSRB/Images --test-dir T \\",
        "    --out A --shards 10   # a comment",
        "tensorboard --logdir experiments/x",
        "./run.sh sweep status x",
        "```",
        "",
        "    PGPASSWORD=... sweep run --study-url postgresql+psycopg://u@h/db ...",
        "    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\",
        "        .venv/bin/sweep run --address auto --name n",
        "    sweep dashboard <experiment> [--port 8080]",
    ])
    assert [argv for _, _, argv in commands(sample)] == [
        ["data", "gtsrb", "GTSRB/Images", "--test-dir", "T", "--out", "A", "--shards", "10"],
        ["status", "x"],
        ["run", "--study-url", "postgresql+psycopg://u@h/db", "..."],
        ["run", "--address", "auto", "--name", "n"],
        ["dashboard", "<experiment>", "--port", "8080"],
    ]
    # The README's printed demo output is not taken for commands.
    assert not any(line.startswith("sweep demo-") for *_, line, _ in doc_commands())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    blocks, prose = split_blocks(page.read_text())
    seen: dict[str, int] = {}
    out = set()
    for line in prose.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def headings(page: Path) -> list[str]:
    _, prose = split_blocks(page.read_text())
    return [m.group(1).replace("`", "").strip()
            for m in re.finditer(r"^#{1,6}\s+(.*)$", prose, re.M)]


def test_relative_links_lead_to_files_and_headings_that_exist() -> None:
    broken = []
    for page in PAGES:
        _, prose = split_blocks(page.read_text())
        prose = re.sub(r"`[^`]*`", "", prose)  # code spans hold no links
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.name}: {target}: no such heading in {file.name}")
    assert not broken, broken


def test_the_readme_links_every_docs_page() -> None:
    readme = README.read_text()
    missing = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert not missing, missing


def test_pages_the_code_points_to_exist() -> None:
    """`docs/report.md: Is the win real?` in a message names a page and a heading that exist."""
    this = Path(__file__).resolve()
    files = [*(ROOT / "sweep").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
             *(ROOT / "tests").glob("*.py"), *(ROOT / "search_spaces").glob("*.yaml")]
    refs, broken = 0, []
    for file in files:
        if file.resolve() == this:
            continue
        for page, section in re.findall(r"docs/([a-z0-9-]+\.md)(?:: ([A-Z][^)\"'\n]*))?",
                                        file.read_text()):
            refs += 1
            target = ROOT / "docs" / page
            if not target.exists():
                broken.append(f"{file.name}: docs/{page}: no such page")
            elif section and section.strip() not in headings(target):
                broken.append(f"{file.name}: docs/{page}: no heading {section.strip()!r}")
    assert refs >= 5 and not broken, broken


def test_the_readme_benchmark_table_is_the_one_in_docs() -> None:
    readme = README.read_text().split("## Benchmarks", 1)[1]
    rows = [line for line in readme.splitlines() if line.startswith("|")]
    assert len(rows) >= 5
    bench = (ROOT / "docs" / "benchmarks.md").read_text().splitlines()
    assert [r for r in rows if r not in bench] == []
