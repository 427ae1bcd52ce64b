"""Values made once per key, safely across threads: a thread asking for a key that another is
making waits for that one result instead of making it again (the report's COCOeval matchings
and bootstrap resamples are seconds each)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any


class _Slot:
    def __init__(self) -> None:
        self.lock, self.made, self.value = threading.Lock(), False, None

    def get(self, make: Callable[[], Any]) -> Any:
        with self.lock:
            if not self.made:
                self.value, self.made = make(), True
        return self.value


class OnceMap:
    """``get(key, make)``: ``make()`` the first time ``key`` is asked for, its value after."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[Hashable, _Slot] = {}

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
        return slot.get(make)
