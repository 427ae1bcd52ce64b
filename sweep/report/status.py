"""`sweep status`: one row per trial, read from the trial folders (works while running)."""

from __future__ import annotations

import time
from typing import Any

from sweep.core.experiment import FAILED, RUNNING, Experiment
from sweep.odapi import metrics
from sweep.search import marks, pbt


def trial_rows(exp: Experiment) -> list[dict[str, Any]]:
    rows = []
    for t in exp.trials():
        st = t.status()
        m = metrics.read_trial(t.path)
        last_eval = m.last_eval()
        elapsed = st.get("elapsed")
        if st.get("state") == RUNNING and st.get("started_at"):
            elapsed = float(st.get("elapsed") or 0) + time.time() - float(st["started_at"])
        rows.append({
            "trial": t.name,
            "state": st.get("state", "PENDING"),
            "step": m.last_train_step if m.last_train_step is not None else 0,
            "of": st.get("num_steps"),
            "total_loss": m.last_train().get(metrics.TOTAL_LOSS),
            "mAP": last_eval.get(metrics.MAP),
            "eval_step": m.last_eval_step,
            "elapsed_s": elapsed,
            # Tries: the trial's starts (attempts) and its restarts after a failure within
            # one (restarts; an actor restart counts in both, hence max, not a sum).
            "attempts": (max(int(st.get("attempts") or 0), 1 + int(st.get("restarts") or 0))
                         if st.get("attempts") else None),
            "gpus": st.get("cuda_visible_devices") or "-",
            "node": st.get("node_ip") or st.get("node") or "-",
            "reason": st.get("reason") or "",
            "parent": pbt.parent(st) or "",
            "seed": st.get("seed"),
            "role": _role(t.params(), st),
        })
    return rows


def _role(params: dict[str, Any], status: dict[str, Any]) -> str:
    """What a trial is for: the base config's search run, a confirmation run, or ""."""
    c = marks.confirm_of(params)
    if c:
        return f"confirm {'base' if c.get('base') else c.get('of')}"
    return "base" if marks.is_base(params) or status.get("base") else ""


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.4g}"
    return str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no trials yet"
    cols = ["trial", "role", "seed", "state", "step", "total_loss", "mAP", "elapsed", "tries",
            "gpus", "node", "reason"]
    lineage = any(r.get("parent") for r in rows)  # PBT: the trial each one continues from
    if lineage:
        cols.insert(1, "cloned from")
    cells = []
    for r in rows:
        step = f"{r['step']}/{r['of']}" if r.get("of") else str(r["step"])
        el = r.get("elapsed_s")
        cells.append([r["trial"], r.get("role") or "", _cell(r.get("seed")), r["state"], step,
                      _cell(r["total_loss"]), _cell(r["mAP"]),
                      "-" if el is None else f"{el / 60:.1f} min", _cell(r["attempts"]), r["gpus"],
                      r["node"],
                      r["reason"]])
        if lineage:
            cells[-1].insert(1, r.get("parent") or "-")
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def render_status(exp: Experiment) -> str:
    s = exp.settings()
    rows = trial_rows(exp)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    confirming = sum(1 for r in rows if r["role"].startswith("confirm"))
    head = (f"experiment {exp.name} ({_phase(s)})"
            f": {len(rows) - confirming}/{s.get('num_trials')} trials"
            + (f" + {confirming} confirmation runs" if confirming else "") + " | "
            + ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items())))
    return head + "\n" + format_table(rows)


def _phase(settings: dict[str, Any]) -> str:
    if settings.get("finished"):
        return "finished"
    if settings.get("interrupted"):
        return f"interrupted by {settings['interrupted']}; `sweep resume` continues it"
    return "running, or its driver was killed"


def failure_summary(exp: Experiment) -> str | None:
    """One line on the failed trials: how many, why, where to look (None when none failed)."""
    failed = [(t, t.status()) for t in exp.trials() if t.status().get("state") == FAILED]
    if not failed:
        return None
    reasons: dict[str, int] = {}
    for _, st in failed:
        reasons[st.get("reason") or "unknown"] = reasons.get(st.get("reason") or "unknown", 0) + 1
    why = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
    first = failed[0][0]
    return (f"{len(failed)} of {len(exp.trials())} trials failed ({why}): `sweep status "
            f"{exp.name}` shows each reason; logs: {first.train_log} and eval.log beside it")
