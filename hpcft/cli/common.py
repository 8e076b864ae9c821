"""Helpers shared by the day-2 subcommands: finding run directories."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from hpcft.errors import UserError


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


def sweep_runs(sweep_dir: Path) -> list[Path]:
    """The run directories of a sweep's points, in sweep order."""
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    return [Path(p["run_dir"]) for p in sweep["points"]]


def resolve_run_dirs(names: Sequence[str]) -> list[Path]:
    """The given run or sweep directories (a sweep stands for all its points), or the latest run."""
    if not names:
        return [latest_run(default_run_root())]
    runs = []
    for name in names:
        path = Path(name)
        if (path / "sweep.json").is_file():
            runs += sweep_runs(path)
        elif (path / "manifest.json").is_file():
            runs.append(path)
        else:
            raise UserError(f"{name}: not a run directory (no manifest.json) nor a sweep (no sweep.json)")
    return runs
