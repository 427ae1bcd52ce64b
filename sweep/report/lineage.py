"""A population-based trial's lineage for the report: the chain of trials its weights came
from, the learning rate it trained with along that chain, a one-run schedule that replays it,
and the figure of every trial's metric with each clone drawn as a jump."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweep.search.pbt import fmt_value, segment

END = 10**12  # "to the end" of a stretch


def chain(exp: Any, trial_name: str) -> list[tuple[Any, Path, int, int]]:
    """The lineage of a trial's weights, oldest first: ``(trial, event root, from, to)`` per
    stretch of steps. Before a clone at step S the weights came from the source trial's own
    lineage up to S (its archived segment if it was itself cloned later), back to step 0."""
    out: list[tuple[Any, Path, int, int]] = []
    name: str | None = trial_name
    end, seen = END, set()
    while name is not None and name not in seen:
        seen.add(name)
        trial = exp.trial(name)
        lineage = trial.status().get("lineage") or [segment(0, {}, ())]
        name = None
        for k in reversed(range(len(lineage))):
            start = int(lineage[k].get("from_step", 0))
            if start >= end:
                continue  # this trial's later stretch: not what the clone took
            last = k == len(lineage) - 1
            out.append((trial, trial.path if last else trial.path / "lineage" / f"segment-{k}",
                        start, end))
            src = lineage[k].get("cloned_from")
            if src:  # earlier segments of this trial were replaced by the clone
                name, end = src["trial"], int(src["step"])
                break
            end = start
    return list(reversed(out))


def learning_rate_history(exp: Any, trial_name: str) -> list[tuple[int, float]]:
    """``(step, learning rate)`` as training logged it along the trial's best lineage."""
    from sweep.odapi.metrics import LEARNING_RATE, read_scalars

    out: list[tuple[int, float]] = []
    for _, root, start, end in chain(exp, trial_name):
        rows = {s.step: s.value for s in read_scalars(root / "train", [LEARNING_RATE])}
        out += [(s, v) for s, v in sorted(rows.items()) if start < s <= end]
    return out


MAX_REPLAY_STEPS = 200  # boundaries in the replayed manual schedule


def replay_params(history: list[tuple[int, float]], rel_tol: float = 0.02
                  ) -> dict[str, Any]:
    """A ``manual_step_learning_rate`` that follows ``history`` from step 0 in one run: a new
    boundary where the rate moved by more than ``rel_tol`` (at most MAX_REPLAY_STEPS)."""
    if not history:
        raise ValueError("no learning_rate summaries along this lineage")
    steps: list[list[float]] = []
    current = history[0][1]
    for step, rate in history[1:]:
        if abs(rate - current) > rel_tol * max(abs(current), 1e-12):
            steps.append([int(step), float(rate)])
            current = rate
    if len(steps) > MAX_REPLAY_STEPS:
        keep = len(steps) / MAX_REPLAY_STEPS
        steps = [steps[int(i * keep)] for i in range(MAX_REPLAY_STEPS)]
    return {"learning_rate": "manual_step_learning_rate",
            "manual_step_learning_rate.initial_learning_rate": float(history[0][1]),
            "manual_step_learning_rate.schedule": steps}


def replay_note(exp: Any, trial_name: str) -> str:
    """What else changed between the lineage's segments (the replay keeps the last values)."""
    lines = []
    for trial, _, start, end in chain(exp, trial_name):
        for seg in trial.status().get("lineage") or []:
            if int(seg.get("from_step", 0)) == start:
                values = ", ".join(f"{k} {fmt_value(v)}" for k, v in seg["params"].items())
                lines.append(f"steps {start}-{end if end < END else 'end'}: {trial.name} "
                             f"({values})")
    return "\n".join(lines)


# ------------------------------------------------------------------------- the report's figure

def lineage_figure(exp: Any, best: str | None, out: Path, metric: str) -> Path | None:
    """Every trial's ``metric`` over steps, step-aligned, each clone drawn as a jump from its
    source's point (a dashed line), and below it the learning rate ``best``'s lineage trained
    with. None when no trial was ever cloned."""
    from sweep.odapi.metrics import read_scalars

    trials = [t for t in exp.trials() if len(t.status().get("lineage") or []) > 1]
    if not trials:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, low) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    for i, t in enumerate(exp.trials()):
        color = f"C{i % 10}"
        lineage = t.status().get("lineage") or []
        for k, seg in enumerate(lineage):
            root = t.path if k == len(lineage) - 1 else t.path / "lineage" / f"segment-{k}"
            pts = sorted((s.step, s.value) for s in read_scalars(root / "eval", [metric])
                         if s.step > int(seg.get("from_step", 0)))
            src = seg.get("cloned_from")
            if src:  # the jump: from the source's value at the clone step
                sv = [s.value for s in read_scalars(exp.trial(src["trial"]).path / "eval",
                                                    [metric]) if s.step == int(src["step"])]
                if sv and pts:
                    top.plot([src["step"], pts[0][0]], [sv[-1], pts[0][1]], ls="--", lw=1,
                             color=color)
            if pts:
                top.plot(*zip(*pts, strict=True), marker="o", ms=3, color=color,
                         label=t.name if k == 0 else None)
    top.set_ylabel(metric.rsplit("/", 1)[-1])
    top.set_title("Every trial's metric; dashed: a clone continuing from a better trial")
    top.legend(fontsize=7, ncol=2)
    if best:
        history = learning_rate_history(exp, best)
        if history:
            low.step(*zip(*history, strict=True), where="post", color="k")
            low.set_title(f"Learning rate along {best}'s lineage", fontsize=9)
    low.set_xlabel("step")
    low.set_ylabel("learning rate")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=96, bbox_inches="tight")
    plt.close(fig)
    return out
