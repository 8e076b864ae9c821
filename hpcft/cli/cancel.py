"""`python -m hpcft cancel [RUN_DIR ...] [--stage STAGE]`: cancel runs, or a stage and the
stages after it, with one `scancel` for everything; the manifests record it. Jobs named
after a run that its record does not list (a submission killed mid-way) are cancelled too.

Examples:
  python -m hpcft cancel                      # the latest run, all stages
  python -m hpcft cancel runs/*               # every run
  python -m hpcft cancel runs/r1 --stage deploy   # deploy and eval; train goes on
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hpcft.cli.common import resolve_targets, subcommand_parser
from hpcft.runstate import cancel_runs


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("cancel", __doc__)
    parser.add_argument("runs", nargs="*", help="run or sweep directories (default: the latest run)")
    parser.add_argument("--stage", help="cancel this stage and the ones after it")
    args = parser.parse_args(list(argv))
    runs, sweeps = resolve_targets(args.runs)
    cancelled = cancel_runs(runs, args.stage, sweeps)
    for state, stage, job in cancelled:
        print(f"cancelled {state.run.name} {stage} (job {job.job_id})")
    for note in dict.fromkeys(note for state, _, _ in cancelled for note in state.notes):
        print(f"hpcft: {note}", file=sys.stderr)
    if not cancelled:
        print("nothing to cancel: no job of the selected stages is queued or running")
    return 0
