"""`sweep.json`, the record that links a sweep's points and arrays: read and written here only.

The submitter writes it before the first `sbatch` (status `submitting`) and after each array,
a sweep in several batches (`hydra.sweeper.max_batch_size`, a study's controller) appends to
it, and `status`, `report`, `logs`, `cancel` and the controller read it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hpcft.errors import UserError
from hpcft.rundir import write_json_atomic

SWEEP_RECORD = "sweep.json"
"""The record's file name in the sweep folder."""


@dataclass(frozen=True, kw_only=True)
class PointRecord:
    """One point of the sweep."""

    num: int
    """Hydra's `hydra.job.num`: the point's index in the whole sweep."""
    overrides: tuple[str, ...] = ()
    """The point's overrides, without Hydra's own."""
    run_dir: Path
    """The point's run directory (`${hydra.sweep.dir}/${hydra.sweep.subdir}`)."""


@dataclass(frozen=True, kw_only=True)
class ArrayRecord:
    """One `sbatch` of the sweep: a job array, or one job serving a group's points."""

    stage: str
    """The pipeline stage the array runs."""
    job_id: str
    """Slurm's id of the array (its tasks are `<job_id>_<i>`)."""
    tasks: int
    """How many tasks (1 for a shared deploy job)."""
    points: tuple[int, ...]
    """The `num` of the point each task runs, in task order."""


@dataclass(frozen=True, kw_only=True)
class SweepRecord:
    """Every point and array of a sweep, over all of its batches."""

    sweep_dir: str
    """The sweep folder, as the submitter saw it."""
    created: str = ""
    """When the first batch was recorded (ISO 8601, local time)."""
    status: str = "submitting"
    """`submitting`, `submitted`, `cancelled`, `running` or `completed` (a local sweep)."""
    batches: int = 0
    """How many batches the sweeper launched into this sweep so far."""
    points: tuple[PointRecord, ...] = ()
    """Every point recorded, in sweep order."""
    arrays: tuple[ArrayRecord, ...] = ()
    """Every `sbatch` of the sweep, in submission order."""

    def with_batch(self, points: Iterable[PointRecord], arrays: Iterable[ArrayRecord], status: str) -> SweepRecord:
        """This record (the earlier batches') with one more batch's points and arrays."""
        return replace(
            self,
            created=self.created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            status=status,
            batches=self.batches + 1,
            points=(*self.points, *points),
            arrays=(*self.arrays, *arrays),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "sweep_dir": self.sweep_dir,
            "created": self.created,
            "status": self.status,
            "batches": self.batches,
            "points": [{"num": p.num, "overrides": list(p.overrides), "run_dir": str(p.run_dir)} for p in self.points],
            "arrays": [{**a.__dict__, "points": list(a.points)} for a in self.arrays],
            "sbatch_calls": len(self.arrays),
        }

    def write(self, sweep_dir: Path) -> None:
        write_json_atomic(sweep_dir / SWEEP_RECORD, self.as_json())


def _point(raw: Mapping[str, Any], index: int) -> PointRecord:
    return PointRecord(
        num=int(raw.get("num", index)), overrides=tuple(raw.get("overrides", ())), run_dir=Path(raw["run_dir"])
    )


def _array(raw: Mapping[str, Any]) -> ArrayRecord:
    return ArrayRecord(
        stage=str(raw["stage"]), job_id=str(raw["job_id"]), tasks=int(raw["tasks"]), points=tuple(raw["points"])
    )


def parse_sweep_record(raw: Mapping[str, Any], sweep_dir: Path) -> SweepRecord:
    """A record from its JSON; fields an older or hand-written record lacks take their defaults."""
    return SweepRecord(
        sweep_dir=str(raw.get("sweep_dir", sweep_dir)),
        created=str(raw.get("created", "")),
        status=str(raw.get("status", "submitted")),
        batches=int(raw.get("batches", 1 if raw.get("points") else 0)),
        points=tuple(_point(p, i) for i, p in enumerate(raw.get("points", ()))),
        arrays=tuple(_array(a) for a in raw.get("arrays", ())),
    )


def read_sweep_record(sweep_dir: Path) -> SweepRecord | None:
    """The sweep's record; None where there is none (a submission cut off before it was written)."""
    path = sweep_dir / SWEEP_RECORD
    if not path.is_file():
        return None
    try:
        return parse_sweep_record(json.loads(path.read_text()), sweep_dir)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: unreadable sweep record ({type(e).__name__}: {e})") from None


def new_sweep_record(sweep_dir: Path) -> SweepRecord:
    """The record before a sweep's first batch."""
    return SweepRecord(sweep_dir=str(sweep_dir))
