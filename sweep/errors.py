"""Errors and the failure policy, decided up front.

- ``ConfigError``: bad input (search space, pipeline.config, data). Fatal before launch; each
  problem names the file, the key, what is wrong and how to fix it.
- ``TrialFailure`` reasons: a trial that fails is recorded with one of these and the sweep
  goes on. ``DIVERGED`` is never retried (the same parameters diverge again); ``KILLED``,
  ``OOM`` and ``CRASHED`` are retried from the last checkpoint up to ``--max-failures``.
- N consecutive failed trials stop the sweep (``TooManyFailures``).
"""

from __future__ import annotations

from dataclasses import dataclass

DIVERGED = "diverged"
KILLED = "killed"
OOM = "out of memory"
CRASHED = "crashed"
RETRYABLE = (KILLED, OOM, CRASHED)
MAX_FIELD = 500  # characters of one part of a Problem


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, in the words a user needs to fix it."""

    file: str
    key: str
    problem: str
    fix: str

    def __post_init__(self) -> None:
        # A message quotes user input; never let one print megabytes (see sweep.inputs.short).
        for name in ("file", "key", "problem", "fix"):
            text = getattr(self, name)
            if len(text) > MAX_FIELD:
                object.__setattr__(self, name, text[: MAX_FIELD - 3] + "...")

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.problem}. Fix: {self.fix}"


class ConfigError(ValueError):
    """Bad input found before launch; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, Problem):
            problems = [problems]
        elif isinstance(problems, str):
            problems = [Problem("", "", problems, "see `sweep --help`")]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TrialFailure(RuntimeError):
    """A trial failed for ``reason`` (one of the reasons above)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE


class TooManyFailures(RuntimeError):
    """The sweep stops: N trials in a row failed, so something is wrong beyond one trial."""
