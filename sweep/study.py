"""Where a sweep's Optuna study lives: its storage URL (never with a password on disk or on
screen) and its name (a new one per experiment, so nothing is appended to an old study).

A password reaches the driver from the environment, never from a file: ``SWEEP_STUDY_URL``
(a whole URL, used when ``--study-url`` is not given, and to put the password back into the
stored URL of the same server) or the standard ``PGPASSWORD``, which libpq reads by itself
(``~/.pgpass`` works too).
"""

from __future__ import annotations

import os
import time

ENV_URL = "SWEEP_STUDY_URL"
MASK = "***"


def _parse(url: str):  # noqa: ANN202 - sqlalchemy URL
    from sqlalchemy.engine import make_url

    return make_url(url)


def cli_url(given: str | None) -> str | None:
    """The study URL to use: ``--study-url``, else ``$SWEEP_STUDY_URL``, else None (SQLite)."""
    return given or os.environ.get(ENV_URL) or None


def without_password(url: str) -> str:
    """The URL as stored in experiment.json: the password removed (libpq then reads
    ``PGPASSWORD`` or ``~/.pgpass``; ``with_password`` puts ``$SWEEP_STUDY_URL``'s back)."""
    u = _parse(url)
    # URL is a NamedTuple: _replace is its documented copy (URL.set() ignores None).
    return url if u.password is None else u._replace(password=None).render_as_string(
        hide_password=False)


def masked(url: str) -> str:
    """The URL for people to read: the password shown as ``***``."""
    u = _parse(url)
    return url if u.password is None else u.render_as_string(hide_password=True)


def scrub(text: str, url: str) -> str:
    """``text`` (an error message) with ``url``'s password, if any, replaced by ``***``."""
    password = _parse(url).password
    return text.replace(password, MASK) if password else text


def with_password(url: str) -> str:
    """The stored ``url`` with the password of ``$SWEEP_STUDY_URL`` when that names the same
    server, user and database; otherwise unchanged (libpq's own environment applies)."""
    env = os.environ.get(ENV_URL)
    if not env or url.startswith("sqlite"):
        return url
    try:
        u, e = _parse(url), _parse(env)
    except Exception:  # noqa: BLE001 - a malformed variable is not ours to fix here
        return url
    same = (u.get_backend_name(), u.username, u.host, u.port, u.database) == (
        e.get_backend_name(), e.username, e.host, e.port, e.database)
    if u.password is None and e.password is not None and same:
        return u.set(password=e.password).render_as_string(hide_password=False)
    return url


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
