"""Where each stage of some runs stands, and cancelling them: the manifests plus one
scheduler query for all.

Shared by `python -m hpcft status`/`cancel` and the Python API's `Run`, so the two cannot
drift. What the scheduler says is recorded in each manifest, so a run can be inspected after
Slurm has forgotten its jobs. Jobs are also found by name (`<run dir>.<stage>`): a job that
a killed submission never recorded, or the jobs of a run whose manifest is unreadable, are
still shown and cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpcft.config.schema import StageName
from hpcft.errors import SchedulerUnreachable, UserError
from hpcft.localgroup import end_group, keeper_of
from hpcft.manifest import Manifest, StageRecord, read_manifest
from hpcft.scheduler import JobInfo, StageState, cancel_jobs, named_after, query_jobs
from hpcft.study import ControllerRecord, controller_of, record_study_ended
from hpcft.sweep.results import sweep_runs


@dataclass(frozen=True)
class RunState:
    run: Path
    manifest: Manifest | None
    """The run record; None when `error` says why it could not be read."""
    stages: dict[str, JobInfo]
    """Stage name -> its job's state, in pipeline order."""
    strays: list[JobInfo] = field(default_factory=list)
    """Queued jobs named after the run that its record does not list."""
    error: str | None = None
    """Why the run record is unreadable, if it is."""
    notes: list[str] = field(default_factory=list)
    """What could not be done with the record (the disk is full: the states read were not
    recorded), said beside the states."""

    @property
    def done(self) -> bool:
        going = [info.state for info in [*self.stages.values(), *self.strays]]
        return not any(state.active for state in going)


def _record(run: Path) -> tuple[Manifest | None, str | None]:
    try:
        return read_manifest(run), None
    except UserError as e:
        return None, str(e)


def _local_times(manifest: Manifest, stage: StageRecord) -> dict[str, str]:
    """Elapsed time and node of a stage run on this machine, from the times it recorded."""
    if manifest.executor != "local" or stage.started is None:
        return {}
    seconds = int((stage.ended or time.time()) - stage.started)
    hours, rest = divmod(max(seconds, 0), 3600)
    return {"elapsed": f"{hours}:{rest // 60:02d}:{rest % 60:02d}", "nodes": "local"}


def _stage_infos(run: Path, manifest: Manifest, jobs: dict[str, JobInfo]) -> tuple[dict[str, JobInfo], list[str]]:
    """Each stage's job as the scheduler sees it, or as last recorded; what changed is recorded
    (and a note when it could not be: the states are shown all the same)."""
    infos, changed = {}, _ended_unrecorded(run, manifest)
    for name, stage in manifest.stages.items():
        info = jobs.get(stage.job_id) if manifest.executor == "slurm" and stage.job_id else None
        if info is None or info.state is StageState.UNKNOWN:  # local runs, stages never submitted, forgotten jobs
            info = JobInfo(stage.job_id or "-", stage.state, **_local_times(manifest, stage))
        elif info.state is not stage.state:
            stage.state, changed = info.state, True
        infos[name] = info
    if changed:
        return infos, _write(manifest, run, "these states")
    return infos, []


def _ended_unrecorded(run: Path, manifest: Manifest) -> bool:
    """A local run whose process ended without recording it (killed): its process group went
    with it (`hpcft.localgroup`), so its live stages are marked CANCELLED and the run
    `interrupted`. Whether anything changed."""
    group = manifest.process_group
    if manifest.executor != "local" or manifest.status != "running" or group is None or keeper_of(group, run):
        return False
    for stage in manifest.stages.values():
        if stage.state.active:
            stage.state = StageState.CANCELLED
    manifest.status = "interrupted"
    manifest.error = "the process running the stages ended without recording it; its stages ended with it"
    return True


def _write(manifest: Manifest, run: Path, what: str) -> list[str]:
    """Write the record; a note saying what could not be recorded when the disk refuses (Slurm
    keeps the states: a later `status` reads and records them)."""
    try:
        manifest.write(run / "manifest.json")
    except OSError as e:
        return [f"could not record {what} in {run / 'manifest.json'}: {e.strerror or e}"]
    return []


def read_states(runs: Sequence[Path], sweeps: Sequence[Path] = ()) -> list[RunState]:
    """The state of every stage of every run, with at most two scheduler calls in all.

    Queued jobs named after a run (or after one of `sweeps`, for its arrays) that no record
    lists are reported as strays: of that run, or of the sweep's first point. A run whose
    record is unreadable gets `error` set; the other runs are unaffected."""
    records = {run: _record(run) for run in runs}
    controllers = {sweep: record for sweep in sweeps if (record := controller_of(sweep)) and record.job_id}
    ids = [job_id for manifest, _ in records.values() if manifest for job_id in manifest.job_ids()]
    ids += [str(record.job_id) for record in controllers.values()]
    firsts = {sweep.name: _first_point(list(records), sweep) for sweep in sweeps}
    slurm = bool(controllers) or any((m and m.executor == "slurm") or error for m, error in records.values())
    tags = [run.name for run in runs] + [sweep.name for sweep in sweeps]
    if slurm:
        jobs = query_jobs(ids, name_prefixes=tags)
    elif None in firsts.values():  # a sweep with no point recorded: look for its jobs by name
        jobs = _queued_if_slurm(tags)
    else:
        jobs = {}
    known = set(ids)
    unrecorded = [job for job in jobs.values() if job.job_id not in known]
    states = [_controller_state(sweep, record, jobs) for sweep, record in controllers.items()]
    for i, (run, (manifest, error)) in enumerate(records.items()):
        owns = [run.name] + [name for name, first in firsts.items() if i == first]
        strays = [job for job in unrecorded if named_after(job, owns)]
        infos, notes = _stage_infos(run, manifest, jobs) if manifest else ({}, [])
        states.append(RunState(run, manifest, infos, strays, error, notes))
    for sweep in (s for s in sweeps if firsts[s.name] is None and s not in controllers):  # cut off before any point
        strays = [job for job in unrecorded if named_after(job, [sweep.name])]
        why = DRY_RUN_SWEEP if (sweep / "dry_run").is_dir() else CUT_OFF_SWEEP
        states.append(RunState(sweep, None, {}, strays, why))
    return states


