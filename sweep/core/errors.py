"""Errors and the failure policy, decided up front.

- ``ConfigError``: bad input (search space, pipeline.config, data). Fatal before launch; each
  problem names the file, the key, what is wrong and how to fix it.
- Trial failure reasons: a trial that fails is recorded with one of these (status.json, the
  Optuna study, ``sweep status``, the report) and the sweep goes on.
  ``DIVERGED`` and ``SETUP`` are never retried (the same parameters fail the same way);
  ``KILLED``, ``OOM``, ``CRASHED``, ``STALLED`` and ``ACTOR_DIED`` are retried from the last
  checkpoint, all of them out of one budget of ``--max-failures`` restarts per trial.
- No wall clock ends a healthy trial: only a job that shows no progress for
  ``--stall-minutes`` is ``STALLED``: a training job with no new summary or checkpoint, or an
  eval job with a checkpoint waiting that records no evaluation and logs nothing (also while
  the train job waits at the gate for it, and after training ended).
- N consecutive failed trials stop the sweep.
- ``sweep run`` exits with one of the ``EXIT_*`` codes below. An error that ends a command
  is bad input (``EXIT_BAD_INPUT``, nothing was launched) only until the command launches
  trials (``mark_launched``); after that it is ``EXIT_ERROR_AFTER_LAUNCH``: the experiment is
  on disk, fix the cause and ``sweep report`` or ``sweep resume`` it.
"""

from __future__ import annotations

from dataclasses import dataclass

DIVERGED = "diverged"
KILLED = "killed"
OOM = "out of memory"
CRASHED = "crashed"
STALLED = "stalled"  # a train or eval job made no progress for --stall-minutes
ACTOR_DIED = "actor died"  # the Ray actor (or its node) that ran the trial was lost
SETUP = "setup failed"  # the trial could not be prepared (e.g. its config does not render)
RETRYABLE = (KILLED, OOM, CRASHED, STALLED, ACTOR_DIED)
MAX_FIELD = 500  # characters of one part of a Problem

# Exit codes of `sweep run` / `sweep demo` / `sweep resume` (docs/troubleshooting.md: Exit codes).
EXIT_OK = 0  # every trial completed or was stopped early by the scheduler
EXIT_TRIALS_FAILED = 1  # the sweep ran to its end, but some trials failed
EXIT_BAD_INPUT = 2  # nothing was launched: fix the input named in the message
EXIT_FAILURE_STREAK = 3  # --max-consecutive-failures trials failed in a row: the sweep stopped
EXIT_ERROR_AFTER_LAUNCH = 4  # trials ran, then an error ended the command (e.g. the report)

_launched = False  # this process's command has launched trials (one command per process)


def reset_launched() -> None:
    """A command starts: nothing it does has been launched yet."""
    global _launched
    _launched = False


def mark_launched() -> None:
    """The command is about to run trials: from here on an error is not bad input."""
    global _launched
    _launched = True


def launched() -> bool:
    return _launched


def error_exit_code() -> int:
    """The exit code of a command ended by an error: bad input before launch, else 4."""
    return EXIT_ERROR_AFTER_LAUNCH if _launched else EXIT_BAD_INPUT


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, in the words a user needs to fix it."""

    file: str
    key: str
    problem: str
    fix: str

    def __post_init__(self) -> None:
        # A message quotes user input; never let one print megabytes (see sweep.core.inputs.short).
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
