"""`python -m hpcft -m key=a,b other=range(1,4) ...`: a Hydra multirun, submitted as job arrays.

Hydra expands the sweep (its basic sweeper: lists, `range()`, `choice()`, `glob()`), and
hpcft's launcher plugin (`hydra/launcher=hpcft`) validates every point, gives each its own
run directory under the sweep folder, and submits one array per stage and resource shape.

Examples:
  python -m hpcft -m model=tiny_llama cluster=slurmlab framework.learning_rate=1e-3,1e-4 \\
      framework.lora_rank=4,8,16
  python -m hpcft -m model=qwen2_5_7b,qwen2_5_72b cluster=2x8gpu deepspeed=zero3 dry_run=true
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from hpcft.config.compose import compose_config, conf_dir, to_typed
from hpcft.config.overrides import hydra_value
from hpcft.config.schema import Executor, HpcftConfig, ModelKind
from hpcft.config.validate import validate_config
from hpcft.errors import UserError
from hpcft.frameworks import default_framework
from hpcft.plan import build_pipeline, run_base_name
from hpcft.rundir import RunLayout, new_run_name, write_atomic, write_json_atomic
from hpcft.sweep import SweepPoint, group_points, render_array, submit_sweep, sweep_record
from hpcft.tracking import secrets_withheld

Point = tuple[int, tuple[str, ...], HpcftConfig, Path]


def first_values(overrides: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The overrides with each sweep reduced to its first value, and every swept key's values."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    single, swept = [], {}
    for o in parsed:
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            swept[o.get_key_element()] = values
            single.append(f"{o.get_key_element()}={values[0]}")
        else:
            single.append(str(o.input_line))
    return single, swept


def chosen_framework(overrides: Sequence[str], config_dirs: Sequence[str]) -> tuple[HpcftConfig, str | None]:
    """A representative config, and the framework to add when the user named none (it follows
    the model kind, which must then be the same for every swept model)."""
    single, swept = first_values(overrides)
    cfg = to_typed(compose_config(single, config_dirs))
    if any(o.lstrip("+~").split("=")[0] == "framework" for o in overrides):
        return cfg, None
    kinds = {to_typed(compose_config([*single, f"model={m}"], config_dirs)).model.kind for m in swept.get("model", [])}
    if len(kinds | {cfg.model.kind}) > 1:
        raise UserError("framework: the swept models are of different kinds; sweep them separately")
    return cfg, default_framework(ModelKind(cfg.model.kind))


def main(overrides: Sequence[str], config_dirs: Sequence[str]) -> int:
    import hydra

    cfg, framework = chosen_framework(overrides, config_dirs)
    sweep_dir = Path(cfg.run_root).expanduser().resolve() / new_run_name(f"{run_base_name(cfg)}-sweep")
    extra = [f"framework={framework}"] if framework else []
    if config_dirs:
        extra.append("hydra.searchpath=" + hydra_value([f"file://{Path(d).resolve()}" for d in config_dirs]))
    argv = [
        "hpcft",
        "--multirun",
        *overrides,
        *extra,
        "hydra/launcher=hpcft",
        "hydra/sweeper=hpcft",
        f"hydra.sweep.dir={hydra_value(str(sweep_dir))}",
        "hydra.sweep.subdir=${hydra.job.num}",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]

    @hydra.main(config_path=str(conf_dir()), config_name="hpcft", version_base="1.3")
    def app(_: object) -> None:  # never called: the launcher submits jobs instead
        raise AssertionError("hpcft's launcher does not run the task function")

    os.environ["HYDRA_FULL_ERROR"] = "1"  # let UserError through to the CLI's one-line report
    saved, sys.argv = sys.argv, argv
    try:
        app()
    finally:
        sys.argv = saved
    return 0


def launch_points(points: Sequence[Point], sweep_dir: Path) -> list[Path]:
    """Validate every point, then write run directories and submit (or dry-run, or run locally)."""
    for _, _, cfg, _ in points:
        validate_config(cfg)
    sweep_points = []
    for num, overrides, cfg, out_dir in points:
        out_dir.mkdir(parents=True, exist_ok=False)  # a new sweep folder: never overwritten
        pipeline = build_pipeline(cfg, RunLayout(out_dir))
        from hpcft.launch import config_yaml
        from hpcft.submit import write_run_files

        write_run_files(pipeline, config_yaml(cfg))
        write_atomic(out_dir / "overrides.txt", "\n".join(overrides) + "\n")
        sweep_points.append(SweepPoint(num, overrides, cfg, pipeline))
    first = sweep_points[0].cfg
    if first.dry_run:
        print_array_plan(sweep_points, sweep_dir)
    elif first.cluster.executor is Executor.local:
        run_local_sweep(sweep_points, sweep_dir)
    else:
        with secrets_withheld(first):
            sweep = submit_sweep(sweep_points, sweep_dir)
        print(f"Submitted {len(sweep_points)} points as {sweep['sbatch_calls']} job arrays:")
        for array in sweep["arrays"]:
            print(f"  {array['stage']:<7} array {array['job_id']} ({array['tasks']} tasks)")
        print(f"Sweep directory: {sweep_dir}\nFollow: python -m hpcft status {sweep_dir}")
    return [p.pipeline.layout.root for p in sweep_points]


def run_local_sweep(points: Sequence[SweepPoint], sweep_dir: Path) -> None:
    """Run every point here, one after another, with the same records as a Slurm sweep:
    `sweep.json` (so `status` and `report` read the folder) and each point's overrides."""
    from hpcft.cli.report import markdown, sweep_table
    from hpcft.submit import run_local

    write_json_atomic(sweep_dir / "sweep.json", sweep_record(points, sweep_dir, [], "running"))
    for point in points:
        print(f"== point {point.num}: {' '.join(point.overrides)}", flush=True)
        manifest = run_local(point.pipeline, point.cfg.cluster)
        manifest.update(sweep=str(sweep_dir), overrides=list(point.overrides))
        write_json_atomic(point.pipeline.layout.manifest, manifest)
    write_json_atomic(sweep_dir / "sweep.json", sweep_record(points, sweep_dir, [], "completed"))
    rows, params, metric_names = sweep_table(sweep_dir)
    print(markdown(rows, ["run", *params, *metric_names]), end="")
    print(f"Sweep directory: {sweep_dir}\nReport: python -m hpcft report {sweep_dir}")


def print_array_plan(points: Sequence[SweepPoint], sweep_dir: Path) -> None:
    for i, group in enumerate(group_points(points)):
        nums = ",".join(str(p.num) for p in group.points)
        for stage in group.stage_names:
            script = render_array(group, stage, sweep_dir.name, sweep_dir / "slurm")
            path = sweep_dir / "dry_run" / f"group{i}.{stage}.sbatch"
            write_atomic(path, script)
            print(f"# ---- array group {i} ({len(group.points)} points: {nums}) {stage}: {path}\n{script}")
    print(f"Dry run: nothing submitted. Sweep directory: {sweep_dir}")
