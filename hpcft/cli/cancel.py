"""`python -m hpcft cancel [RUN_DIR ...] [--stage STAGE]`: cancel runs, or a stage and the
stages after it, with one `scancel` for everything; the manifests record it. Jobs named
after a run that its record does not list (a submission killed mid-way) are cancelled too.
A sweep's cancel is said in one line (its jobs counted by stage), not one line per job.

Examples:
  python -m hpcft cancel                      # the latest run, all stages
  python -m hpcft cancel runs/*               # every run
  python -m hpcft cancel runs/r1 --stage deploy   # deploy and eval; train goes on
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from hpcft.cli.common import resolve_targets, subcommand_parser
from hpcft.runstate import RunState, cancel_runs
from hpcft.scheduler import JobInfo
from hpcft.sweep.results import sweep_runs
from hpcft.sweep.summary import cancel_summary


def cancelled_lines(cancelled: Sequence[tuple[RunState, str, JobInfo]], sweeps: Sequence[Path]) -> list[str]:
    """What was cancelled: a line per sweep (its jobs counted by stage), one per controller,
    and one per job of the runs outside a sweep."""
    lines = [line for sweep in sweeps if (line := cancel_summary(sweep, cancelled))]
    in_sweeps = {run for sweep in sweeps for run in sweep_runs(sweep)}
    for state, stage, job in cancelled:
        if state.run not in in_sweeps:
            lines.append(f"cancelled {state.run.name} {stage} (job {job.job_id})")
    return lines


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("cancel", __doc__)
    parser.add_argument("runs", nargs="*", help="run or sweep directories (default: the latest run)")
    parser.add_argument("--stage", help="cancel this stage and the ones after it")
    args = parser.parse_args(list(argv))
    runs, sweeps = resolve_targets(args.runs)
    cancelled = cancel_runs(runs, args.stage, sweeps)
    for line in cancelled_lines(cancelled, sweeps):
        print(line)
    for note in dict.fromkeys(note for state, _, _ in cancelled for note in state.notes):
        print(f"hpcft: {note}", file=sys.stderr)
    if not cancelled:
        print("nothing to cancel: no job of the selected stages is queued or running")
    return 0