CONTROLLER = "controller"
"""The stage name an adaptive sweep's controller job is shown and cancelled under."""


def _controller_state(sweep: Path, record: ControllerRecord, jobs: dict[str, JobInfo]) -> RunState:
    """An adaptive sweep's controller, as a run of the sweep folder with one stage."""
    job_id = str(record.job_id)
    info = jobs.get(job_id)
    if info is None or info.state is StageState.UNKNOWN:
        info = JobInfo(job_id, StageState.UNKNOWN)
    return RunState(sweep, None, {CONTROLLER: info})


CUT_OFF_SWEEP = "no point recorded: the sweep's submission was cut off before sweep.json was written"
DRY_RUN_SWEEP = "a dry run: nothing was submitted (scripts in dry_run/)"


def _queued_if_slurm(name_prefixes: Sequence[str]) -> dict[str, JobInfo]:
    """Queued jobs named after these folders, or none where there is no Slurm to ask."""
    try:
        return query_jobs([], name_prefixes=name_prefixes)
    except SchedulerUnreachable:
        return {}


def _first_point(runs: list[Path], sweep: Path) -> int | None:
    """The index of the sweep's first point among the runs (its strays are shown there)."""
    return next((i for i, run in enumerate(runs) if sweep in run.parents), None)


def cancel_runs(
    runs: Sequence[Path], stage: str | None = None, sweeps: Sequence[Path] = (), *, second_pass: bool = False
) -> list[tuple[RunState, str, JobInfo]]:
    """Cancel the runs' live jobs (or `stage` and the stages after it) with one `scancel`,
    unrecorded jobs named after the runs included; record it in each manifest. Returns
    (run, stage, job) of every job cancelled. An adaptive sweep's controller is cancelled
    with its sweep; once it has left the queue, what it submitted meanwhile is cancelled too."""
    cancelled = []
    for state in read_states(runs, sweeps):
        if state.manifest and _is_local(state):
            cancelled += _cancel_local(state, state.manifest)
            continue
        chosen = ([CONTROLLER] if stage is None else []) if CONTROLLER in state.stages else stages_from(state, stage)
        live = [(name, info) for name, info in state.stages.items() if info.state.active]
        live += [(_stage_of(job), job) for job in state.strays if job.state.active]
        cancelled += [(state, name, info) for name, info in live if name in chosen and info.job_id != "-"]
    cancel_jobs(sorted({info.job_id for state, _, info in cancelled if not _is_local(state)}))
    _record_cancelled(cancelled)
    controllers = [info.job_id for _, name, info in cancelled if name == CONTROLLER]
    if controllers and not second_pass:
        wait_gone(controllers)
        for state in {state.run: state for state, name, _ in cancelled if name == CONTROLLER}.values():
            record_study_ended(state.run, "cancelled")  # the controller is gone: trials.json no longer says running
        every_run = list(dict.fromkeys([*runs, *(run for sweep in sweeps for run in sweep_runs(sweep))]))
        cancelled += cancel_runs(every_run, stage, sweeps, second_pass=True)
    return cancelled


def _is_local(state: RunState) -> bool:
    return state.manifest is not None and state.manifest.executor == "local"


def _cancel_local(state: RunState, manifest: Manifest) -> list[tuple[RunState, str, JobInfo]]:
    """End a local run's process group while it runs (`hpcft.localgroup`); its live stages."""
    live = [(state, name, info) for name, info in state.stages.items() if info.state.active]
    group = manifest.process_group
    if not live or group is None or not keeper_of(group, state.run):
        return []  # ended, or its process and group are gone
    end_group(group)
    return live


def _record_cancelled(cancelled: list[tuple[RunState, str, JobInfo]]) -> None:
    for state in {c[0].run: c[0] for c in cancelled}.values():
        if state.manifest:
            for name in {name for s, name, _ in cancelled if s is state} & set(state.manifest.stages):
                state.manifest.stage(name).state = StageState.CANCELLED
            state.notes.extend(_write(state.manifest, state.run, "the cancel"))


def wait_gone(job_ids: Sequence[str], timeout_s: float = 120.0, poll_s: float = 1.0) -> None:
    """Until these jobs have left the queue (a cancelled job completes for a while)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(info.state.active for info in query_jobs(job_ids).values()):
            return
        time.sleep(poll_s)


def _stage_of(job: JobInfo) -> str:
    return job.name.rsplit(".", 1)[-1]


def stages_from(state: RunState, stage: str | None) -> list[str]:
    """The stage and every stage after it (they depend on it), or all stages."""
    names = list(state.stages) or list(StageName)
    if stage is None:
        return names
    if stage not in names:
        raise UserError(f"--stage {stage}: stages are {', '.join(names)}")
    return names[names.index(stage) :]
