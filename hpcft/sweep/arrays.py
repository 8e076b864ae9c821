"""Sweeps as Slurm job arrays: one array per stage and per resource shape, chained task by task.

Points whose stages ask for the same resources share arrays: a train array, a deploy array
whose task i starts after train task i succeeded (`aftercorr`), and an eval array likewise.
Points with other resources (a bigger model served on more GPUs) get arrays of their own.
Arrays longer than the cluster's `max_array_size` are split. A sweep of N points thus costs
3 x (resource shapes) sbatch calls, not 3 x N, and the command returns at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import _make_sbatch_string

from hpcft.config.schema import ClusterConfig, HpcftConfig, StageName
from hpcft.errors import SubmissionError, SubmissionInterrupted
from hpcft.frameworks import adapter_for
from hpcft.interrupts import interruptions_raised
from hpcft.jobs.entry import stage_callable
from hpcft.jobs.spec import DeployJob
from hpcft.manifest import Manifest, RunStatus
from hpcft.plan import Pipeline, Stage
from hpcft.render import dependency_string, placeholder_ids, slurm_parameters, submitit_command, with_dependency
from hpcft.rundir import write_atomic
from hpcft.scheduler import cancel_run_jobs
from hpcft.submit import log_paths, new_manifest
from hpcft.sweep.record import ArrayRecord, PointRecord, SweepRecord, new_sweep_record

# Per-point values that do not make a different resource shape.
_NOT_SHAPE = ("job_name", "dependency", "additional_parameters")


@dataclass(frozen=True)
class SweepPoint:
    num: int
    """Hydra's `hydra.job.num`: the point's index in the sweep."""
    overrides: tuple[str, ...]
    cfg: HpcftConfig
    pipeline: Pipeline


@dataclass(frozen=True)
class ArrayGroup:
    """Points submitted together: one array per stage, task i of each for points[i]; or, for
    deploy, one job serving every point (`shared_deploy`) where the framework's engine can."""

    points: tuple[SweepPoint, ...]
    cluster: ClusterConfig
    shared_deploy: DeployJob | None = None

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.points[0].pipeline.stages]

    def shared(self, stage: str) -> DeployJob | None:
        """The one job that runs `stage` for every point, if there is one."""
        return self.shared_deploy if stage == StageName.deploy else None

    def python_command(self, stage: str) -> str:
        return self.points[0].pipeline.stage(stage).resources.python_command


def shape_key(point: SweepPoint) -> tuple[Any, ...]:
    """What makes points share arrays: every stage's resources, scheduling parameters and
    interpreter (one array is one script)."""
    key: list[Any] = [tuple(point.cfg.stages)]
    for stage in point.pipeline.stages:
        params = slurm_parameters(point.pipeline, stage, point.cfg.cluster, placeholder_ids(point.pipeline))
        shape = sorted((k, repr(v)) for k, v in params.items() if k not in _NOT_SHAPE)
        key.append((stage.resources.python_command, *shape))
    return tuple(key)


def group_points(points: Sequence[SweepPoint]) -> list[ArrayGroup]:
    """Group by resource shape, in sweep order, then split at the cluster's MaxArraySize."""
    by_shape: dict[tuple[Any, ...], list[SweepPoint]] = {}
    for point in points:
        by_shape.setdefault(shape_key(point), []).append(point)
    groups = []
    for members in by_shape.values():
        cluster = members[0].cfg.cluster
        size = cluster.max_array_size
        for i in range(0, len(members), size):
            chunk = tuple(members[i : i + size])
            groups.append(ArrayGroup(chunk, cluster, shared_deploy_job(chunk)))
    return groups


def shared_deploy_job(points: Sequence[SweepPoint]) -> DeployJob | None:
    """One server for the group's points, where they have a deploy stage and can share one."""
    if len(points) < 2 or all(s.name != StageName.deploy for s in points[0].pipeline.stages):
        return None
    return adapter_for(points[0].cfg).shared_deploy_job([(p.cfg, p.pipeline.layout) for p in points])


PER_TASK = {"afterok": "aftercorr"}
"""A stage's dependency kinds as array dependencies: task i after task i succeeded."""


