"""The study's Optuna storage as Ray saves it: Ray pickles the searcher (and the tuner holding
it) into the experiment folder, storage URL included; this storage pickles that URL without
its password and takes the password from the environment again when unpickled (sweep.core.study_url).
Imports Optuna at import time: only tune_backend imports this module."""

from __future__ import annotations

from typing import Any

from optuna.storages import RDBStorage

from sweep.core import study_url


class PasswordFreeRDBStorage(RDBStorage):
    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["url"] = study_url.without_password(state["url"])
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__({**state, "url": study_url.with_password(state["url"])})
