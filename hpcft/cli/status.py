"""`python -m hpcft status [RUN_DIR ...]`: where each stage of each run stands.

One table row per run and stage: Slurm state (pending reason included), elapsed time,
nodes, and the eval metrics once written. All jobs are read with at most two scheduler
calls. A failed stage shows the tail of its log.

Examples:
  python -m hpcft status                 # the latest run
  python -m hpcft status runs/*          # every run
  python -m hpcft status --watch 10      # refresh every 10 s until all stages end
  python -m hpcft status runs/my-sweep   # a sweep: every point; an Optuna study's controller,
                                         # its trials scored and the best so far
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from hpcft.cli.common import resolve_targets, subcommand_parser
from hpcft.results import gains, headline, read_metrics, table
from hpcft.rundir import failure_excerpt
from hpcft.runstate import CONTROLLER, read_states
from hpcft.scheduler import StageState
from hpcft.study import controller_of, study_summary


def metric_summary(run: Path) -> str:
    """`rouge-l=61.20 (+58.00)`: the fine-tuned model's metrics, each with its gain over the
    base model when that was scored."""
    if not (run / "eval" / "metrics.json").is_file():
        return ""
    metrics = read_metrics(run)
    if metrics is None:
        return "(metrics.json unreadable)"
    gain = gains(metrics)
    return "  ".join(f"{k}={v:.2f}" + (f" ({gain[k]:+.2f})" if k in gain else "") for k, v in headline(metrics).items())


def eval_progress(run: Path) -> str:
    """` (150/300 rows, 12.0 rows/s, ETA 13 s)` from the eval job's progress file, if any."""
    try:
        p = json.loads((run / "eval" / "progress.json").read_text())
        eta = f", ETA {p['eta_s']} s" if p.get("eta_s") is not None else ""
        return f" ({p['done']}/{p['total']} rows, {p['rows_per_s']} rows/s{eta})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def render(runs: list[Path], sweeps: Sequence[Path] = ()) -> tuple[str, bool]:
    """The status text and whether every stage has ended."""
    rows, failed_logs = [], []
    states = read_states(runs, sweeps)
    for state in states:
        run = state.run
        if state.error:
            rows.append([run.name, "record", "", state.error, "", ""])
        rows += [[run.name, "record", "", note, "", ""] for note in state.notes]
        for job in state.strays:
            rows.append([run.name, f"{job.name.rsplit('.', 1)[-1]}?", job.job_id, f"{job.describe()} (unrecorded)"])
            rows[-1] += [job.elapsed, job.nodes]
        for name, info in state.stages.items():
            described = info.describe() + (
                eval_progress(run) if name == "eval" and info.state is StageState.RUNNING else ""
            )
            rows.append([run.name, name, info.job_id, described, info.elapsed, info.nodes])
            logs = state.manifest.stage(name).logs if state.manifest else None
            if info.state.failed and logs:
                header = f"--- {run.name} {name} ({info.describe()}): {logs['stderr']}"
                failed_logs.append(f"{header}\n{failure_excerpt(logs['stderr'])}")
        if metrics := metric_summary(run):
            rows.append([run.name, "metrics", "", metrics, "", ""])
        if CONTROLLER in state.stages and (record := controller_of(run)):
            rows.append([run.name, "study", "", study_summary(record), "", ""])
    text = table(rows, ["run", "stage", "job", "state", "elapsed", "nodes"])
    return "\n".join([text, *failed_logs]), all(state.done for state in states)


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("status", __doc__)
    parser.add_argument("runs", nargs="*", help="run directories (default: the latest run)")
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="refresh until every stage has ended")
    args = parser.parse_args(list(argv))
    runs, sweeps = resolve_targets(args.runs)
    while True:
        text, done = render(runs, sweeps)
        if args.watch:
            print("\033[2J\033[H" + time.strftime("%H:%M:%S"), flush=True)
        print(text, flush=True)
        if not args.watch or done:
            return 0
        time.sleep(args.watch)
