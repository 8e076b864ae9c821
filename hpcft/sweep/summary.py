"""A sweep in one line, for `status` and `cancel`: its points by state, the best so far, and
what a cancel stopped (a 256-point sweep is 768 jobs: one line each says nothing at a glance).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from hpcft.runstate import RunState
from hpcft.scheduler import JobInfo, StageState
from hpcft.study import Objective, controller_of, metric_value, stage_metrics, study_summary
from hpcft.sweep.results import sweep_runs

POINT_STATES = ("running", "pending", "completed", "failed", "cancelled", "unknown")
"""A point's state, in the order the summary counts them."""
_RUNNING = {StageState.RUNNING, StageState.CONFIGURING, StageState.COMPLETING, StageState.STAGE_OUT}
EVAL_OBJECTIVES = ("rouge-l", "ndcg@10", "mrr@10", "recall@1")
"""A basic sweep's objective (it names none): the first of these its points were scored on."""


def point_state(states: Iterable[StageState]) -> str:
    """One word for a point's pipeline: any stage failed, cancelled, running; all completed;
    any still queued (`pending`); else `unknown` (Slurm forgot, or nothing was submitted)."""
    seen = list(states)
    if any(s.failed for s in seen):
        return "failed"
    if StageState.CANCELLED in seen:
        return "cancelled"
    if any(s in _RUNNING for s in seen):
        return "running"
    if seen and all(s is StageState.COMPLETED for s in seen):
        return "completed"
    return "pending" if any(s.active for s in seen) else "unknown"


def basic_objective(runs: Sequence[Path]) -> Objective | None:
    """What a basic sweep is judged by: the first eval metric of `EVAL_OBJECTIVES` a point
    has, else the training loss of a sweep without eval; None before any result."""
    for run in runs:
        scored = stage_metrics(run, "eval")
        if metric := next((m for m in EVAL_OBJECTIVES if m in scored), None):
            return Objective(stage="eval", metric=metric, direction="maximize")
    if any("train_loss" in stage_metrics(run, "train") for run in runs):
        return Objective(stage="train", metric="train_loss", direction="minimize")
    return None


def best_point(runs: Sequence[Path], objective: Objective) -> str | None:
    """`lr0.001_3 eval.rouge-l=61.2`: the point best by the objective so far; None before any."""
    scored = {run: value for run in runs if (value := metric_value(run, objective)) is not None}
    if not scored:
        return None
    pick = max if objective.direction == "maximize" else min
    best = pick(scored, key=lambda run: scored[run])
    return f"{best.name} {objective}={scored[best]:.4g}"


def sweep_summary(sweep: Path, states: Sequence[RunState]) -> str:
    """`my-sweep: 256 points: 12 running, 200 pending, 44 completed; best so far: lr0.001_3
    eval.rouge-l=61.2`; an Optuna study adds its trials and controller (hpcft.study)."""
    runs = sweep_runs(sweep)
    members = set(runs)
    counts = Counter(point_state(i.state for i in s.stages.values()) for s in states if s.run in members)
    by_state = ", ".join(f"{counts[name]} {name}" for name in POINT_STATES if counts[name])
    text = f"{sweep.name}: {len(runs)} point{'s' if len(runs) != 1 else ''}" + (f": {by_state}" if by_state else "")
    if (record := controller_of(sweep)) is not None:
        return f"{text}; {study_summary(record)}"
    objective = basic_objective(runs)
    best = best_point(runs, objective) if objective else None
    return f"{text}; best so far: {best}" if best else text


def cancel_summary(sweep: Path, cancelled: Sequence[tuple[RunState, str, JobInfo]]) -> str | None:
    """`cancelled my-sweep: 9 jobs of 3 points (train 3, deploy 3, eval 3)`; None when none
    of the sweep's jobs was cancelled. A job several points share (one deploy serving a
    group) counts once."""
    members = set(sweep_runs(sweep))
    mine = [(state.run, stage, job.job_id) for state, stage, job in cancelled if state.run in members]
    if not mine:
        return None
    per_stage: dict[str, set[str]] = {}
    for _, stage, job_id in mine:
        per_stage.setdefault(stage, set()).add(job_id)
    stages = ", ".join(f"{name} {len(ids)}" for name, ids in per_stage.items())
    jobs, points = len({job_id for _, _, job_id in mine}), len({run for run, _, _ in mine})
    return f"cancelled {sweep.name}: {jobs} jobs of {points} point{'s' if points != 1 else ''} ({stages})"
