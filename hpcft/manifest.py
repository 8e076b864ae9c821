"""The run record, `manifest.json`: what was submitted, each stage's job and its last known
state. Typed here once; every writer and reader (submission, sweeps, `status`, `cancel`, the
Python API) goes through `Manifest`, and it is always written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hpcft.config.schema import StageName
from hpcft.errors import UserError
from hpcft.rundir import write_json_atomic
from hpcft.scheduler import StageState, is_job_id

RunStatus = Literal[
    "submitting", "submitted", "running", "completed", "failed", "cancelled", "dry_run", "interrupted", "submit_failed"
]
Executor = Literal["slurm", "local"]


@dataclass(kw_only=True)
class StageRecord:
    job_id: str | None = None
    """Slurm's job id (`123`, `123_4` for an array task), or the local process id."""
    state: StageState = StageState.NOT_SUBMITTED
    """The last state seen: recorded so a run can be read after Slurm has forgotten it."""
    after: list[str] = field(default_factory=list)
    """Its dependencies, `<kind>:<stage>` (`afterok:train`)."""
    logs: dict[str, str] | None = None
    """`{"stdout": path, "stderr": path}` of the job's first task, once submitted."""
    started: float | None = None
    """Local runs: when the stage started (Unix time)."""
    ended: float | None = None
    """Local runs: when it ended."""

    def submitted(self, job_id: str, logs: dict[str, str]) -> None:
        self.job_id, self.state, self.logs = job_id, StageState.SUBMITTED, logs


def _plain(value: Any) -> Any:
    """What `dataclasses.asdict` makes of a record's value: its containers copied, a stage's
    record as a dict, everything else as it is (strings, numbers, enums, None)."""
    if isinstance(value, StageRecord):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass(kw_only=True)
class Manifest:
    run_name: str
    run_dir: str
    executor: Executor
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    status: RunStatus = "submitting"
    stages: dict[str, StageRecord] = field(default_factory=dict)
    """Stage name -> its record, in pipeline order."""
    error: str | None = None
    """Why the submission or the local run failed."""
    sweep: str | None = None
    """The sweep folder, for a sweep's point."""
    overrides: list[str] = field(default_factory=list)
    """A sweep point's overrides."""
    process_group: int | None = None
    """Local runs: the process group of its stages (`hpcft.localgroup`), which `cancel` ends."""

    def stage(self, name: StageName | str) -> StageRecord:
        return self.stages[str(name)]

    def logs_of(self, stage: str) -> dict[str, str] | None:
        """The stage's log paths (None before it was submitted); an error naming the run's
        stages for a stage it does not have."""
        if stage not in self.stages:
            raise UserError(f"stage {stage!r}: this run has stages {', '.join(self.stages)}")
        return self.stages[stage].logs

    def job_ids(self) -> list[str]:
        """The Slurm job ids of the stages submitted (none for a local run)."""
        if self.executor != "slurm":
            return []
        return [s.job_id for s in self.stages.values() if s.job_id]

    def to_json(self) -> dict[str, Any]:
        """`dataclasses.asdict` of the record without its unset fields; made field by field
        (asdict deep-copies every value: a sweep writes two records a point)."""
        data = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {k: v for k, v in data.items() if v is not None or k in ("status",)}

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def from_json(cls, data: Any, path: Path) -> Manifest:
        """The record read from JSON; a one-line error naming the file when it is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict) or "executor" not in data:
            raise UserError(f"{path}: not a run record (no stages/executor)")
        try:
            stages = {name: _stage(record, f"{path}: stages.{name}") for name, record in data["stages"].items()}
            known = {f.name for f in dataclasses.fields(cls)} - {"stages"}
            values = {k: v for k, v in data.items() if k in known}
            values.setdefault("run_name", path.parent.name)
            values.setdefault("run_dir", str(path.parent))
            return cls(stages=stages, **values)
        except (TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{path}: not a run record ({e})") from None


def _stage(record: dict[str, Any], where: str) -> StageRecord:
    """A stage's record; its job id must be one (it is given to squeue, sacct and scancel)."""
    known = {f.name for f in dataclasses.fields(StageRecord)}
    values = {k: v for k, v in record.items() if k in known}
    values["state"] = StageState.of(str(values.get("state") or StageState.NOT_SUBMITTED))
    if values.get("job_id") is not None:
        values["job_id"] = str(values["job_id"])
        if isinstance(record["job_id"], bool) or not is_job_id(values["job_id"]):
            raise UserError(f"{where}.job_id: {record['job_id']!r} is not a job id (a positive integer)")
    return StageRecord(**values)


def read_manifest(run: Path) -> Manifest:
    """A run's `manifest.json`; a one-line error naming the file when it is missing or corrupt
    (its jobs can still be found by name: `status` and `cancel` do)."""
    path = run / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no run record (the submission was interrupted before writing it)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path}: unreadable run record ({type(e).__name__}: {e})") from None
    return Manifest.from_json(data, path)
