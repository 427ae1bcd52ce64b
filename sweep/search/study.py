"""Where a sweep's Optuna study lives: its name, a new one per experiment, so nothing is
appended to an old study (the URL and its password: ``sweep.core.study_url``)."""

from __future__ import annotations

import os
import time

from sweep.core import errors, study_url


def new_study_name(name: str, url: str) -> str:
    """A study name no study in ``url`` has: the experiment name, or with a time stamp when the
    storage already holds a study of that name (an old experiment, left intact). A storage
    whose studies cannot be listed is refused (``ConfigError``) rather than guessed at."""
    import optuna

    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///"):]):
        return name  # a new file (the default, in a new experiment folder): nothing to clash
    try:
        taken = set(optuna.get_all_study_names(storage=url))
    except Exception as e:  # noqa: BLE001 - SQLAlchemy/driver errors vary by database
        # Unlisted, the name may already hold another experiment's trials: taking it would
        # mix them into this sweep's study (and its sampler, report and dashboard).
        words = study_url.scrub(str(e).splitlines()[0][:200] if str(e) else type(e).__name__,
                                url)
        raise errors.ConfigError(errors.Problem(
            "command line", "--study-url",
            f"cannot list the studies in {study_url.masked(url)} to pick a name no other "
            f"experiment uses: {words}",
            "make sure the database answers (is the server up, the URL and driver right?) "
            "and run again")) from e
    if name not in taken:
        return name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = f"{name}-{stamp}", 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{stamp}-{n}"
    return candidate
