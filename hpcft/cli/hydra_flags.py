"""Hydra's command-line flags, as any `@hydra.main` app has them, done by Hydra's own app object:
`--cfg job|hydra|all` (with `--resolve` and `--package`), `--info [all|config|defaults|
defaults-tree|plugins|searchpath]`, `--hydra-help`, `-sc install=bash|query=bash`, and
`-cp/--config-path`, `-cn/--config-name`, `-cd/--config-dir` for the config they read.

hpcft's own additions: `--config-dir` may be given more than once; `--cfg` alone means
`--cfg job`; with `-m`, `--cfg` prints each point's config and `--info` the sweep's, and
nothing is submitted (Hydra itself refuses `-m` with them). `framework` follows the model's
kind when not given, for these flags as for a run. Private Hydra APIs used here are the ones
`_run_hydra` (what `@hydra.main` calls) uses; tests/test_architecture.py pins their shape.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from hydra import version
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path, get_args_parser
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import Container, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpcft.config.compose import Primary, implied_framework, register_all_schemas
from hpcft.configure import hydra_error
from hpcft.errors import UserError

CFG_PARTS = ("job", "hydra", "all")
"""Hydra's `--cfg` parts."""
INFO_PARTS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
"""Hydra's `--info` parts."""


def args_parser(prog: str, description: str, epilog: str, version: str) -> argparse.ArgumentParser:
    """Hydra's own argument parser, with hpcft's changes: `--config-dir` repeatable, `--cfg`'s
    part optional (`job`), `--version` hpcft's."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[get_args_parser()],
        add_help=False,
        conflict_handler="resolve",
        exit_on_error=False,
    )
    parser.add_argument("--version", action="version", version=version, help="show hpcft's version and exit")
    _hpcft_options(parser)
    return parser


def _hpcft_options(parser: argparse.ArgumentParser) -> None:
    """The options hpcft states its own way (replacing Hydra's of the same name)."""
    parser.add_argument(
        "--config-dir",
        "-cd",
        action="append",
        default=[],
        metavar="DIR",
        help="a config folder searched after the shipped conf/ (your site's cluster/*.yaml, experiments); repeatable",
    )
    parser.add_argument(
        "--config-path",
        "-cp",
        metavar="DIR",
        help="the folder of the primary config, searched first (conf/ is searched after it)",
    )
    parser.add_argument(
        "--config-name", "-cn", metavar="NAME", help="the primary config (default: hpcft, conf/hpcft.yaml)"
    )
    parser.add_argument(
        "--shell-completion",
        "-sc",
        action="store_true",
        help='tab completion: eval "$(python -m hpcft -sc install=bash)" (uninstall=bash to remove; zsh too)',
    )
    parser.add_argument(
        "--cfg",
        "-c",
        nargs="?",
        const="job",
        metavar="{job,hydra,all}",
        help="print the config (job, the default; hydra; all) instead of running; with -m, each point's",
    )


def cfg_alone_is_job(argv: Sequence[str]) -> list[str]:
    """`--cfg` followed by no part (an override, another option, nothing) means `--cfg job`,
    `--info` alone `--info all`: the override is not taken for its value."""
    args = list(argv)
    for i, arg in enumerate(args):
        for flags, parts in ((("--cfg", "-c"), CFG_PARTS), (("--info", "-i"), INFO_PARTS)):
            if arg in flags and (i + 1 == len(args) or args[i + 1] not in parts):
                args[i] = f"{flags[0]}={parts[0]}"
    return args


def check_flags(args: argparse.Namespace) -> None:
    """What Hydra refuses among its flags, as one line each."""
    if args.cfg not in (None, *CFG_PARTS):
        raise UserError(f"--cfg {args.cfg}: one of {', '.join(CFG_PARTS)}")
    if args.resolve and args.cfg is None and not args.help:
        raise UserError("--resolve: only with --cfg or --help (Hydra's rule)")
    if args.package is not None and args.cfg is None:
        raise UserError("--package: only with --cfg")
    commands = (("--run", args.run), ("--cfg", args.cfg), ("--info", args.info), ("-sc", args.shell_completion))
    shown = [flag for flag, on in commands if on]
    if args.run and args.multirun:
        shown.append("-m")
    if len(shown) > 1:
        raise UserError(f"{' and '.join(shown)}: one at a time")
    if args.experimental_rerun is not None:
        raise UserError("--experimental-rerun: hpcft's runs are rerun with python -m hpcft; it does not rerun a pickle")


def primary(args: argparse.Namespace) -> Primary:
    return Primary(name=args.config_name or "hpcft", path=args.config_path)


def searched_dirs(args: argparse.Namespace) -> list[str]:
    """The folders searched beside the primary config's: -cd's, then conf/ under -cp."""
    return primary(args).searched(args.config_dir)


@contextmanager
def hpcft_app(args: argparse.Namespace) -> Iterator[Hydra]:
    """Hydra's app for hpcft's config, its search path as `@hydra.main` builds it: the primary
    folder (`-cp`, else conf/), then each `-cd` folder (prepended before the schemas, as Hydra
    does), then conf/ under `-cp`. Its errors are one line."""
    register_all_schemas()
    GlobalHydra.instance().clear()
    version.setbase("1.3")  # as hpcft's compositions (and `@hydra.main(version_base="1.3")`)
    try:
        search_path = create_config_search_path(primary(args).folder())
        for folder in searched_dirs(args):
            search_path.prepend(provider="command-line", path=f"file://{folder}", anchor=SearchPathQuery("schema"))
        yield Hydra.create_main_hydra2(task_name="hpcft", config_search_path=search_path)
    except UserError:
        raise
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise hydra_error(e) from None
    finally:
        GlobalHydra.instance().clear()


def with_framework(overrides: Sequence[str], args: argparse.Namespace) -> list[str]:
    """The overrides, and the framework the model's kind implies where they choose none."""
    return [*overrides, *implied_framework(overrides, args.config_dir, primary(args))]


def show_cfg(app: Hydra, args: argparse.Namespace, overrides: Sequence[str]) -> None:
    """Hydra's `show_cfg`, step for step; a package not in the config is one line, exit 2."""
    cfg = app.compose_config(
        config_name=primary(args).name, overrides=list(overrides), run_mode=RunMode.RUN, with_log_configuration=False
    )
    HydraConfig.instance().set_config(cfg)
    OmegaConf.set_readonly(cfg.hydra, None)
    cfg = app.get_sanitized_cfg(cfg, args.cfg)
    package = None if args.package == "_global_" else args.package
    shown = cfg if package is None else OmegaConf.select(cfg, package)
    if shown is None:
        raise UserError(f"--package {package}: not in the config")
    if not isinstance(shown, Container):
        print(shown)
        return
    if package is not None:
        print(f"# @package {package}")
    if args.resolve:
        OmegaConf.resolve(shown)
    sys.stdout.write(OmegaConf.to_yaml(shown))


def show_info(app: Hydra, args: argparse.Namespace, overrides: Sequence[str], multirun: bool) -> None:
    """Hydra's `show_info`; the logging it sets up to print (to stdout, DEBUG) is undone after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        app.show_info(
            args.info,
            config_name=primary(args).name,
            overrides=list(overrides),
            run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def group_lines(args: argparse.Namespace, overrides: Sequence[str]) -> list[str]:
    """Every config group but Hydra's own, with its options (hpcft's schemas `base_*` are none):
    the shipped ones, the primary config's, -cd's and those of a `hydra.searchpath=` override."""
    extra = [item.split("=", 1)[1] for item in overrides if item.startswith("hydra.searchpath=")]
    folders = [d for value in extra for d in _listed(value)]
    args = argparse.Namespace(**{**vars(args), "config_dir": [*args.config_dir, *folders]})
    with hpcft_app(args) as app:
        groups = sorted(g for g in app.list_all_config_groups() if not g.startswith("hydra"))
        loader = app.config_loader
        lines = []
        for group in groups:
            options = [o for o in sorted(loader.get_group_options(group)) if not o.startswith("base_")]
            if options:
                lines.append(f"  {group:<10} {', '.join(options)}")
    return lines


def _listed(value: str) -> list[str]:
    """A `hydra.searchpath` value's folders (`[file:///a,/b]`, one or a list)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"hydra.searchpath={value}").value()
    folders = parsed if isinstance(parsed, list) else [parsed]
    return [str(f).removeprefix("file://") for f in folders if not str(f).startswith("pkg://")]


