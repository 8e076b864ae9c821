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
  python -m hpcft model=tiny_llama --cfg job --resolve --package framework   # one part, resolved
  python -m hpcft -m hydra/sweeper=optuna hydra.sweeper.n_trials=6 model=tiny_llama cluster=slurmlab \\
      'framework.learning_rate=interval(1e-4,1e-2)'   # an Optuna study, in a controller job

Any native framework argument: +framework.args.<name>=<value> (checked against the
framework's own argument list), e.g. +framework.args.lr_scheduler_type=linear.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from collections.abc import Sequence

from hpcft.cli import completion, hydra_flags
from hpcft.config.compose import compose_with_hydra
from hpcft.config.schema import Executor
from hpcft.configure import typed_config
from hpcft.errors import UserError
from hpcft.launch import launch
from hpcft.results import comparison_table, read_metrics
from hpcft.rundir import RunLayout


def version() -> str:
    import importlib.metadata  # only for --version: 40 ms of every submission otherwise

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


def groups_text(args: argparse.Namespace) -> str:
    """Every config group and its options, for --help: the shipped ones, `experiment`
    included, and the user's own (-cd, -cp, a `hydra.searchpath=` override)."""
    lines = ["", "Config groups (group=option; your own with --config-dir):"]
    return "\n".join([*lines, *hydra_flags.group_lines(args, args.overrides)])


HYDRA_FLAGS = """
Hydra's flags work as in any Hydra app: --cfg job|hydra|all [--resolve] [--package PKG],
--info [all|config|defaults|defaults-tree|plugins|searchpath], --hydra-help, -cp/-cn/-cd;
with -m they print (each point's config, the sweep's info) and submit nothing.
Tab completion: eval "$(python -m hpcft -sc install=bash)"
"""


def parser(epilog: str = "") -> argparse.ArgumentParser:
    doc = __doc__ or ""
    return hydra_flags.args_parser(
        prog="python -m hpcft",
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1] + HYDRA_FLAGS + epilog,
        version=f"hpcft {version()}",
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    try:
        args, unknown = parser().parse_known_intermixed_args(hydra_flags.cfg_alone_is_job(argv))
    except argparse.ArgumentError as e:
        raise UserError(str(e)) from None
    if unknown:
        raise UserError(f"unknown option {unknown[0]!r}; overrides are written key=value (see --help)")
    hydra_flags.check_flags(args)
    return args


def shown(args: argparse.Namespace) -> int | None:
    """What Hydra's flags print instead of running (None: nothing to show, run)."""
    if args.help:
        print(parser(subcommands_text() + groups_text(args)).format_help(), end="")
        return 0
    if args.shell_completion:
        return completion.shell_completion(args, args.overrides, parse_args)
    if args.hydra_help:
        with hydra_flags.hpcft_app(args) as app:
            app.hydra_help(config_name=hydra_flags.primary(args).name, args_parser=parser(), args=args)
        return 0
    if args.cfg is None and args.info is None:
        return None
    if args.multirun:
        return hydra_flags.show_sweep(args)
    with hydra_flags.hpcft_app(args) as app:
        overrides = hydra_flags.with_framework(args.overrides, args)
        if args.cfg is not None:
            hydra_flags.show_cfg(app, args, overrides)
        else:
            hydra_flags.show_info(app, args, overrides, multirun=False)
    return 0


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if (code := shown(args)) is not None:
        return code
    if args.multirun:
        return sweep_main(args)
    try:
        app_cfg, settings = compose_with_hydra(args.overrides, args.config_dir, hydra_flags.primary(args))
    except UserError:
        if not hydra_flags.multirun_mode(args):  # a sweep in a run, unless a config says hydra.mode=MULTIRUN
            raise
        return sweep_main(args)
    if settings.multirun:  # hydra.mode=MULTIRUN (a config's, an override's; --run too): a sweep, as in Hydra
        return sweep_main(args)
    cfg = typed_config(app_cfg)
    layout = launch(cfg, say=lambda line: print(line, flush=True), run_dir=settings.run_dir).layout
    if cfg.dry_run or cfg.cluster.executor is Executor.slurm:
        return 0
    print(closing_summary(layout))
    return 0


def sweep_main(args: argparse.Namespace) -> int:
    from hpcft.cli import sweep

    return sweep.main(args.overrides, args.config_dir, hydra_flags.primary(args))


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