def array_dependency(stage: Stage, array_ids: dict[str, str], tasks: int) -> str | None:
    """An array's dependencies, derived from the stage's own (`Stage.after`). A group of one
    point is a plain job with a single run's dependencies. In an array, task i waits for task
    i of the stage it needs (`afterok` -> `aftercorr`). Slurm has no "after task i started":
    `after:<deploy array>` would wait for every deploy task, which a throttled array never
    starts while the first ones serve, so an array's eval task waits for its own deploy task's
    endpoint (or failure marker) instead, as the eval job does anyway."""
    if tasks == 1:
        return dependency_string(stage, array_ids)
    parts = [f"{PER_TASK[d.kind]}:{array_ids[d.stage]}" for d in stage.after if d.kind in PER_TASK]
    return ",".join(parts) or None


def array_parameters(group: ArrayGroup, stage: str, sweep_name: str, array_ids: dict[str, str]) -> dict[str, Any]:
    point = group.points[0]
    params = slurm_parameters(
        point.pipeline, point.pipeline.stage(stage), group.cluster, placeholder_ids(point.pipeline)
    )
    params["job_name"] = f"{sweep_name}.{stage}"
    if group.shared(stage):  # it serves each point once its training has ended, whichever way
        with_dependency(params, f"afterany:{array_ids['train']}")
        return params
    params["array_parallelism"] = group.cluster.array_parallelism
    with_dependency(params, array_dependency(point.pipeline.stage(stage), array_ids, len(group.points)))
    return params


def render_array(group: ArrayGroup, stage: str, sweep_name: str, folder: Path) -> str:
    """The sbatch script of one array (placeholders for the ids of earlier arrays)."""
    placeholders = {name: f"<{name} array>" for name in group.stage_names}
    params = array_parameters(group, stage, sweep_name, placeholders)
    command = submitit_command(str(folder), group.python_command(stage))
    tasks = None if group.shared(stage) else len(group.points)
    return _make_sbatch_string(command=command, folder=str(folder), map_count=tasks, **params)


def _submit_array(group: ArrayGroup, stage: str, params: dict[str, Any], folder: Path) -> list[submitit.Job[Any]]:
    executor = submitit.SlurmExecutor(
        folder=folder, max_num_timeout=group.cluster.max_requeues, python=group.python_command(stage)
    )
    executor.update_parameters(**params)
    if shared := group.shared(stage):
        return [executor.submit(stage_callable(shared), shared)]
    with executor.batch():
        jobs = [
            executor.submit(stage_callable(p.pipeline.stage(stage).job), p.pipeline.stage(stage).job)
            for p in group.points
        ]
    return jobs


NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
"""`open(path, "x")`'s flags."""


