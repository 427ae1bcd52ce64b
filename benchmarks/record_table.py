"""Record a table of real learning curves for a space and pipeline, and extract it compactly
(issue 24): what ``benchmarks/search_replay.py`` replays the sweep's sampler and scheduler on.

    # once per repeat k = 0..R-1: `sweep run ... --sampler random --scheduler fifo --seed k`
    # as experiment <name>-r<k> (resumed with `sweep resume` when it exists unfinished)
    .venv/bin/python benchmarks/record_table.py record --space benchmarks/data/demo_tiny_table.yaml \
        --pipeline PIPELINE --name table --repeats 2 [--eval-every 50] [--storage DIR]

    # the finished (or partial) experiments -> <out>.csv.gz + <out>.json
    .venv/bin/python benchmarks/record_table.py extract --name table --storage DIR \
        [--out benchmarks/data/demo_tiny_table] [--add EARLIER_TABLE]

``--add`` keeps an earlier extraction's repeats whose experiment folders are gone (a table
recorded a repeat at a time, on machines that do not keep their disks).

``record``: a space with ``points:`` runs each point once per repeat (the random sampler runs
the known points first, and ``--num-trials`` is their number); a space without points but
all discrete runs its grid (``--sampler grid``). FIFO, so every cell trains to the end.

``extract`` reads the trial folders through the project's own modules (the layout from
``sweep.core.experiment``, event files through ``sweep.odapi.metrics``, the reported value
rule from ``sweep.run.best``) and writes one row per (config, seed, evaluated step):
``config`` (a stable id of the trial's params), ``seed`` (the repeat), ``step``, ``mAP``,
``mAP_50``, ``AR_100``, ``total_loss`` (as the trial reported it to the scheduler) and
``seconds`` (wall seconds from the trial's start until that evaluation was written). Only
trials that trained to the end (COMPLETED) are rows; the sidecar JSON lists the others, each
config id's params, and how the table was made.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# This checkout's sweep package, not an installed one: the replay is of this code.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _bench import REPO, machine, sweep_env  # noqa: E402

from sweep.core.experiment import COMPLETED, Experiment  # noqa: E402
from sweep.odapi import metrics as m  # noqa: E402
from sweep.run import best  # noqa: E402
from sweep.search.marks import public  # noqa: E402

COLUMNS = ("config", "seed", "step", "mAP", "mAP_50", "AR_100", "total_loss", "seconds")
# Table column -> the OD API tag it is read from.
TAGS = {"mAP": m.MAP, "mAP_50": m.MAP50, "AR_100": m.AR100, "total_loss": m.TOTAL_LOSS}
DATA = REPO / "benchmarks" / "data"


def config_id(params: dict[str, Any]) -> str:
    """A stable id of a trial's config: its params (constants and derived included), without
    the markers (its seed, base and confirmation marks: sweep.search.marks.public)."""
    params = public(params)
    text = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def repeat_name(name: str, k: int) -> str:
    return f"{name}-r{k}"


# ------------------------------------------------------------------------------------ record


def record_args(space: Path, pipeline: Path, *, name: str, k: int, storage: Path,
                eval_every: int, max_concurrent: int = 2) -> list[str]:
    """The `sweep run` arguments of repeat ``k``: every point (or grid cell) once, FIFO."""
    from sweep.search.space import load_space

    sp = load_space(space)
    if sp.points:
        sampler, n = "random", len(sp.points)  # the known points run first, then we stop
    else:
        grid, continuous = sp.grid()
        if continuous:
            raise SystemExit(f"{space}: a table needs a discrete space: give it `points:` or "
                             f"make these discrete: {', '.join(continuous)}")
        sampler, n = "grid", _grid_size(sp)
    return ["--space", str(space), "--pipeline", str(pipeline), "--name", repeat_name(name, k),
            "--storage", str(storage), "--sampler", sampler, "--scheduler", "fifo",
            "--eval-every", str(eval_every), "--num-trials", str(n),
            "--max-concurrent", str(max_concurrent), "--seed", str(k), "--no-dashboard",
            "--no-report"]  # a table's repeats need no report each (`sweep report` makes one)


def _grid_size(space: Any) -> int:
    grid, _ = space.grid()
    return math.prod(len(v) for v in grid.values())


def record(a: argparse.Namespace) -> int:
    for k in range(a.repeats):
        exp = Experiment((a.storage / repeat_name(a.name, k)).resolve())
        if exp.exists() and exp.settings().get("finished"):
            print(f"{exp.name}: finished, kept", flush=True)
            continue
        if exp.exists():
            from sweep.run.tune_backend import resumable

            if not resumable(exp.root):
                print(f"{exp.root}: an unfinished experiment that Ray saved no state of, so "
                      "it cannot be resumed; look at it, then remove it (or move it away) and "
                      "run record again", file=sys.stderr)
                return 2
            cmd = ["resume", exp.name, "--storage", str(a.storage), "--no-report"]
        else:
            cmd = ["run", *record_args(a.space, a.pipeline, name=a.name, k=k, storage=a.storage,
                                       eval_every=a.eval_every, max_concurrent=a.max_concurrent)]
        print(f"{exp.name}: sweep {' '.join(cmd)}", flush=True)
        code = subprocess.run([sys.executable, "-m", "sweep.cli", *cmd], env=sweep_env(a.fake),
                              check=False).returncode
        if code != 0:
            print(f"{exp.name}: sweep exited {code}; run record again to resume it",
                  file=sys.stderr)
            return code
    return 0


# ----------------------------------------------------------------------------------- extract


@dataclass
class Extracted:
    rows: list[dict[str, Any]] = field(default_factory=list)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    left_out: list[dict[str, Any]] = field(default_factory=list)  # trials not COMPLETED
    repeats: dict[str, dict[str, Any]] = field(default_factory=dict)  # per experiment
    missing: list[str] = field(default_factory=list)  # the space's cells with no curve
    base_pipeline: str = ""  # the pipeline.config text the cells were rendered from


def trial_rows(trial: Any, cid: str, seed: int) -> list[dict[str, Any]]:
    """One row per evaluation (step > 0) of a trial folder."""
    tm = m.read_trial(trial.path)
    walls: dict[int, float] = {}
    for s in m.read_scalars(trial.path / "eval", [m.MAP]):
        walls.setdefault(s.step, s.wall_time)  # when the evaluation was written
    seconds = eval_seconds(trial.status(), walls,
                           fallback_start=tm.train_wall[0] if tm.train_wall else None)
    rows = []
    for step in sorted(tm.eval):
        if step <= 0:
            continue
        row: dict[str, Any] = {"config": cid, "seed": seed, "step": step}
        for col, tag in TAGS.items():
            v = best.reported(tm, tag, step)  # what the trial reported for that evaluation
            row[col] = None if v is None else round(float(v), 6)
        row["seconds"] = seconds.get(step)
        rows.append(row)
    return rows


def eval_seconds(status: dict[str, Any], walls: dict[int, float], *,
                 fallback_start: float | None = None) -> dict[int, float]:
    """Seconds of the trial's own running time until each evaluation was written (step ->
    s). A trial that was interrupted and resumed (``record`` run again) ran in attempts: the
    wall clock between them is not the trial's, so an evaluation of the last attempt counts
    from that attempt's start plus the time the earlier attempts ran (status ``elapsed`` is
    the running time of all attempts); an earlier one from the trial's creation."""
    started = status.get("started_at")
    started = fallback_start if started is None else started
    if started is None:
        return {}
    started = float(started)
    attempts = int(status.get("attempts") or 1)
    ended, elapsed = status.get("ended_at"), status.get("elapsed")
    earlier = (float(elapsed) - (float(ended) - started)
               if attempts > 1 and ended is not None and elapsed is not None else None)
    created = status.get("created_at")
    created = started if created is None else float(created)
    out = {}
    for step, wall in walls.items():
        if earlier is not None and wall >= started:
            out[step] = round(max(earlier, 0.0) + wall - started, 2)
        elif earlier is not None:
            out[step] = round(wall - created, 2)
        else:
            out[step] = round(wall - started, 2)
    return out


