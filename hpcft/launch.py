"""From typed configs to submitted (or dry-run, or locally run) pipelines.

The one path every front end takes: the command line (`hpcft.cli.run`) and the Python API
(`hpcft.api`) call `launch` for a run, and the Hydra launcher plugin (`hydra/launcher=hpcft`,
which `python -m hpcft -m` uses) calls `launch_sweep` for a sweep's points. Both validate
with the same checks, plan with `build_pipeline`, write the same run files and render with
the same functions; a sweep (`hpcft.sweep.launch`) only groups its points into job arrays.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hpcft.config.schema import Executor, HpcftConfig
from hpcft.configure import CheckedRun, check
from hpcft.manifest import Manifest
from hpcft.once import per_command
from hpcft.plan import Pipeline, build_pipeline, run_base_name
from hpcft.render import dependency_graph, placeholder_ids, render_sbatch
from hpcft.rundir import RunLayout, create_run_dir, new_run_dir, run_umask, write_atomic, yaml_text
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


def launch(cfg: HpcftConfig, say: Printer = print, run_dir: str | None = None) -> Launched:
    """Validate, create a new run directory (`run_dir`, Hydra's `hydra.run.dir`, else a new
    one under `run_root`), write the plan's files, then submit the stages to Slurm (returns
    at once) or run them here with the local executor (returns when done). Everything is
    created under the run's umask (`cluster.umask`), which the jobs inherit."""
    with per_command():
        run = check(cfg)
        with run_umask(cfg.cluster.umask):
            return _launch(run, say, run_dir)


def _launch(run: CheckedRun, say: Printer, run_dir: str | None) -> Launched:
    cfg = run.cfg
    layout = create_run_dir(cfg.run_root, run_base_name(cfg)) if run_dir is None else new_run_dir(run_dir, cfg.run_root)
    pipeline = build_pipeline(run, layout)
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
