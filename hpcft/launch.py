"""From typed configs to submitted (or dry-run, or locally run) pipelines.

The one path every front end takes: the command line (`hpcft.cli.run`) and the Python API
(`hpcft.api`) call `launch` for a run, and the Hydra launcher plugin (`hydra/launcher=hpcft`,
which `python -m hpcft -m` uses) calls `launch_sweep` for a sweep's points. Both validate
with the same checks, plan with `build_pipeline`, write the same run files and render with
the same functions; a sweep only groups its points into job arrays (`hpcft.sweep`).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hpcft.config.schema import Executor, HpcftConfig
from hpcft.config.secrets import check_secret, environment_secrets
from hpcft.configure import validate_config
from hpcft.errors import UserError
from hpcft.manifest import Manifest
from hpcft.plan import Pipeline, build_pipeline, run_base_name
from hpcft.render import dependency_graph, placeholder_ids, render_sbatch
from hpcft.rundir import RunLayout, create_run_dir, run_umask, write_atomic, write_json_atomic, yaml_text
from hpcft.sweep import SweepPoint, group_points, render_array, submit_sweep, sweep_record
from hpcft.sweep_results import markdown, sweep_table
from hpcft.tracking import secrets_withheld

Printer = Callable[[str], None]


@dataclass(frozen=True)
class Launched:
    """What `launch` did: the run directory and its manifest (`status: dry_run` for a dry run)."""

    layout: RunLayout
    manifest: Manifest


def config_yaml(cfg: HpcftConfig) -> str:
    """The resolved config as YAML (what `config.yaml` holds and `--cfg` prints). Dumped from
    the dataclasses directly: going through OmegaConf costs ~40 ms a config, most of a
    sweep's time per point."""
    return yaml_text(_plain(dataclasses.asdict(cfg)))


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def dry_run(pipeline: Pipeline, cfg: HpcftConfig, say: Printer) -> None:
    ids = placeholder_ids(pipeline)
    for stage in pipeline.stages:
        script = render_sbatch(pipeline, stage, cfg.cluster, ids)
        path = pipeline.layout.root / "dry_run" / f"{stage.name}.sbatch"
        write_atomic(path, script)
        say(f"# ---- {stage.name}: {path}\n{script}")
    for relpath, text in sorted(pipeline.files.items()):
        say(f"# ---- {relpath}\n{text}")
    say("# ---- dependencies (`<stage>` stands for its job id)")
    say(dependency_graph(pipeline))
    say(f"\nDry run: nothing submitted. Scripts and native configs in {pipeline.layout.root}")


def summary(manifest: Manifest, pipeline: Pipeline) -> str:
    ids = " ".join(f"{name}={record.job_id}" for name, record in manifest.stages.items())
    root = shlex.quote(str(pipeline.layout.root))  # the lines are pasted into a shell
    return "\n".join(
        [
            f"Submitted {pipeline.run_name}: {ids}",
            f"Run directory: {root}",
            f"Follow: python -m hpcft status {root} --watch 10   |   python -m hpcft logs {root} -f",
        ]
    )


def launch(cfg: HpcftConfig, say: Printer = print) -> Launched:
    """Validate, create a new run directory, write the plan's files, then submit the stages
    to Slurm (returns at once) or run them here with the local executor (returns when done).
    Everything is created under the run's umask (`cluster.umask`), which the jobs inherit."""
    validate_config(cfg)
    with run_umask(cfg.cluster.umask):
        return _launch(cfg, say)


def _launch(cfg: HpcftConfig, say: Printer) -> Launched:
    layout = create_run_dir(cfg.run_root, run_base_name(cfg))
    pipeline = build_pipeline(cfg, layout)
    from hpcft.submit import new_manifest, run_local, submit_slurm, write_run_files

    write_run_files(pipeline, config_yaml(cfg))
    for note in pipeline.notes:
        say(note)
    if cfg.dry_run:
        dry_run(pipeline, cfg, say)
        manifest = new_manifest(pipeline, cfg.cluster.executor.value)
        manifest.status = "dry_run"
        manifest.write(layout.manifest)
        return Launched(layout, manifest)
    if cfg.cluster.executor is Executor.slurm:
        with secrets_withheld(cfg):
            manifest = submit_slurm(pipeline, cfg.cluster)
        say(summary(manifest, pipeline))
        return Launched(layout, manifest)
    say(f"Running {pipeline.run_name} on this machine; run directory {layout.root}")
    return Launched(layout, run_local(pipeline, cfg.cluster, say))