def extract_experiments(experiments: list[tuple[int, Experiment]]) -> Extracted:
    """The table of ``[(repeat index, experiment)]``: completed trials' curves."""
    out = Extracted()
    for seed, exp in experiments:
        settings = exp.settings()
        done = 0
        seen: dict[str, Any] = {}
        for trial in exp.trials():  # creation order: a later run of the same cell wins
            params = trial.params()
            if not params:
                continue
            cid = config_id(params)
            state = trial.status().get("state")
            if state != COMPLETED:
                out.left_out.append({"experiment": exp.name, "trial": trial.name, "config": cid,
                                     "state": state, "reason": trial.status().get("reason")})
                continue
            out.configs[cid] = public(params)
            seen[cid] = trial
        for cid, trial in seen.items():
            rows = trial_rows(trial, cid, seed)
            if rows:
                done += 1
                out.rows.extend(rows)
        out.repeats[exp.name] = {
            "seed": seed, "completed_cells": done, "num_trials": settings.get("num_trials"),
            "finished": bool(settings.get("finished")), "wall_time_s": settings.get("wall_time_s"),
            "sampler": settings.get("sampler"), "scheduler": settings.get("scheduler"),
            "eval_every": settings.get("eval_every"), "sweep_seed": settings.get("seed"),
            "space": settings.get("space_source"), "pipeline": settings.get("pipeline")}
        if not out.base_pipeline and exp.base_pipeline.exists():
            out.base_pipeline = exp.base_pipeline.read_text()
        for cid in space_cells(exp):
            if cid not in out.configs and cid not in out.missing:
                out.missing.append(cid)
    out.missing = [c for c in out.missing if c not in out.configs]
    return out


