"""Helpers shared by the day-2 subcommands: finding run directories."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from hpcft.errors import UserError
from hpcft.sweep_results import sweep_runs


def subcommand_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser whose description is the module docstring's first paragraph and whose epilog
    (the examples) is the rest."""
    head, _, rest = (doc or "").partition("\n\n")
    return argparse.ArgumentParser(
        prog=f"python -m hpcft {name}",
        description=head,
        epilog=rest,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def default_run_root() -> Path:
    return Path(os.environ.get("HPCFT_RUN_ROOT", "runs"))


def latest_run(run_root: Path) -> Path:
    runs = [p for p in run_root.glob("*/manifest.json")] if run_root.is_dir() else []
    if not runs:
        raise UserError(f"no runs under {run_root}; give a run directory")
    return max(runs, key=lambda p: p.stat().st_mtime).parent


def _is_run(path: Path) -> bool:
    """A run directory, even one whose manifest is missing or corrupt."""
    return any((path / name).exists() for name in ("manifest.json", "config.yaml", "native"))


def _is_sweep(path: Path) -> bool:
    return any((path / name).is_file() for name in ("sweep.json", "multirun.yaml", "controller.json"))


def resolve_targets(names: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """(runs, sweeps) named on the command line (a sweep stands for all its points), or the
    latest run."""
    if not names:
        return [latest_run(default_run_root())], []
    runs, sweeps = [], []
    for name in names:
        path = Path(name)
        if _is_sweep(path):
            runs += sweep_runs(path)
            sweeps.append(path)
        elif _is_run(path):
            runs.append(path)
        else:
            raise UserError(f"{name}: not a run directory (no manifest.json) nor a sweep (no sweep.json)")
    return runs, sweeps


def resolve_run_dirs(names: Sequence[str]) -> list[Path]:
    """The given run or sweep directories (a sweep stands for all its points), or the latest run."""
    return resolve_targets(names)[0]
