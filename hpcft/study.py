"""The record an adaptive sweep's login-side submission and its controller job share:
`controller.json` in the sweep folder, and the objective a trial returns."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hpcft.errors import UserError
from hpcft.results import headline, read_metrics, train_results
from hpcft.rundir import write_json_atomic

Direction = Literal["minimize", "maximize"]
CONTROLLER_RECORD = "controller.json"


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
            return cls(**{**data, "objective": Objective(**data["objective"])})
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise UserError(f"{path}: unreadable controller record ({type(e).__name__}: {e})") from None


def controller_of(sweep_dir: Path) -> ControllerRecord | None:
    """The sweep's controller record, if it is an adaptive sweep's (None for a basic sweep)."""
    if not (sweep_dir / CONTROLLER_RECORD).is_file():
        return None
    return ControllerRecord.read(sweep_dir)


def sweep_points(sweep_dir: Path) -> dict[int, Path]:
    """`hydra.job.num` -> run directory of every point submitted so far."""
    try:
        record = json.loads((sweep_dir / "sweep.json").read_text())
        return {int(p["num"]): Path(p["run_dir"]) for p in record["points"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def stage_metrics(run: Path, stage: str) -> dict[str, Any]:
    """What a stage measured: the fine-tuned model's eval metrics, or the Trainer's results."""
    return headline(read_metrics(run) or {}) if stage == "eval" else train_results(run)


def metric_value(run: Path, objective: Objective) -> float | None:
    value = stage_metrics(run, objective.stage).get(objective.metric)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def study_summary(record: ControllerRecord) -> str:
    """`3 of 6 trials scored; best so far: trial 2, eval.rouge-l=61.2`: for `status`, from the
    points' own results (live, whatever the controller last recorded)."""
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
    return text
