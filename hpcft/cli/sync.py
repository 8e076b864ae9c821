"""`python -m hpcft sync [RUN_DIR ...]`: upload offline W&B runs from the login node.

Compute nodes without internet log W&B offline into the run directory; run this where
there is network. With no argument, the latest run under `runs/` (or $HPCFT_RUN_ROOT).

Examples:
  python -m hpcft sync                          # the latest run
  python -m hpcft sync runs/tiny_llama-llamafactory-20261128-101500-abc123
  python -m hpcft sync --dry-run runs/*         # list what would be uploaded
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hpcft.cli.common import resolve_run_dirs, subcommand_parser
from hpcft.errors import UserError


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("sync", __doc__)
    parser.add_argument("runs", nargs="*", help="run directories (default: the latest run)")
    parser.add_argument("--dry-run", action="store_true", help="list the offline runs, upload nothing")
    args = parser.parse_args(list(argv))
    found = [r for run in resolve_run_dirs(args.runs) for r in offline_runs(run)]
    if not found:
        print("No offline W&B runs found (was wandb.enabled=true with offline mode?)")
        return 0
    for path in found:
        print(path)
    if args.dry_run:
        return 0
    wandb = shutil.which("wandb") or str(Path(sys.executable).parent / "wandb")
    if not Path(wandb).exists():
        raise UserError("the `wandb` command is not installed here: pip install wandb")
    return subprocess.run([wandb, "sync", *map(str, found)], check=False).returncode
