"""A study's storage URL, never with a password on disk or on screen.

A password reaches the driver from the environment, never from a file: ``SWEEP_STUDY_URL``
(a whole URL, used when ``--study-url`` is not given, and to put the password back into the
stored URL of the same server) or the standard ``PGPASSWORD``, which libpq reads by itself
(``~/.pgpass`` works too). Low in the house: the experiment's layout and settings read it.
"""

from __future__ import annotations

import os

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
