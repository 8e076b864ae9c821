"""`python -m hpcft status [RUN_DIR ...]`: where each stage of each run stands.

One table row per run and stage: Slurm state (pending reason included), elapsed time,
nodes, and in the last column a running stage's progress (train: step/total, last loss,
ETA; eval: rows, rate, ETA) and the eval metrics once written. A sweep starts with one line:
its points by state and the best so far. All jobs are read with at most two scheduler
calls. A failed stage shows the tail of its log.

Examples:
  python -m hpcft status                 # the latest run
  python -m hpcft status runs/*          # every run
  python -m hpcft status --watch 10      # redraw every 10 s until all stages end
  python -m hpcft status runs/my-sweep   # a sweep: its summary line, then every point; an
                                         # Optuna study's trials scored and the best so far
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hpcft.checkpoints import best_summary
from hpcft.cli.common import resolve_targets, subcommand_parser
from hpcft.config.schema import StageName
from hpcft.errors import UserError
from hpcft.progress import duration_text, read_train_progress
from hpcft.results import gains, general_summary, headline, read_metrics, table
from hpcft.rundir import RunLayout, failure_excerpt
from hpcft.runstate import RunState, read_states
from hpcft.scheduler import JobInfo, StageState
from hpcft.sweep.summary import sweep_summary


def metric_summary(run: Path) -> str:
    """`rouge-l=61.20 (+58.00)`: the fine-tuned model's metrics, each with its gain over the
    base model when that was scored."""
    if not (run / "eval" / "metrics.json").is_file():
        return ""
    metrics = read_metrics(run)
    if metrics is None:
        return "(metrics.json unreadable)"
    gain = gains(metrics)
    shown = [f"{k}={v:.2f}" + (f" ({gain[k]:+.2f})" if k in gain else "") for k, v in headline(metrics).items()]
    return "  ".join(filter(None, [*shown, general_summary(metrics), best_summary(metrics)]))


def eval_progress(run: Path) -> str:
    """`150/300 rows, 12.0 rows/s, ETA 13 s` from the eval job's progress file, if any."""
    try:
        p = json.loads((run / "eval" / "progress.json").read_text())
        eta = f", ETA {duration_text(float(p['eta_s']))}" if p.get("eta_s") is not None else ""
        return f"{p['done']}/{p['total']} rows, {p['rows_per_s']} rows/s{eta}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def progress(run: Path, stage: str, info: JobInfo) -> str:
    """A running stage's progress: train's step/total, loss and ETA; eval's rows."""
    if info.state is not StageState.RUNNING:
        return ""
    if stage == StageName.train:
        train = read_train_progress(RunLayout(run).train_progress)
        return train.describe() if train else ""
    return eval_progress(run) if stage == StageName.eval else ""


HEADER = ["run", "stage", "job", "state", "elapsed", "nodes", "progress / metrics"]
TALL = 30
"""A table taller than this also ends with the sweeps' summary lines (the top has scrolled away)."""


def run_rows(state: RunState) -> tuple[list[list[str]], list[str]]:
    """One run's table rows, and the log tails of its failed stages. What is said about the
    record and the metrics go in the last column (the metrics on its last stage's row), so
    they never widen the state column."""
    run, rows, failed_logs = state.run, [], []
    said = [*([state.error] if state.error else []), *state.notes]
    rows += [[run.name, "record", "", "", "", "", why] for why in said]
    for job in state.strays:
        rows.append([run.name, f"{job.name.rsplit('.', 1)[-1]}?", job.job_id, f"{job.describe()} (unrecorded)"])
        rows[-1] += [job.elapsed, job.nodes, ""]
    for name, info in state.stages.items():
        rows.append([run.name, name, info.job_id, info.describe(), info.elapsed, info.nodes, progress(run, name, info)])
        logs = state.manifest.stage(name).logs if state.manifest else None
        if info.state.failed and logs:
            header = f"--- {run.name} {name} ({info.describe()}): {logs['stderr']}"
            failed_logs.append(f"{header}\n{failure_excerpt(logs['stderr'])}")
    if (metrics := metric_summary(run)) and rows:
        rows[-1][-1] = "  ".join(filter(None, [rows[-1][-1], metrics]))
    return rows, failed_logs


def render(runs: list[Path], sweeps: Sequence[Path] = ()) -> tuple[str, bool]:
    """The status text and whether every stage has ended: each sweep's summary line, then
    one row per run and stage, then the log tails of failed stages."""
    states = read_states(runs, sweeps)
    rows, failed_logs = [], []
    for state in states:
        own_rows, own_logs = run_rows(state)
        rows += own_rows
        failed_logs += own_logs
    summaries = [sweep_summary(sweep, states) for sweep in sweeps]
    closing = summaries if len(rows) > TALL else []
    return "\n".join([*summaries, table(rows, HEADER), *failed_logs, *closing]), all(s.done for s in states)


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("status", __doc__)
    parser.add_argument("runs", nargs="*", help="run or sweep directories (default: the latest run)")
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="redraw every SECONDS until all ended")
    args = parser.parse_args(list(argv))
    if args.watch is not None and not args.watch > 0:
        raise UserError(f"--watch {args.watch:g}: the interval must be a number of seconds > 0")
    runs, sweeps = resolve_targets(args.runs)
    while True:
        text, done = render(runs, sweeps)
        if args.watch:
            print(redraw_header(sys.stdout.isatty()), flush=True)
        print(text, flush=True)
        if not args.watch or done:
            return 0
        time.sleep(args.watch)


def redraw_header(terminal: bool) -> str:
    """Before each redraw: clear the screen on a terminal; in a file or a pipe (a CI log, `tee`)
    no control codes, only a line that says when."""
    now = time.strftime("%H:%M:%S")
    return f"\033[2J\033[H{now}" if terminal else f"--- {now}"
