"""A sweep's points, from the launcher plugin to Slurm job arrays (or a dry run, or a local run).

The launcher plugin (`hydra/launcher=hpcft`) calls `launch_sweep` with each point's typed
config. The points are validated with the checks a single run gets (`hpcft.launch`), planned
with `build_pipeline`, written like a single run's directory, then grouped into job arrays
(`hpcft.sweep.arrays`) and recorded in `sweep.json` (`hpcft.sweep.record`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from hpcft.config.placement import refuse_in_sweep
from hpcft.config.schema import Executor, HpcftConfig
from hpcft.config.secrets import check_secret
from hpcft.config.validate import known_secrets
from hpcft.configure import CheckedRun, check
from hpcft.errors import UserError
from hpcft.launch import Printer, config_yaml
from hpcft.plan import build_pipeline
from hpcft.rundir import RunLayout, run_umask, write_atomic
from hpcft.sweep.arrays import SweepPoint, group_points, render_array, submit_sweep, sweep_record, write_new
from hpcft.sweep.record import SWEEP_RECORD, SweepRecord, read_sweep_record
from hpcft.sweep.results import markdown, sweep_table
from hpcft.tracking import secrets_withheld


@dataclass(frozen=True, kw_only=True)
class PointConfig:
    """One point of a sweep, as the launcher plugin composed it."""

    num: int
    """Hydra's `hydra.job.num`: the point's index in the whole sweep (over all batches)."""
    overrides: tuple[str, ...]
    """The point's overrides, without Hydra's own (`hydra.*`)."""
    cfg: HpcftConfig
    """The point's typed config."""
    run_dir: Path
    """`${hydra.sweep.dir}/${hydra.sweep.subdir}` as Hydra resolves it for this point."""
    hydra_files: Mapping[str, str] = field(default_factory=dict)
    """Hydra's record of the point (`.hydra/config.yaml`, ...): run-dir path -> text."""
    config_yaml: str = ""
    """`config.yaml` of `cfg` where the launcher made it already; else it is made here."""


def check_point_dirs(points: Sequence[PointConfig], sweep_dir: Path) -> None:
    """Every point needs a new folder of its own inside the sweep folder: two points in one
    folder, or an existing one, would mix or overwrite runs. Folder names become job names:
    no secret in them."""
    known = known_secrets()
    check_secret("hydra.sweep.dir", str(sweep_dir), known)
    seen: dict[Path, int] = {}
    root = sweep_dir.resolve()
    for p in points:
        check_secret("hydra.sweep.subdir", str(p.run_dir), known)
        if p.run_dir in seen:
            raise UserError(
                f"hydra.sweep.subdir: points {seen[p.run_dir]} and {p.num} both get {p.run_dir};"
                " use a subdir that differs per point, e.g. ${hydra.job.num}"
            )
        seen[p.run_dir] = p.num
        if "%" in str(p.run_dir):  # Slurm would read it as a file-name pattern
            raise UserError(f"hydra.sweep.subdir: point {p.num}'s folder {p.run_dir} has a '%'; exclude that key")
        if root not in p.run_dir.resolve().parents:
            raise UserError(f"hydra.sweep.subdir: point {p.num}'s folder {p.run_dir} is outside {sweep_dir}")
        if p.run_dir.exists():
            raise UserError(f"hydra.sweep.subdir: {p.run_dir} exists; runs are never overwritten")


def _planned(point: PointConfig, run: CheckedRun) -> SweepPoint:
    point.run_dir.mkdir(parents=True, exist_ok=False)
    pipeline = build_pipeline(run, RunLayout(point.run_dir))
    from hpcft.submit import write_run_files

    make_folders(point.run_dir, [*pipeline.files, *point.hydra_files])
    write_run_files(pipeline, point.config_yaml or config_yaml(point.cfg), write_new)
    for relpath, text in point.hydra_files.items():
        write_new(point.run_dir / relpath, text)
    return SweepPoint(point.num, point.overrides, point.cfg, pipeline)


def make_folders(root: Path, relpaths: Sequence[str]) -> None:
    """The folders of a new run directory's files, made before they are written (a file's
    open would otherwise fail first, once a folder)."""
    folders = {parent for relpath in relpaths for parent in PurePosixPath(relpath).parents}
    for folder in sorted(folders - {PurePosixPath()}):  # a folder before the folders in it
        (root / folder).mkdir()


