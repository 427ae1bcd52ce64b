"""A Ctrl-C whose KeyboardInterrupt Python dropped (raised inside a finalizer: "Exception
ignored in ...") still interrupts the sweep at the next safe point (sweep.core.interrupt)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from sweep.core import interrupt


class _Dropper:
    def __del__(self) -> None:
        # The handler runs in here, so its KeyboardInterrupt is printed and dropped.
        signal.raise_signal(signal.SIGINT)


def test_a_signal_lost_in_a_finalizer_is_raised_by_check() -> None:
    previous = interrupt.install()
    try:
        interrupt.check()  # nothing received: nothing happens
        _Dropper()
        assert interrupt.received() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
    finally:
        interrupt.restore(previous)


def test_a_signal_lost_before_ray_tune_took_over_stops_ray_tune(tmp_path: Path) -> None:
    calls: list[int] = []
    previous = interrupt.install()
    try:
        _Dropper()
        signal.signal(signal.SIGINT, lambda sig, frame: calls.append(sig))  # as Ray Tune's
        interrupt.hand_to_ray(tmp_path / "stopping.json")
        assert calls == [signal.SIGINT]  # Ray Tune was asked to stop at once
        assert '"signal": "SIGINT"' in (tmp_path / "stopping.json").read_text()
    finally:
        interrupt.restore(previous)