def write_new(path: Path, text: str) -> None:
    """A file of a point's new folder: created, never replacing one (`x`), mode from the run's
    umask. Not written via a temporary file and a rename as records that change are: nothing
    reads a point's folder before `sweep.json` names it, and a sweep writes ten files a point
    (the bytes `open(path, "x", encoding="utf-8")` writes, without a text file's own calls)."""
    data = memoryview(text.encode("utf-8"))
    try:
        fd = os.open(path, NEW_FILE, 0o666)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, NEW_FILE, 0o666)
    try:
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def json_text(data: Any) -> str:
    """What `hpcft.rundir.write_json_atomic` writes."""
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def scheduler_reason(error: BaseException) -> str:
    """One line of why: sbatch's own error line (e.g. it cannot reach slurmctld), else the first."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = next((line for line in lines if "error" in line.lower() and "sbatch" in line.lower()), None)
    return said or (lines[0] if lines else type(error).__name__)


def sweep_record(
    points: Sequence[SweepPoint],
    sweep_dir: Path,
    arrays: Sequence[ArrayRecord],
    status: str,
    earlier: SweepRecord | None = None,
) -> SweepRecord:
    """`sweep.json`: every point and array of the sweep, this batch's after the earlier ones'."""
    before = earlier or new_sweep_record(sweep_dir)
    return before.with_batch(
        (PointRecord(num=p.num, overrides=p.overrides, run_dir=p.pipeline.layout.root) for p in points), arrays, status
    )


def submit_sweep(points: Sequence[SweepPoint], sweep_dir: Path, earlier: SweepRecord | None = None) -> SweepRecord:
    """Submit every point as arrays, all or nothing: `sweep.json` and every point's record
    exist before the first `sbatch`; on a refusal or an interruption every array submitted
    (and any a cut-off `sbatch` queued, found by the sweep's name) is cancelled. `earlier`:
    the record of the sweep's batches submitted before this one."""
    sweep_name = sweep_dir.name
    arrays: list[ArrayRecord] = []
    manifests = new_run_records(points, sweep_dir)

    def record(status: str) -> SweepRecord:
        return sweep_record(points, sweep_dir, arrays, status, earlier)

    record("submitting").write(sweep_dir)
    submitted: list[SweepPoint] = []
    try:
        with interruptions_raised():
            for group in group_points(points):
                _submit_group(group, sweep_dir, manifests, lambda: record("submitting").write(sweep_dir), arrays)
                # each point's record rewritten once, with its job ids, before the next group's sbatch
                submitted += _recorded(group.points, manifests, "submitted")
            sweep = record("submitted")
            sweep.write(sweep_dir)
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        cancel_run_jobs([sweep_name], [a.job_id for a in arrays], rounds=3 if interrupted else 1)
        with contextlib.suppress(OSError):  # as a single run's rollback says (hpcft.submit.rolled_back)
            _recorded(submitted, manifests, "interrupted" if interrupted else "submit_failed")
        cls = SubmissionInterrupted if interrupted else SubmissionError
        verb = "was interrupted" if interrupted else "failed"
        if not arrays and not interrupted:  # nothing reached the queue: leave nothing behind
            _remove_batch(points, sweep_dir, earlier)
            raise cls(f"submitting the sweep failed, nothing was submitted: {scheduler_reason(e)}") from None
        with contextlib.suppress(OSError):
            record("cancelled").write(sweep_dir)
        raise cls(f"submitting the sweep {verb}; cancelled {len(arrays)} arrays: {scheduler_reason(e)}") from None
    return sweep


def new_run_records(points: Sequence[SweepPoint], sweep_dir: Path) -> dict[int, Manifest]:
    """Each point's run record, written (status `submitting`) before the first `sbatch`."""
    manifests = {p.num: new_manifest(p.pipeline, "slurm") for p in points}
    for point in points:
        manifests[point.num].sweep, manifests[point.num].overrides = str(sweep_dir), list(point.overrides)
        write_new(point.pipeline.layout.manifest, json_text(manifests[point.num].to_json()))
    return manifests


def _recorded(points: Sequence[SweepPoint], manifests: dict[int, Manifest], status: RunStatus) -> list[SweepPoint]:
    """The points' records rewritten with `status` (and the job ids recorded so far)."""
    for point in points:
        manifests[point.num].status = status
        rewrite_new(point.pipeline.layout.manifest, json_text(manifests[point.num].to_json()))
    return list(points)


def rewrite_new(path: Path, text: str) -> None:
    """A file `write_new` made in this command, replaced as `write_atomic` replaces one (a
    temporary file beside it, then a rename: a reader sees the old text or the new), in 4
    calls instead of ~10: the folder is there, and the mode is what the same umask gives."""
    tmp = path.with_name(f".{path.name}.new")
    try:
        write_new(tmp, text)
    except FileExistsError:  # not this command's: the general way
        write_atomic(path, text)
        return
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _remove_batch(points: Sequence[SweepPoint], sweep_dir: Path, earlier: SweepRecord | None) -> None:
    """Undo a batch none of whose jobs was queued: its points' folders, or the whole sweep
    folder when there was no earlier batch."""
    if earlier is None:
        shutil.rmtree(sweep_dir, ignore_errors=True)
        return
    for point in points:
        shutil.rmtree(point.pipeline.layout.root, ignore_errors=True)
    with contextlib.suppress(OSError):
        earlier.write(sweep_dir)


def _submit_group(
    group: ArrayGroup,
    sweep_dir: Path,
    manifests: dict[int, Manifest],
    save_record: Callable[[], None],
    arrays: list[ArrayRecord],
) -> None:
    """One array per stage of a group of points. Each array id goes into `sweep.json` as
    soon as `sbatch` returns (`save_record`), and the job ids into the points' records."""
    array_ids: dict[str, str] = {}
    for stage in group.stage_names:
        params = array_parameters(group, stage, sweep_dir.name, array_ids)
        jobs = _submit_array(group, stage, params, sweep_dir / "slurm")
        array_ids[stage] = jobs[0].job_id.split("_")[0]
        members = [p.num for p in group.points]
        arrays.append(ArrayRecord(stage=stage, job_id=array_ids[stage], tasks=len(jobs), points=tuple(members)))
        save_record()
        for i, point in enumerate(group.points):
            job = jobs[0] if group.shared(stage) else jobs[i]
            manifests[point.num].stage(stage).submitted(job.job_id, log_paths(job))