def earlier_batches(sweep_dir: Path, batch: int) -> SweepRecord | None:
    """The sweep record of the batches launched before this one (a sweeper such as Optuna's,
    or `hydra.sweeper.max_batch_size`, launches a sweep in several batches)."""
    if batch == 0:
        if (sweep_dir / SWEEP_RECORD).exists():
            raise UserError(f"hydra.sweep.dir: {sweep_dir} already holds a sweep; choose a new folder")
        return None
    return read_sweep_record(sweep_dir)


def launch_sweep(points: Sequence[PointConfig], sweep_dir: Path, batch: int = 0, say: Printer = print) -> list[Path]:
    """Validate every point, then write their run directories and submit them as job arrays
    (or dry-run them, or run them here one after another). `batch` counts the sweeper's
    batches: each one is added to the same `sweep.json`. Returns the points' run directories."""
    if not points:
        return []
    runs = [check(point.cfg) for point in points]
    for point in points:
        refuse_in_sweep(point.cfg)
    check_point_dirs(points, sweep_dir)
    with run_umask(points[0].cfg.cluster.umask):
        return _launch_sweep(points, runs, sweep_dir, batch, say)


def _launch_sweep(
    points: Sequence[PointConfig], runs: Sequence[CheckedRun], sweep_dir: Path, batch: int, say: Printer
) -> list[Path]:
    earlier = earlier_batches(sweep_dir, batch)
    planned = [_planned(p, run) for p, run in zip(points, runs, strict=True)]
    first = planned[0].cfg
    if first.dry_run:
        print_array_plan(planned, sweep_dir, batch, say)
    elif first.cluster.executor is Executor.local:
        run_local_sweep(planned, sweep_dir, earlier, say)
    else:
        with secrets_withheld(first):
            sweep = submit_sweep(planned, sweep_dir, earlier)
        new_arrays = sweep.arrays[len(earlier.arrays) if earlier else 0 :]
        say(f"Submitted {len(planned)} points as {len(new_arrays)} job arrays:")
        for array in new_arrays:
            if array.tasks == 1 and len(array.points) > 1:
                say(f"  {array.stage:<7} job   {array.job_id} (one server for {len(array.points)} points)")
            else:
                say(f"  {array.stage:<7} array {array.job_id} ({array.tasks} tasks)")
        folder = shlex.quote(str(sweep_dir))
        say(f"Sweep directory: {folder}\nFollow: python -m hpcft status {folder}")
    return [p.pipeline.layout.root for p in planned]


def run_local_sweep(points: Sequence[SweepPoint], sweep_dir: Path, earlier: SweepRecord | None, say: Printer) -> None:
    """Run every point here, one after another, with the same records as a Slurm sweep:
    `sweep.json` (so `status` and `report` read the folder) and each point's overrides."""
    from hpcft.submit import run_local

    sweep_record(points, sweep_dir, [], "running", earlier).write(sweep_dir)
    for point in points:
        say(f"== point {point.num}: {' '.join(point.overrides)}")
        manifest = run_local(point.pipeline, point.cfg.cluster, say)
        manifest.sweep, manifest.overrides = str(sweep_dir), list(point.overrides)
        manifest.write(point.pipeline.layout.manifest)
    sweep_record(points, sweep_dir, [], "completed", earlier).write(sweep_dir)
    rows, params, metric_names = sweep_table(sweep_dir)
    say(markdown(rows, ["run", *params, *metric_names]).rstrip("\n"))
    folder = shlex.quote(str(sweep_dir))
    say(f"Sweep directory: {folder}\nReport: python -m hpcft report {folder}")


def print_array_plan(points: Sequence[SweepPoint], sweep_dir: Path, batch: int, say: Printer) -> None:
    """Write and show each array's script, named by batch, group and stage."""
    for i, group in enumerate(group_points(points)):
        nums = ",".join(str(p.num) for p in group.points)
        for stage in group.stage_names:
            script = render_array(group, stage, sweep_dir.name, sweep_dir / "slurm")
            path = sweep_dir / "dry_run" / f"batch{batch}.group{i}.{stage}.sbatch"
            write_atomic(path, script)
            what = f"{stage}, one job serving them all" if group.shared(stage) else stage
            say(f"# ---- array group {i} ({len(group.points)} points: {nums}) {what}: {path}\n{script}")
    say(f"Dry run: nothing submitted. Sweep directory: {sweep_dir}")
