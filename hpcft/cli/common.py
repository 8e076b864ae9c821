"""Helpers shared by the day-2 subcommands: finding run directories."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hpcft.errors import UserError


def default_run_root() -> Path:
    return Path(os.environ.get("HPCFT_RUN_ROOT", "runs"))


def latest_run(run_root: Path) -> Path:
    runs = [p for p in run_root.glob("*/manifest.json")] if run_root.is_dir() else []
    if not runs:
        raise UserError(f"no runs under {run_root}; give a run directory")
    return max(runs, key=lambda p: p.stat().st_mtime).parent


def resolve_run_dirs(names: Sequence[str]) -> list[Path]:
    """The given run directories (each must hold a manifest), or the latest run."""
    if not names:
        return [latest_run(default_run_root())]
    runs = []
    for name in names:
        path = Path(name)
        if not (path / "manifest.json").is_file():
            raise UserError(f"{name}: not a run directory (no manifest.json)")
        runs.append(path)
    return runs
