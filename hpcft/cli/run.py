"""`python -m hpcft [--config-dir DIR] key=value ...`: validate, then submit (or dry-run) a pipeline.

Examples:
  python -m hpcft model=tiny_llama                       # train -> deploy -> eval on this machine
  python -m hpcft model=tiny_llama cluster=slurmlab      # the same as chained Slurm jobs
  python -m hpcft model=internlm2 cluster=8gpu dry_run=true
  python -m hpcft model=qwen2_5_7b cluster=2x8gpu trainset=/data/sft.json evalset=/data/eval.json \\
      framework.learning_rate=5e-5 framework.args.lr_scheduler_type=linear
  python -m hpcft --config-dir ~/site-conf model=llama3_8b cluster=mysite
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

from hpcft.config.compose import load_config
from hpcft.config.schema import Executor, HpcftConfig
from hpcft.config.validate import validate_config
from hpcft.errors import UserError
from hpcft.plan import Pipeline, build_pipeline, run_base_name
from hpcft.render import dependency_graph, placeholder_ids, render_sbatch
from hpcft.rundir import create_run_dir, write_atomic


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpcft",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="extra config folder searched before the shipped conf/ (e.g. your site's cluster/*.yaml)",
    )
    parser.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    parser.add_argument(
        "-m", "--multirun", action="store_true", help="sweep: submit every combination as Slurm job arrays"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: group=option or key=value")
    args, unknown = parser.parse_known_args(list(argv))
    if unknown:
        raise UserError(f"unknown option {unknown[0]!r}; overrides are written key=value (see --help)")
    return args


def config_yaml(cfg: HpcftConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def dry_run(pipeline: Pipeline, cfg: HpcftConfig) -> None:
    ids = placeholder_ids(pipeline)
    for stage in pipeline.stages:
        script = render_sbatch(pipeline, stage, cfg.cluster, ids)
        path = pipeline.layout.root / "dry_run" / f"{stage.name}.sbatch"
        write_atomic(path, script)
        print(f"# ---- {stage.name}: {path}\n{script}")
    for relpath, text in sorted(pipeline.files.items()):
        print(f"# ---- {relpath}\n{text}")
    print("# ---- dependencies (`<stage>` stands for its job id)")
    print(dependency_graph(pipeline))
    print(f"\nDry run: nothing submitted. Scripts and native configs in {pipeline.layout.root}")


def summary(manifest: dict[str, object], pipeline: Pipeline) -> str:
    stages = manifest["stages"]
    assert isinstance(stages, dict)
    ids = " ".join(f"{name}={info['job_id']}" for name, info in stages.items())
    root = pipeline.layout.root
    return "\n".join(
        [
            f"Submitted {pipeline.run_name}: {ids}",
            f"Run directory: {root}",
            f"Follow: python -m hpcft status {root} --watch 10   |   python -m hpcft logs {root} -f",
        ]
    )


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.multirun:
        from hpcft.cli import sweep

        return sweep.main(args.overrides, args.config_dir)
    cfg = load_config(args.overrides, args.config_dir)
    if args.cfg:
        print(config_yaml(cfg), end="")
        return 0
    validate_config(cfg)
    layout = create_run_dir(cfg.run_root, run_base_name(cfg))
    pipeline = build_pipeline(cfg, layout)
    from hpcft.submit import run_local, submit_slurm, write_run_files

    write_run_files(pipeline, config_yaml(cfg))
    for note in pipeline.notes:
        print(note)
    if cfg.dry_run:
        dry_run(pipeline, cfg)
        return 0
    if cfg.cluster.executor is Executor.slurm:
        manifest = submit_slurm(pipeline, cfg.cluster)
        print(summary(manifest, pipeline))
        return 0
    print(f"Running {pipeline.run_name} on this machine; run directory {layout.root}", flush=True)
    run_local(pipeline, cfg.cluster)
    if layout.metrics.exists():
        print(f"metrics ({layout.metrics}):\n{json.dumps(json.loads(layout.metrics.read_text()), indent=2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
