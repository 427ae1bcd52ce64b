"""What the issue-12 benchmarks share: the demo workspace, `sweep run` as a user runs it, the
machine/load header, and the results files (raw JSON + Markdown in ``benchmarks/results/``).

Not a test helper: every number here comes from a real run (or, with ``--fake``, from the
stand-in worker ``tests/fake_worker.py``, to test the scripts themselves in seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DEMO_SPACE = REPO / "search_spaces" / "demo_tiny.yaml"
# Experiments of the benchmarks' sweeps (large: checkpoints); kept out of git, reused by name.
WORK = REPO / "benchmarks" / "work"
FAKE_ENV = {"SWEEP_WORKER_MODULE": "tests.fake_worker", "FAKE_MODE": "ok"}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def machine() -> dict[str, Any]:
    """Where a number was measured: compare ratios of one run, not seconds across machines."""
    return {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def header(title: str, data: dict[str, Any]) -> list[str]:
    """The Markdown head every result file starts with: machine, date, load before/after."""
    m = data["machine"]
    return [f"# {title}", "",
            f"- date (UTC): {m['date_utc']}; machine: {m['host']}, {m['cpus']} CPUs, "
            f"{m['platform']}, Python {m['python']}",
            f"- load before: `{data.get('uptime_before', '-')}`",
            f"- load after:  `{data.get('uptime_after', '-')}`",
            f"- command: `{data.get('command', '-')}`", ""] + (
        ["**--fake: stand-in worker; these numbers test the script and mean nothing.**", ""]
        if data.get("fake") else [])


def write_results(name: str, data: dict[str, Any], markdown: list[str],
                  out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """``<out_dir>/<name>.json`` (every raw number) and ``<name>.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{name}.json", out_dir / f"{name}.md"
    js.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    md.write_text("\n".join(markdown).rstrip() + "\n")
    print(f"wrote {md} and {js.name}", flush=True)
    return js, md


def out_dir(a: Any) -> Path:
    """``--out``, else ``results/`` (``results/fake/`` for a --fake run: never mixed with real)."""
    return a.out or (RESULTS / "fake" if getattr(a, "fake", False) else RESULTS)


def start_record(argv: list[str] | None = None) -> dict[str, Any]:
    return {"machine": machine(), "uptime_before": uptime(),
            "command": " ".join(argv if argv is not None else sys.argv)}


def demo_fingerprint(space: Path) -> str:
    """A short hash of what the demo task is made of (the space, the data generator, the
    workspace writer and the config templates), so a reused sweep or workspace is never one
    of an older demo."""
    h = hashlib.sha1()
    pkg = REPO / "sweep"
    for path in [space, pkg / "data" / "dataset.py", pkg / "odapi" / "workspace.py",
                 *sorted((pkg / "odapi" / "templates").glob("*.config"))]:
        h.update(path.read_bytes())
    return h.hexdigest()[:8]


def demo_pipeline(root: Path, *, fake: bool = False) -> Path:
    """The workspace `sweep demo` writes (its data generator and base config), under ``root``;
    returns its pipeline.config. The stand-in worker needs only a few records."""
    from sweep.data.dataset import make_dataset
    from sweep.odapi.workspace import init_workspace

    ws = root / "training_demo"
    for existing in sorted(ws.glob("models/*/pipeline.config")):
        return existing  # made by an earlier run: the same demo, reused
    kw = {"n_train": 8, "n_eval": 4} if fake else {}
    info = make_dataset(ws / "annotations", images_dir=ws / "images", **kw)
    return init_workspace(ws, dataset=info)


def sweep_env(fake: bool) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    for k in FAKE_ENV:
        env.pop(k, None)
    return {**env, **FAKE_ENV} if fake else env


def run_sweep_cli(args: list[str], *, cwd: Path, fake: bool, log: Path) -> tuple[int, float]:
    """``sweep run ARGS`` in a fresh process, as a user runs it; returns (exit code, wall s).
    Its output goes to ``log`` (and a progress line per finished trial to stdout)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "sweep.cli", "run", *args], cwd=cwd,
                                env=sweep_env(fake), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            f.flush()  # the log is where to look while a long sweep runs
            if line.startswith("[sweep") and ("finished" in line or "FAILED" in line):
                print(f"    {line.rstrip()[:150]}", flush=True)
        code = proc.wait()
    return code, time.time() - t0


def fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)
