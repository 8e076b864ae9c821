"""Carry out a plan: write the run directory, then submit the stages with submitit.

On Slurm the stages are chained by dependencies and this returns at once; if stage k is
refused, stages 1..k-1 are cancelled. With the local executor the stages run here, one
after another (deploy serving while eval runs), with progress shown.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from hpcft.config.schema import ClusterConfig, StageName
from hpcft.errors import SchedulerUnreachable, StageFailedError, SubmissionError, SubmissionInterrupted
from hpcft.interrupts import interruptions_raised
from hpcft.jobs.entry import stage_callable
from hpcft.localgroup import LocalGroup
from hpcft.manifest import Executor, Manifest, StageRecord
from hpcft.plan import Pipeline, Stage
from hpcft.render import setup_lines, slurm_parameters, time_to_minutes
from hpcft.rundir import RunLayout, tail, write_atomic
from hpcft.scheduler import StageState, cancel_run_jobs, unreachable_said

Printer = Callable[[str], None]


def write_run_files(pipeline: Pipeline, config_yaml: str, write: Callable[[Path, str], None] = write_atomic) -> None:
    """The run's config and the plan's files; `write`: how (a sweep's new point folders need
    no atomic replace: nothing reads them before the sweep is recorded). The folders of the
    deploy and eval stages only where they are planned (their jobs' writes make them anyway;
    a train-only sweep's points made two empty folders each)."""
    layout = pipeline.layout
    write(layout.config, config_yaml)
    for relpath, text in pipeline.files.items():
        write(layout.root / relpath, text)
    planned = {stage.name for stage in pipeline.stages}
    for stage_dir in (layout.slurm, *(path for name, path in stage_folders(layout) if name in planned)):
        stage_dir.mkdir(parents=True, exist_ok=True)


def stage_folders(layout: RunLayout) -> tuple[tuple[StageName, Path], ...]:
    return ((StageName.deploy, layout.deploy), (StageName.eval, layout.eval))


def new_manifest(pipeline: Pipeline, executor: Executor) -> Manifest:
    return Manifest(
        run_name=pipeline.run_name,
        run_dir=str(pipeline.layout.root),
        executor=executor,
        stages={s.name: StageRecord(after=[f"{d.kind}:{d.stage}" for d in s.after]) for s in pipeline.stages},
    )


def log_paths(job: submitit.Job[Any]) -> dict[str, str]:
    return {"stdout": str(job.paths.stdout).replace("%t", "0"), "stderr": str(job.paths.stderr).replace("%t", "0")}


def submit_slurm(pipeline: Pipeline, cluster: ClusterConfig) -> Manifest:
    """Submit every stage with its dependencies, all or nothing.

    The run record exists (status `submitting`) before the first `sbatch`, and each job id
    is recorded as soon as `sbatch` returns. On any failure or interruption (an exception,
    Ctrl-C, SIGTERM, SIGHUP) what was submitted is cancelled, jobs named after the run that
    an interrupted `sbatch` may still have queued included, and the record says so."""
    manifest = new_manifest(pipeline, "slurm")
    manifest.write(pipeline.layout.manifest)
    jobs: dict[str, submitit.Job[Any]] = {}
    try:
        with interruptions_raised():
            for stage in pipeline.stages:
                jobs[stage.name] = job = _submit_stage(pipeline, stage, cluster, jobs)
                manifest.stage(stage.name).submitted(job.job_id, log_paths(job))
                manifest.write(pipeline.layout.manifest)
            manifest.status = "submitted"
            manifest.write(pipeline.layout.manifest)
    except BaseException as e:
        failed = next((s.name for s in pipeline.stages if s.name not in jobs), "the run record")
        raise rolled_back(pipeline, manifest, sorted(jobs), failed, e) from None
    return manifest


def _submit_stage(
    pipeline: Pipeline, stage: Stage, cluster: ClusterConfig, jobs: dict[str, submitit.Job[Any]]
) -> submitit.Job[Any]:
    executor = submitit.SlurmExecutor(
        folder=pipeline.layout.slurm, max_num_timeout=cluster.max_requeues, python=stage.resources.python_command
    )
    ids = {name: job.job_id for name, job in jobs.items()}
    executor.update_parameters(**slurm_parameters(pipeline, stage, cluster, ids))
    said = io.StringIO()  # submitit prints sbatch's error before raising it: said once, by hpcft
    try:
        with contextlib.redirect_stderr(said):
            return executor.submit(stage_callable(stage.job), stage.job)
    except submitit.core.utils.FailedJobError as e:
        if unreachable_said(str(e)):
            last = str(e).strip().splitlines()[-1].removeprefix("sbatch: error: ")
            raise SchedulerUnreachable(f"the scheduler is unreachable: sbatch failed: {last}") from None
        raise


def rolled_back(
    pipeline: Pipeline, manifest: Manifest, submitted: list[str], stage: str, error: BaseException
) -> SubmissionError | SchedulerUnreachable:
    """Cancel the run's jobs and mark its record; the error to raise. A job that cannot be
    cancelled (the scheduler went away mid-submission) is named, with how to cancel it later."""
    interrupted = isinstance(error, KeyboardInterrupt)
    ids = {str(manifest.stage(n).job_id): n for n in submitted}
    # Only an interruption can leave an sbatch in flight; a refusal or an error left none.
    gone = set(cancel_run_jobs([pipeline.layout.root.name], list(ids), rounds=3 if interrupted else 1))
    cancelled = [n for j, n in ids.items() if j in gone]
    manifest.status = "interrupted" if interrupted else "submit_failed"
    manifest.error = f"submitting {stage} {'was interrupted' if interrupted else 'failed'}: {error}".strip()
    for name in cancelled:
        manifest.stage(name).state = StageState.CANCELLED
    unrecorded = ""
    try:
        manifest.write(pipeline.layout.manifest)
    except OSError as e:
        unrecorded = f" (the run record could not be updated: {e.strerror})"
    what = f"cancelled {', '.join(cancelled) or 'nothing'}{unrecorded}"
    if left := [f"{n} (job {j})" for j, n in ids.items() if j not in gone]:
        run = shlex.quote(str(pipeline.layout.root))
        what += f"; could not cancel {', '.join(left)}: python -m hpcft cancel {run} once the scheduler answers"
    if isinstance(error, SchedulerUnreachable):
        return SchedulerUnreachable(f"{error}; stage {stage!r} not submitted, " + (what if ids else "nor any other"))
    cls = SubmissionInterrupted if interrupted else SubmissionError
    return cls(f"submitting stage {stage!r} {'was interrupted' if interrupted else 'failed'}; {what}.\n{error}")


def _local_executor(folder: Path, stage: Stage, cluster: ClusterConfig, group: LocalGroup) -> submitit.LocalExecutor:
    executor = submitit.LocalExecutor(folder=folder, python=group.python(stage.resources.python_command))
    executor.update_parameters(
        timeout_min=time_to_minutes(stage.resources.time),
        gpus_per_node=stage.resources.gpus_per_node,
        signal_delay_s=cluster.signal_delay_s,
        setup=setup_lines(cluster, stage.resources),
    )
    return executor


def _reason(error: Exception) -> str:
    """The last line of the job's traceback inside submitit's FailedJobError message."""
    parts = str(error).split("-" * 22)
    trace = parts[1] if len(parts) >= 3 else str(error)
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    return lines[-1] if lines else "see its log"


def _wait(job: submitit.Job[Any], name: str, say: Printer, group: LocalGroup, show_every_s: float = 5.0) -> None:
    """Wait for a local job, showing its latest log line now and then; raise if it failed or
    its group was ended (`cancel`). Polled often so that a short stage is not held up."""
    start, shown, next_show = time.monotonic(), "", 0.0
    while not job.done() and not group.cancelled():
        if time.monotonic() >= next_show:
            paths = log_paths(job)
            line = (tail(paths["stderr"], 1) or tail(paths["stdout"], 1))[-160:]
            if line and line != shown:
                say(f"  [{name} {time.monotonic() - start:5.0f}s] {line}")
                shown = line
            next_show = time.monotonic() + show_every_s
        time.sleep(0.2)
    if group.cancelled():
        raise StageFailedError(f"stage {name!r} was cancelled")
    try:
        job.result()
    except submitit.core.utils.FailedJobError as e:
        raise StageFailedError(f"stage {name!r} failed: {_reason(e)}\n  log: {log_paths(job)['stderr']}") from None


def run_local(pipeline: Pipeline, cluster: ClusterConfig, say: Printer = print) -> Manifest:
    """Run the stages on this machine: train, then deploy (serving) while eval runs. Their
    processes are one process group (`hpcft.localgroup`), ended by `python -m hpcft cancel`
    and by the end of this process, however it ends."""
    layout = pipeline.layout
    manifest = new_manifest(pipeline, "local")
    manifest.status = "running"
    group = LocalGroup(layout.root)
    manifest.process_group = group.pgid
    jobs: dict[str, submitit.Job[Any]] = {}

    def start(stage: Stage) -> submitit.Job[Any]:
        job = _local_executor(layout.slurm, stage, cluster, group).submit(stage_callable(stage.job), stage.job)
        jobs[stage.name] = job
        record = manifest.stage(stage.name)
        record.job_id, record.state, record.logs = job.job_id, StageState.RUNNING, log_paths(job)
        record.started = round(time.time(), 1)
        manifest.write(layout.manifest)
        say(f"{stage.name}: started (pid {job.job_id}); log {log_paths(job)['stderr']}")
        return job

    try:
        for stage in pipeline.stages:
            job = start(stage)
            if stage.name != "deploy":  # deploy serves in the background while eval runs
                _wait(job, stage.name, say, group)
                _ended(manifest.stage(stage.name), StageState.COMPLETED)
                say(f"{stage.name}: completed")
        if "deploy" in jobs:
            _wait(jobs["deploy"], "deploy", say, group)
            _ended(manifest.stage("deploy"), StageState.COMPLETED)
        manifest.status = "completed"
    except Exception as e:
        raise _stopped(manifest, jobs, e, group.cancelled()) from None
    finally:
        manifest.write(layout.manifest)  # before the group ends: a run without its group was killed
        group.close()
    return manifest


def _stopped(manifest: Manifest, jobs: dict[str, submitit.Job[Any]], error: Exception, cancelled: bool) -> Exception:
    """Stop the stages still running and record how the run ended; the error to raise."""
    for name, job in jobs.items():
        record = manifest.stage(name)
        if not job.done():
            job.cancel(check=False)
            _ended(record, StageState.CANCELLED)
        elif record.state is StageState.RUNNING:
            _ended(record, StageState.CANCELLED if cancelled else StageState.FAILED)
    if cancelled:
        manifest.status, manifest.error = "cancelled", "cancelled (python -m hpcft cancel)"
        return StageFailedError(f"{manifest.run_dir}: cancelled (python -m hpcft cancel)")
    manifest.status = "failed"
    manifest.error = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
    return error


def _ended(record: StageRecord, state: StageState) -> None:
    record.state = state
    record.ended = record.ended or round(time.time(), 1)
