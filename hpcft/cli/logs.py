"""`python -m hpcft logs [RUN_DIR] [--stage STAGE]`: a stage's log, its tail or followed.

Examples:
  python -m hpcft logs                          # the latest run's train log (stderr), last 50 lines
  python -m hpcft logs runs/r1 --stage eval -n 200
  python -m hpcft logs --stage train --rank 1   # the second node's task of a multi-node job
  python -m hpcft logs -f                       # follow, like tail -f (Ctrl-C to stop)
  python -m hpcft logs --stdout                 # stdout instead of stderr
  python -m hpcft logs runs/my-study            # an Optuna study's controller job, and why it stopped
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hpcft.cli.common import is_sweep, pointless_sweep, resolve_run_dirs, subcommand_parser
from hpcft.errors import UserError
from hpcft.manifest import read_manifest
from hpcft.rundir import tail
from hpcft.runstate import CONTROLLER
from hpcft.study import controller_cause, controller_of
from hpcft.sweep.results import sweep_runs


def log_path(run: Path, stage: str, rank: int, stream: str) -> Path:
    logs = read_manifest(run).logs_of(stage)
    if not logs:
        raise UserError(f"stage {stage!r} of {run.name} was never started, so it has no log")
    path = Path(logs[stream])
    # submitit names task logs <job>_<rank>_log.<ext>; the manifest records rank 0.
    return path.with_name(path.name.replace("_0_log.", f"_{rank}_log.")) if rank else path


def sweep_log(sweep: Path, stage: str | None, stream: str) -> tuple[Path, str | None]:
    """An Optuna study's controller log (a sweep folder names no one stage's log), and why the
    controller stopped if it says; a one-line error saying what the folder is otherwise."""
    record = controller_of(sweep)
    if record is None or stage not in (None, CONTROLLER):
        runs = sweep_runs(sweep)
        if stage == CONTROLLER:
            raise UserError(f"--stage {CONTROLLER}: {sweep} is a basic sweep; only an Optuna study has a controller")
        said = pointless_sweep(sweep) or (
            f"{sweep}: a sweep of {len(runs)} points, each with its own logs; give one of their folders"
            f" ({shlex.quote(str(runs[0]))} ...)"
        )
        raise UserError(said)
    if record.job_id is None or not record.logs:
        raise UserError(pointless_sweep(sweep) or f"{sweep}: the study's controller job was never submitted")
    return Path(record.logs[stream]), controller_cause(record)


def follow(path: Path, lines: int) -> None:
    print(tail(path, lines), flush=True)
    with open(path, encoding="utf-8", errors="replace") as f:
        f.seek(0, 2)
        while True:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.5)


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("logs", __doc__)
    parser.add_argument("run", nargs="?", help="run directory (default: the latest run)")
    parser.add_argument(
        "--stage", help="train, deploy or eval (default: train); controller: an Optuna study's controller job"
    )
    parser.add_argument("--rank", type=int, default=0, help="task (node) of a multi-node job (default: 0)")
    parser.add_argument("-n", "--lines", type=int, default=50, help="lines to show (default: 50)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    parser.add_argument("--stdout", action="store_true", help="show stdout instead of stderr")
    args = parser.parse_args(list(argv))
    stream, cause = "stdout" if args.stdout else "stderr", None
    if args.run and is_sweep(Path(args.run)):
        path, cause = sweep_log(Path(args.run), args.stage, stream)
    else:
        (run,) = resolve_run_dirs([args.run] if args.run else [])
        path = log_path(run, args.stage or "train", args.rank, stream)
    if not path.exists():
        raise UserError(
            f"{path}: no log"
            + (" (no such task: the job ran on fewer nodes)" if args.rank else " yet (the job has not started)")
        )
    print(f"==> {path} <==" + (f"\n{CONTROLLER} stopped: {cause}" if cause else ""), file=sys.stderr)
    if args.follow:
        try:
            follow(path, args.lines)
        except KeyboardInterrupt:
            return 0
    print(tail(path, args.lines))
    return 0