def space_cells(exp: Experiment) -> list[str]:
    """Config ids of the cells the experiment's space names (its ``points:``), as a trial's
    params.json would hold them: to say which cells a partial table lacks."""
    from sweep.search.space import BasePoint, load_space, replay

    try:
        space = load_space(exp.space_path)
    except Exception:  # noqa: BLE001 - a space this version cannot read: no list, no harm
        return []
    return [config_id(replay(space, p)) for p in space.points if not isinstance(p, BasePoint)]


def find_repeats(storage: Path, name: str) -> list[tuple[int, Experiment]]:
    out = []
    for path in sorted(storage.glob(f"{name}-r*")):
        hit = re.fullmatch(re.escape(name) + r"-r(\d+)", path.name)
        if hit and (path / "experiment.json").exists():
            out.append((int(hit.group(1)), Experiment(path.resolve())))
    return sorted(out, key=lambda ke: ke[0])


def write_table(ex: Extracted, out: Path, *, command: str, note: str = "") -> tuple[Path, Path]:
    """``<out>.csv.gz`` (the rows) and ``<out>.json`` (configs, provenance)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path, side = out.with_name(out.name + ".csv.gz"), out.with_name(out.name + ".json")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in sorted(ex.rows, key=lambda r: (r["config"], r["seed"], r["step"])):
        w.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    with gzip.GzipFile(csv_path, "wb", mtime=0) as f:  # mtime 0: same table, same bytes
        f.write(buf.getvalue().encode())
    cells = {(r["config"], r["seed"]) for r in ex.rows}
    side.write_text(json.dumps({
        "columns": list(COLUMNS), "configs": ex.configs, "repeats": ex.repeats,
        "left_out": ex.left_out, "cells_x_seeds": len(cells), "missing": ex.missing,
        "base_pipeline": ex.base_pipeline,
        "made": {**machine(), "command": command, "note": note,
                 "extracted_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())},
    }, indent=1, sort_keys=True, default=str) + "\n")
    return csv_path, side


def read_table(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows (typed as extract makes them) and sidecar of an extracted table."""
    csv_path, side = out.with_name(out.name + ".csv.gz"), out.with_name(out.name + ".json")
    for path in (csv_path, side):
        if not path.exists():
            raise SystemExit(f"--add {out}: {path} does not exist; give the table's path "
                             "without its suffix (as extract's --out)")
    rows = []
    text = gzip.decompress(csv_path.read_bytes()).decode()
    for r in csv.DictReader(io.StringIO(text)):
        row: dict[str, Any] = {"config": r["config"], "seed": int(r["seed"]),
                               "step": int(r["step"])}
        for col in COLUMNS[3:]:
            row[col] = None if r[col] == "" else float(r[col])
        rows.append(row)
    return rows, json.loads(side.read_text())


