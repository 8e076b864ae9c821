"""`python -m hpcft [--config-dir DIR] key=value ...`: validate, then submit (or dry-run) a pipeline.

Examples:
  python -m hpcft model=tiny_llama                       # train -> deploy -> eval on this machine
  python -m hpcft model=tiny_llama cluster=slurmlab      # the same as chained Slurm jobs
  python -m hpcft model=internlm2 cluster=8gpu dry_run=true
  python -m hpcft model=qwen2_5_7b cluster=2x8gpu trainset=/data/sft.json evalset=/data/eval.json \\
      framework.learning_rate=5e-5 +framework.args.lr_scheduler_type=linear
  python -m hpcft --config-dir ~/site-conf model=llama3_8b cluster=mysite
  python -m hpcft -m model=tiny_llama cluster=slurmlab framework.learning_rate=1e-4,1e-3
  python -m hpcft -m model=tiny_llama cluster=slurmlab seed=1,2 --cfg   # each point's config; submits nothing
  python -m hpcft -m hydra/sweeper=optuna hydra.sweeper.n_trials=6 model=tiny_llama cluster=slurmlab \
      'framework.learning_rate=interval(1e-4,1e-2)'   # an Optuna study, in a controller job

Any native framework argument: +framework.args.<name>=<value> (checked against the
framework's own argument list), e.g. +framework.args.lr_scheduler_type=linear.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import shlex
import sys
from collections.abc import Sequence

from hpcft.config.compose import conf_dir
from hpcft.config.schema import Executor
from hpcft.configure import load_config
from hpcft.errors import UserError
from hpcft.launch import config_yaml, launch
from hpcft.results import comparison_table, read_metrics
from hpcft.rundir import RunLayout


def version() -> str:
    try:
        return importlib.metadata.version("hpcft")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def subcommands_text() -> str:
    """The day-2 subcommands, each with the first line of its own help."""
    from hpcft.cli import SUBCOMMANDS

    lines = ["", "Subcommands (python -m hpcft <subcommand> --help):"]
    for name in SUBCOMMANDS:
        doc = importlib.import_module(f"hpcft.cli.{name}").__doc__ or ""
        summary = " ".join(doc.split("\n\n")[0].split()).split(": ", 1)[-1].split("; ")[0].split(". ")[0]
        lines.append(f"  {name:<10} {summary}")
    return "\n".join(lines) + "\n"


def groups_text() -> str:
    """The config groups and their shipped options, for --help."""
    lines = ["", "Config groups (group=option; your own with --config-dir):"]
    for group in ("model", "framework", "cluster", "deepspeed"):
        options = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
        lines.append(f"  {group:<10} {', '.join(options)}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpcft",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(__doc__.split("\n\n", 1)[1] if __doc__ else "") + subcommands_text() + groups_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="extra config folder searched before the shipped conf/ (e.g. your site's cluster/*.yaml)",
    )
    parser.add_argument(
        "--cfg",
        nargs="?",
        const="job",
        metavar="{job,hydra,all}",
        help="print the composed config (job, the default) and exit; with -m, each point's; nothing is submitted",
    )
    parser.add_argument(
        "-m", "--multirun", action="store_true", help="sweep: submit every combination as Slurm job arrays"
    )
    parser.add_argument("--version", action="version", version=f"hpcft {version()}")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: group=option or key=value")
    args, unknown = parser.parse_known_intermixed_args(cfg_alone_is_job(argv))
    if unknown:
        raise UserError(f"unknown option {unknown[0]!r}; overrides are written key=value (see --help)")
    if args.cfg not in (None, *CFG_PARTS):
        raise UserError(f"--cfg {args.cfg}: one of {', '.join(CFG_PARTS)}")
    if args.cfg in ("hydra", "all"):
        raise UserError(
            f"--cfg {args.cfg}: hpcft prints its own config (--cfg job); a sweep's Hydra settings are written to"
            " its multirun.yaml and each point's .hydra/hydra.yaml (dry_run=true writes them, submitting nothing)"
        )
    return args


CFG_PARTS = ("job", "hydra", "all")
"""Hydra's `--cfg` parts; hpcft prints the job's."""


def cfg_alone_is_job(argv: Sequence[str]) -> list[str]:
    """`--cfg` followed by no part (an override, another option, nothing) means `--cfg job`:
    the override is not taken for its value."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--cfg" and (i + 1 == len(args) or args[i + 1] not in CFG_PARTS):
            args[i] = "--cfg=job"
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.multirun:
        from hpcft.cli import sweep

        return sweep.main(args.overrides, args.config_dir, show_config=args.cfg is not None)
    cfg = load_config(args.overrides, args.config_dir)
    if args.cfg is not None:
        print(config_yaml(cfg), end="")
        return 0
    layout = launch(cfg, say=lambda line: print(line, flush=True)).layout
    if cfg.dry_run or cfg.cluster.executor is Executor.slurm:
        return 0
    print(closing_summary(layout))
    return 0


def closing_summary(layout: RunLayout) -> str:
    """What a local run produced: base vs fine-tuned, and where the files are."""
    lines = []
    if metrics := read_metrics(layout.root):
        lines += ["", comparison_table(metrics)]
    lines += ["", f"run directory: {layout.root}"]
    for label, path in (
        ("loss curve", layout.loss_plot),
        ("metrics", layout.metrics),
        ("predictions", layout.predictions),
    ):
        if path.exists():
            lines.append(f"{label + ':':<13} {path}")
    lines.append(f"report:       python -m hpcft report {shlex.quote(str(layout.root))}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
