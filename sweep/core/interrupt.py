"""Interrupts of a sweep's driver: Ctrl-C (SIGINT), `ray job stop` or a preempted node (SIGTERM).

The one policy, for `sweep run`, `demo` and `resume`:
- Before Ray Tune runs (pre-flight, Ray's start) either signal is a ``KeyboardInterrupt`` at
  once: what the run created is undone, and the CLI says that nothing was started.
- While Ray Tune runs, the first signal writes ``<experiment>/stopping.json`` and asks Ray
  Tune to stop: no new trial starts, Ray saves its state with the running trials unfinished,
  and each trial's runner, seeing the file, stops its jobs and records INTERRUPTED (its last
  checkpoint is where `sweep resume` continues). A second signal ends the driver at once.
- The exit code is 128 + the signal: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sweep.core.experiment import write_json

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: int | None = None  # the first signal of this driver run


def received() -> int | None:
    """The signal that interrupted this driver, if any."""
    return _received


def name(sig: int | None = None) -> str:
    return signal.Signals(sig or _received or signal.SIGINT).name


def exit_code(sig: int | None = None) -> int:
    """128 + the signal, as a shell reports a process the signal ended."""
    return 128 + int(sig or _received or signal.SIGINT)


def _raise(sig: int, frame: FrameType | None) -> None:
    global _received
    _received = _received or sig
    raise KeyboardInterrupt(name(sig))


def check() -> None:
    """Raise the interrupt now if a signal came and was lost. A ``KeyboardInterrupt`` raised
    while Python runs a finalizer or a weakref callback is printed ("Exception ignored in")
    and dropped: seen when a Ctrl-C landed during Ray's start, in SQLAlchemy's clean-up, and
    the sweep went on as if nothing had happened. Called before Ray Tune takes over."""
    if _received is not None:
        raise KeyboardInterrupt(name())


def install() -> dict[int, Any]:
    """From now on SIGINT and SIGTERM raise ``KeyboardInterrupt`` (SIGTERM's default would end
    the process with no cleanup and no closing line). Returns the previous handlers."""
    global _received
    _received = None
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _raise) for s in SIGNALS}


def restore(previous: dict[int, Any]) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)


def hand_to_ray(marker: Path) -> None:
    """Called inside ``Tuner.fit`` (a Tune callback's ``setup``, after Ray Tune installed its
    SIGINT handler): the first SIGINT or SIGTERM writes ``marker`` and calls Ray Tune's
    handler, which ends the run loop after saving the experiment state with the running trials
    unfinished. Without Ray's handler (TUNE_DISABLE_SIGINT_HANDLER) a signal interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        return
    ray_handler = signal.getsignal(signal.SIGINT)

    def first(sig: int, frame: FrameType | None) -> None:
        global _received
        _received = _received or sig
        write_json(marker, {"kind": "interrupted", "signal": name(sig), "at": time.time(),
                            "pid": os.getpid()})
        os.write(2, (f"\nsweep: {name(sig)} received: no new trial starts; the running ones "
                     "stop at their last checkpoint (a second Ctrl-C stops at once)\n").encode())
        for s in SIGNALS:  # a second signal: at once
            signal.signal(s, _raise)
        if callable(ray_handler) and ray_handler not in (_raise, signal.default_int_handler):
            ray_handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt(name(sig))

    for s in SIGNALS:
        signal.signal(s, first)
    if _received is not None:  # one came between check() and here and was lost: act on it
        first(_received, None)
