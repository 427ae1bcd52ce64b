"""Where a sweep's Optuna study lives: its name, a new one per experiment, so nothing is
appended to an old study (the URL and its password: ``sweep.core.study_url``)."""

from __future__ import annotations

import os
import time


def new_study_name(name: str, url: str) -> str:
    """A study name no study in ``url`` has: the experiment name, or with a time stamp when the
    storage already holds a study of that name (an old experiment, left intact)."""
    import optuna

    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///"):]):
        return name  # a new file (the default, in a new experiment folder): nothing to clash
    try:
        taken = set(optuna.get_all_study_names(storage=url))
    except Exception:  # noqa: BLE001 - a fresh SQLite file or a server not yet reachable
        taken = set()
    if name not in taken:
        return name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = f"{name}-{stamp}", 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{stamp}-{n}"
    return candidate
