"""The record an adaptive sweep's login-side submission and its controller job share:
`controller.json` in the sweep folder, and the objective a trial returns."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hpcft.checkpoints import best_of
from hpcft.errors import UserError
from hpcft.results import headline, read_metrics, train_results
from hpcft.rundir import innermost_error, tail, write_json_atomic
from hpcft.scheduler import is_job_id
from hpcft.sweep.record import read_sweep_record

Direction = Literal["minimize", "maximize"]
CONTROLLER_RECORD = "controller.json"
TRIALS_RECORD = "trials.json"
"""The study so far, as the controller last wrote it (`hpcft.sweep.controller.trials_record`)."""


@dataclass(frozen=True, kw_only=True)
class Objective:
    """The metric a trial returns to the sweeper."""

    stage: Literal["train", "eval"]
    metric: str
    """A key of `eval/metrics.json` (the fine-tuned model's) or `train/all_results.json`."""
    direction: Direction

    def __str__(self) -> str:
        return f"{self.stage}.{self.metric}"


@dataclass(kw_only=True)
class ControllerRecord:
    """`controller.json`: everything the controller job needs, and its job once submitted."""

    sweep_dir: str
    overrides: list[str]
    """The multirun's overrides: the user's, with hpcft's defaults and the study's storage."""
    implied_keys: list[str]
    objective: Objective
    n_trials: int
    """Trials in all, over every restart of the controller."""
    n_jobs: int
    """Trials run at once (one batch of job arrays)."""
    storage: str
    study_name: str
    poll_s: float
    """How often the controller looks at its trials' jobs (`sweep.poll_s`)."""
    job_id: str | None = None
    logs: dict[str, str] | None = None

    def write(self) -> None:
        write_json_atomic(Path(self.sweep_dir) / CONTROLLER_RECORD, dataclasses.asdict(self))

    @classmethod
    def read(cls, sweep_dir: Path) -> ControllerRecord:
        path = sweep_dir / CONTROLLER_RECORD
        try:
            data = json.loads(path.read_text())
            record = cls(**{**data, "objective": Objective(**data["objective"])})
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as e:
            raise UserError(f"{path}: unreadable controller record ({type(e).__name__}: {e})") from None
        if record.job_id is not None and not is_job_id(str(record.job_id)):
            raise UserError(f"{path}: job_id: {record.job_id!r} is not a Slurm job id (a positive integer)")
        return record


def controller_of(sweep_dir: Path) -> ControllerRecord | None:
    """The sweep's controller record, if it is an adaptive sweep's (None for a basic sweep)."""
    if not (sweep_dir / CONTROLLER_RECORD).is_file():
        return None
    return ControllerRecord.read(sweep_dir)


def sweep_points(sweep_dir: Path) -> dict[int, Path]:
    """`hydra.job.num` -> run directory of every point submitted so far."""
    try:
        record = read_sweep_record(sweep_dir)
    except UserError:
        return {}
    return {p.num: p.run_dir for p in record.points} if record else {}


def stage_metrics(run: Path, stage: str) -> dict[str, Any]:
    """What a stage measured: the fine-tuned model's eval metrics, or the Trainer's results."""
    return headline(read_metrics(run) or {}) if stage == "eval" else train_results(run)


def metric_value(run: Path, objective: Objective) -> float | None:
    """The trial's value: its best checkpoint's where the eval picked one by this objective
    (`eval.checkpoints`: the weights the trial leaves to use), else the final model's."""
    best = best_of(read_metrics(run) or {}) if objective.stage == "eval" else None
    if best and (best.get("metric"), best.get("direction")) == (objective.metric, objective.direction):
        value = best.get("value")
    else:
        value = stage_metrics(run, objective.stage).get(objective.metric)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_trials(sweep_dir: Path) -> dict[str, Any]:
    """`trials.json` as the controller (or `cancel`) last wrote it; {} before the first batch."""
    try:
        trials = json.loads((sweep_dir / TRIALS_RECORD).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return trials if isinstance(trials, dict) else {}


def record_study_ended(sweep_dir: Path, status: str, error: str | None = None) -> None:
    """Say in `trials.json` that the study ended (`cancelled`, `failed` and why) when it still
    says `running` or is not written yet: a controller that is gone writes nothing more."""
    trials = read_trials(sweep_dir)
    if trials.get("status") not in (None, "running"):
        return
    ended = {**trials, "status": status, **({"error": error} if error else {})}
    write_json_atomic(sweep_dir / TRIALS_RECORD, {"trials": [], **ended})


def controller_cause(record: ControllerRecord) -> str | None:
    """Why the study's controller stopped, in one line: what it (or `cancel`) recorded in
    `trials.json`, else the innermost exception in its log (an interruption is a requeue or
    a cancel, not a cause); None when neither says."""
    trials = read_trials(Path(record.sweep_dir))
    if trials.get("status") == "failed" and trials.get("error"):
        return str(trials["error"])
    if trials.get("status") == "cancelled":
        return "cancelled (python -m hpcft cancel)"
    stderr = (record.logs or {}).get("stderr")
    cause = innermost_error(tail(stderr, 2000)) if stderr else None
    return None if cause is None or cause.startswith("KeyboardInterrupt") else cause


def study_summary(record: ControllerRecord) -> str:
    """`3 of 6 trials scored; best so far: trial 2, eval.rouge-l=61.2`: for `status`, from the
    points' own results (live, whatever the controller last recorded), and why the controller
    stopped if it did."""
    scored = {
        num: value
        for num, run in sweep_points(Path(record.sweep_dir)).items()
        if (value := metric_value(run, record.objective)) is not None
    }
    text = f"{len(scored)} of {record.n_trials} trials scored"
    if scored:
        pick = max if record.objective.direction == "maximize" else min
        best = pick(scored, key=lambda num: scored[num])
        text += f"; best so far: trial {best}, {record.objective}={scored[best]:.4g}"
    if cause := controller_cause(record):
        text += f"; controller stopped: {cause}"
    return text