@dataclass(frozen=True, kw_only=True)
class PointConfig:
    """One point of a sweep, as the launcher plugin composed it."""

    num: int
    """Hydra's `hydra.job.num`: the point's index in the whole sweep (over all batches)."""
    overrides: tuple[str, ...]
    """The point's overrides, without Hydra's own (`hydra.*`)."""
    cfg: HpcftConfig
    run_dir: Path
    """`${hydra.sweep.dir}/${hydra.sweep.subdir}` as Hydra resolves it for this point."""
    hydra_files: Mapping[str, str] = field(default_factory=dict)
    """Hydra's record of the point (`.hydra/config.yaml`, ...): run-dir path -> text."""


def check_point_dirs(points: Sequence[PointConfig], sweep_dir: Path) -> None:
    """Every point needs a new folder of its own inside the sweep folder: two points in one
    folder, or an existing one, would mix or overwrite runs. Folder names become job names:
    no secret in them."""
    known = environment_secrets()
    check_secret("hydra.sweep.dir", str(sweep_dir), known)
    seen: dict[Path, int] = {}
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
        if sweep_dir.resolve() not in p.run_dir.resolve().parents:
            raise UserError(f"hydra.sweep.subdir: point {p.num}'s folder {p.run_dir} is outside {sweep_dir}")
        if p.run_dir.exists():
            raise UserError(f"hydra.sweep.subdir: {p.run_dir} exists; runs are never overwritten")


def _planned(point: PointConfig) -> SweepPoint:
    point.run_dir.mkdir(parents=True, exist_ok=False)
    pipeline = build_pipeline(point.cfg, RunLayout(point.run_dir))
    from hpcft.submit import write_run_files

    write_run_files(pipeline, config_yaml(point.cfg))
    for relpath, text in point.hydra_files.items():
        write_atomic(point.run_dir / relpath, text)
    return SweepPoint(point.num, point.overrides, point.cfg, pipeline)


def earlier_batches(sweep_dir: Path, batch: int) -> dict[str, Any] | None:
    """The sweep record of the batches launched before this one (a sweeper such as Optuna's,
    or `hydra.sweeper.max_batch_size`, launches a sweep in several batches)."""
    path = sweep_dir / "sweep.json"
    if batch == 0:
        if path.exists():
            raise UserError(f"hydra.sweep.dir: {sweep_dir} already holds a sweep; choose a new folder")
        return None
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def launch_sweep(points: Sequence[PointConfig], sweep_dir: Path, batch: int = 0, say: Printer = print) -> list[Path]:
    """Validate every point, then write their run directories and submit them as job arrays
    (or dry-run them, or run them here one after another). `batch` counts the sweeper's
    batches: each one is added to the same `sweep.json`. Returns the points' run directories."""
    if not points:
        return []
    for point in points:
        validate_config(point.cfg)
    check_point_dirs(points, sweep_dir)
    with run_umask(points[0].cfg.cluster.umask):
        return _launch_sweep(points, sweep_dir, batch, say)


def _launch_sweep(points: Sequence[PointConfig], sweep_dir: Path, batch: int, say: Printer) -> list[Path]:
    earlier = earlier_batches(sweep_dir, batch)
    planned = [_planned(p) for p in points]
    first = planned[0].cfg
    if first.dry_run:
        print_array_plan(planned, sweep_dir, batch, say)
    elif first.cluster.executor is Executor.local:
        run_local_sweep(planned, sweep_dir, earlier, say)
    else:
        with secrets_withheld(first):
            sweep = submit_sweep(planned, sweep_dir, earlier)
        new_arrays = sweep["arrays"][len(earlier["arrays"]) if earlier else 0 :]
        say(f"Submitted {len(planned)} points as {len(new_arrays)} job arrays:")
        for array in new_arrays:
            if array["tasks"] == 1 and len(array["points"]) > 1:
                say(f"  {array['stage']:<7} job   {array['job_id']} (one server for {len(array['points'])} points)")
            else:
                say(f"  {array['stage']:<7} array {array['job_id']} ({array['tasks']} tasks)")
        folder = shlex.quote(str(sweep_dir))
        say(f"Sweep directory: {folder}\nFollow: python -m hpcft status {folder}")
    return [p.pipeline.layout.root for p in planned]


def run_local_sweep(
    points: Sequence[SweepPoint], sweep_dir: Path, earlier: dict[str, Any] | None, say: Printer
) -> None:
    """Run every point here, one after another, with the same records as a Slurm sweep:
    `sweep.json` (so `status` and `report` read the folder) and each point's overrides."""
    from hpcft.submit import run_local

    write_json_atomic(sweep_dir / "sweep.json", sweep_record(points, sweep_dir, [], "running", earlier))
    for point in points:
        say(f"== point {point.num}: {' '.join(point.overrides)}")
        manifest = run_local(point.pipeline, point.cfg.cluster, say)
        manifest.sweep, manifest.overrides = str(sweep_dir), list(point.overrides)
        manifest.write(point.pipeline.layout.manifest)
    write_json_atomic(sweep_dir / "sweep.json", sweep_record(points, sweep_dir, [], "completed", earlier))
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