def show_sweep(args: argparse.Namespace) -> int:
    """`-m --cfg`: each point's config as `--cfg` prints a single run's, points in the order
    Hydra's basic sweeper makes them, one YAML document each; `-m --info`: the sweep's, as
    Hydra composes it for a multirun. Nothing is written or submitted."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from hpcft.cli.sweep import app_overrides, expanded_globs, first_values, lines_of, parsed_overrides
    from hpcft.sweep.adaptive import is_adaptive
    from hpcft.sweep.parse import LineParser

    parser = LineParser()
    parsed = expanded_globs(parsed_overrides(args.overrides, parser), args.config_dir, parser)
    overrides = lines_of(parsed)
    if args.info is not None:
        single, _ = first_values(app_overrides(parsed))
        with hpcft_app(args) as app:
            show_info(app, args, [*overrides, *implied_framework(single, args.config_dir, primary(args))], True)
        return 0
    if is_adaptive(overrides):
        raise UserError("--cfg: an Optuna study picks its trials as it runs; --cfg prints a basic sweep's points")
    fixed = [str(o.input_line) for o in parsed if o.is_hydra_override() and not o.is_sweep_override()]
    try:
        (points,) = BasicSweeper.split_arguments([o for o in parsed if not o.is_hydra_override()], None)
    except HydraException as e:
        raise hydra_error(e) from None
    with hpcft_app(args) as app:
        for num, point in enumerate(points):
            print(f"{'---' + chr(10) if num else ''}# point {num}: {' '.join(point)}")
            show_cfg(app, args, [*with_framework(point, args), *fixed])
    return 0


def multirun_mode(args: argparse.Namespace) -> bool:
    """Whether the configs and the overrides set `hydra.mode=MULTIRUN`, read as `@hydra.main`
    reads it (Hydra's `get_mode`: a multirun composition, sweeps allowed)."""
    if not any("=" in o and ("," in o or "(" in o) for o in args.overrides):
        return False  # no sweep among the overrides: the run's own composition said the mode
    with hpcft_app(args) as app:
        return bool(app.get_mode(config_name=primary(args).name, overrides=list(args.overrides)) == RunMode.MULTIRUN)
