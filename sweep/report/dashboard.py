"""``sweep dashboard EXPERIMENT``: optuna-dashboard on the experiment's own study.

The study lives wherever ``sweep run`` put it (``experiments/<name>/study.db``, or the
``--study-url`` database); this serves optuna-dashboard's WSGI app for that storage on
127.0.0.1 only (it can edit studies: not for the network) and prints the study's page.
"""

from __future__ import annotations

import socketserver
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sweep.core.errors import ConfigError, Problem
from sweep.core.experiment import Experiment


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser keeps connections open; Ctrl-C must still end it


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # one line per API poll would bury the URL


def study_storage(exp: Experiment) -> tuple[str, str]:
    """(storage URL, study name) of ``exp``; a clear error when there is no study yet."""
    import optuna

    url = exp.storage_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise ConfigError([Problem(
            str(exp.settings_path), "storage_url",
            f"the study database {url[len('sqlite:///'):]} does not exist yet",
            "start the sweep first (`sweep run` or `sweep resume`); the dashboard reads its study")])
    name = exp.settings().get("study_name")
    if not name:
        names = optuna.get_all_study_names(storage=url)
        if len(names) != 1:
            raise ConfigError([Problem(
                str(exp.settings_path), "study_name",
                f"missing, and {url} holds {len(names)} studies: {names}",
                "add \"study_name\" to experiment.json")])
        name = names[0]
    return url, name


def serve(exp: Experiment, port: int = 8080, *, host: str = "127.0.0.1") -> None:
    """Serve optuna-dashboard for ``exp``'s study until Ctrl-C; port 0 picks a free one."""
    import optuna
    from optuna_dashboard import wsgi

    url, name = study_storage(exp)
    storage = optuna.storages.get_storage(url)
    study_id = storage.get_study_id_from_name(name)
    server = make_server(host, port, wsgi(storage), server_class=_Server,
                         handler_class=_QuietHandler)
    page = f"http://{host}:{server.server_port}/dashboard/studies/{study_id}"
    print(f"optuna-dashboard for {exp.name} (study {name!r} in {url}): {page}", flush=True)
    print("Ctrl-C to stop.", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