def _without_paths(pipeline: str) -> str:
    # The same base config rendered in another workspace differs only in its quoted paths'
    # folders: keep each file's name.
    return re.sub(r'"/[^"]*/([^"/]+)"', r'"\1"', pipeline)


def add_earlier(ex: Extracted, earlier: Path) -> Extracted:
    """Keep the repeats of an earlier extraction that ``ex`` lacks (their experiment folders
    are gone: another machine, a cleaned disk), so a table can grow a repeat at a time. The
    earlier table must come from the same base config; its configs keep their ids."""
    rows, meta = read_table(earlier)
    if ex.base_pipeline and meta.get("base_pipeline") and (
            _without_paths(ex.base_pipeline) != _without_paths(meta["base_pipeline"])):
        raise SystemExit(f"--add {earlier}: its base pipeline.config differs from these "
                         "experiments' (beyond file paths): a table holds one base config's "
                         "curves; record the repeats again from the same pipeline")
    have = {r["seed"] for r in ex.repeats.values()}
    kept = {name: r for name, r in meta.get("repeats", {}).items()
            if r.get("seed") not in have and name not in ex.repeats}
    seeds = {r["seed"] for r in kept.values()}
    ex.rows.extend(r for r in rows if r["seed"] in seeds)
    ex.repeats.update(kept)
    ex.left_out.extend(lo for lo in meta.get("left_out", []) if lo.get("experiment") in kept)
    for cid, params in meta.get("configs", {}).items():
        if any(r["config"] == cid and r["seed"] in seeds for r in rows):
            ex.configs.setdefault(cid, params)
    ex.base_pipeline = ex.base_pipeline or meta.get("base_pipeline", "")
    ex.missing = [c for c in ex.missing if c not in ex.configs]
    return ex


def extract(a: argparse.Namespace) -> int:
    experiments = find_repeats(a.storage, a.name)
    if not experiments:
        print(f"no experiments {a.name}-r<k> under {a.storage}", file=sys.stderr)
        return 2
    ex = extract_experiments(experiments)
    for earlier in a.add or []:
        ex = add_earlier(ex, earlier)
    out = a.out or DATA / a.name
    csv_path, side = write_table(ex, out, command=" ".join(sys.argv), note=a.note)
    cells = {(r["config"], r["seed"]) for r in ex.rows}
    print(f"wrote {csv_path} ({len(ex.rows)} rows: {len({c for c, _ in cells})} configs, "
          f"{len(cells)} config x seed curves; {len(ex.left_out)} trial(s) left out, not "
          f"COMPLETED; {len(ex.missing)} of the space's cells have no curve yet) and {side.name}")
    for name, r in ex.repeats.items():
        print(f"  {name}: {r['completed_cells']}/{r['num_trials']} cells, "
              f"{'finished' if r['finished'] else 'NOT finished'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="run (or resume) one FIFO sweep per repeat")
    r.add_argument("--space", type=Path, required=True)
    r.add_argument("--pipeline", type=Path, required=True)
    r.add_argument("--name", default="table", help="experiments <name>-r<k> [%(default)s]")
    r.add_argument("--repeats", type=int, default=2, help="[%(default)s]")
    r.add_argument("--eval-every", type=int, default=50, help="[%(default)s]")
    r.add_argument("--max-concurrent", type=int, default=2, help="[%(default)s]")
    r.add_argument("--storage", type=Path, default=Path("experiments"), help="[%(default)s]")
    r.add_argument("--fake", action="store_true",
                   help="the stand-in worker (tests/fake_worker.py): to test this script only")
    e = sub.add_parser("extract", help="the experiments' curves -> <out>.csv.gz + <out>.json")
    e.add_argument("--name", default="table", help="[%(default)s]")
    e.add_argument("--storage", type=Path, default=Path("experiments"), help="[%(default)s]")
    e.add_argument("--out", type=Path, default=None,
                   help="path without suffix [benchmarks/data/<name>]")
    e.add_argument("--note", default="", help="how the table was made, in words")
    e.add_argument("--add", type=Path, action="append", metavar="TABLE",
                   help="an earlier extracted table (path without suffix): its repeats that "
                   "these experiments lack are kept (a repeat whose folders are gone)")
    a = p.parse_args(argv)
    return record(a) if a.cmd == "record" else extract(a)


if __name__ == "__main__":
    sys.exit(main())
