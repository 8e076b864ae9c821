"""Where each stage of some runs stands: the manifests plus one scheduler query for all.

Shared by `python -m hpcft status` and the Python API's `Run`. What the scheduler says is
recorded in each manifest, so a run can be inspected after Slurm has forgotten its jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcft.rundir import read_json, write_json_atomic
from hpcft.scheduler import JobInfo, query_jobs

ENDED_BADLY = frozenset({"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"})
STILL_GOING = frozenset({"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUBMITTED"})


@dataclass(frozen=True)
class RunState:
    run: Path
    manifest: dict[str, Any]
    stages: dict[str, JobInfo]
    """Stage name -> its job's state, in pipeline order."""

    @property
    def done(self) -> bool:
        return not any(info.state in STILL_GOING for info in self.stages.values())


def _stage_infos(run: Path, manifest: dict[str, Any], jobs: dict[str, JobInfo]) -> dict[str, JobInfo]:
    infos, changed = {}, False
    for name, stage in manifest["stages"].items():
        job_id = str(stage.get("job_id") or "")
        info = jobs.get(job_id, JobInfo(job_id, "UNKNOWN")) if manifest["executor"] == "slurm" and job_id else None
        if info is None or info.state == "UNKNOWN":  # local runs, stages never submitted, forgotten jobs
            info = JobInfo(job_id or "-", stage["state"])
        elif info.state != stage["state"]:
            stage["state"], changed = info.state, True
        infos[name] = info
    if changed:
        write_json_atomic(run / "manifest.json", manifest)
    return infos


def read_states(runs: Sequence[Path]) -> list[RunState]:
    """The state of every stage of every run, with at most two scheduler calls in all."""
    manifests = {run: read_json(run / "manifest.json") for run in runs}
    ids = [str(s["job_id"]) for m in manifests.values() if m["executor"] == "slurm" for s in m["stages"].values()]
    jobs = query_jobs(ids)
    return [RunState(run, manifest, _stage_infos(run, manifest, jobs)) for run, manifest in manifests.items()]
