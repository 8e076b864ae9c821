"""Helpers shared by the day-2 subcommands: finding run directories."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from hpcft.errors import UserError
from hpcft.study import controller_cause, controller_of
from hpcft.sweep.results import sweep_runs


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


def is_sweep(path: Path) -> bool:
    return any((path / name).is_file() for name in ("sweep.json", "multirun.yaml", "controller.json"))


def pointless_sweep(sweep: Path) -> str | None:
    """What a sweep folder with no point recorded (no sweep.json) is, and what to do with it;
    None for a sweep with points."""
    if (sweep / "sweep.json").is_file():
        return None
    folder = shlex.quote(str(sweep))
    record = controller_of(sweep)
    if record is not None and record.job_id is None:
        return (
            f"{sweep}: a dry-run Optuna study, nothing was submitted (controller.json); submit it without dry_run=true"
        )
    if record is not None:
        cause = controller_cause(record)
        said = (
            f"its controller (job {record.job_id}) stopped: {cause}"
            if cause
            else (f"its controller (job {record.job_id}) has submitted no trial yet")
        )
        return (
            f"{sweep}: an Optuna study with no trial yet; {said}; see python -m hpcft status {folder}"
            f" and python -m hpcft logs {folder} --stage controller"
        )
    if (sweep / "dry_run").is_dir():
        return (
            f"{sweep}: a dry-run sweep, nothing was submitted (its job scripts are in {sweep / 'dry_run'});"
            " submit it without dry_run=true"
        )
    return (
        f"{sweep}: a sweep whose submission stopped before any point was recorded (no sweep.json);"
        f" python -m hpcft status {folder} finds its jobs by name, python -m hpcft cancel {folder} cancels them"
    )


def resolve_targets(names: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """(runs, sweeps) named on the command line (a sweep stands for all its points), or the
    latest run."""
    if not names:
        return [latest_run(default_run_root())], []
    runs, sweeps = [], []
    for name in names:
        path = Path(name)
        if is_sweep(path):
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
