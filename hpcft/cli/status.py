"""`python -m hpcft status [RUN_DIR ...]`: where each stage of each run stands.

One table row per run and stage: Slurm state (pending reason included), elapsed time,
nodes, and the eval metrics once written. All jobs are read with at most two scheduler
calls. A failed stage shows the tail of its log.

Examples:
  python -m hpcft status                 # the latest run
  python -m hpcft status runs/*          # every run
  python -m hpcft status --watch 10      # refresh every 10 s until all stages end
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcft.cli.common import resolve_run_dirs, subcommand_parser
from hpcft.rundir import read_json, tail, write_json_atomic
from hpcft.scheduler import JobInfo, query_jobs

BAD = ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE")


def stage_rows(run: Path, manifest: dict[str, Any], jobs: dict[str, JobInfo]) -> list[list[str]]:
    """One row per stage; what the scheduler says is also recorded in the manifest, so the
    run can be inspected after Slurm has forgotten its jobs."""
    rows, changed = [], False
    for name, stage in manifest["stages"].items():
        job_id = str(stage.get("job_id") or "")
        info = jobs.get(job_id, JobInfo(job_id, "UNKNOWN")) if manifest["executor"] == "slurm" and job_id else None
        if info is None or info.state == "UNKNOWN":  # local runs, stages never submitted, forgotten jobs
            info = JobInfo(job_id or "-", stage["state"])
        elif info.state != stage["state"]:
            stage["state"], changed = info.state, True
        rows.append([run.name, name, job_id or "-", info.describe(), info.elapsed, info.nodes])
    if changed:
        write_json_atomic(run / "manifest.json", manifest)
    return rows


def metric_summary(run: Path) -> str:
    path = run / "eval" / "metrics.json"
    if not path.is_file():
        return ""
    metrics = json.loads(path.read_text())
    return "  ".join(f"{k}={v:.2f}" for k, v in metrics.items() if isinstance(v, float) and k != "rows")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def render(runs: list[Path]) -> tuple[str, bool]:
    """The status text and whether every stage has ended."""
    manifests = {run: read_json(run / "manifest.json") for run in runs}
    ids = [str(s["job_id"]) for m in manifests.values() if m["executor"] == "slurm" for s in m["stages"].values()]
    jobs = query_jobs(ids)
    rows, failed_logs, done = [], [], True
    for run, manifest in manifests.items():
        run_rows = stage_rows(run, manifest, jobs)
        rows += run_rows
        for row, stage in zip(run_rows, manifest["stages"].values(), strict=True):
            state = row[3].split()[0]
            done &= state not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUBMITTED")
            if state in BAD and stage.get("logs"):
                failed_logs.append(
                    f"--- {run.name} {row[1]} ({row[3]}): {stage['logs']['stderr']}\n{tail(stage['logs']['stderr'], 8)}"
                )
        if metrics := metric_summary(run):
            rows.append([run.name, "metrics", "", metrics, "", ""])
    text = table(rows, ["run", "stage", "job", "state", "elapsed", "nodes"])
    return "\n".join([text, *failed_logs]), done


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("status", __doc__)
    parser.add_argument("runs", nargs="*", help="run directories (default: the latest run)")
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="refresh until every stage has ended")
    args = parser.parse_args(list(argv))
    runs = resolve_run_dirs(args.runs)
    while True:
        text, done = render(runs)
        if args.watch:
            print("\033[2J\033[H" + time.strftime("%H:%M:%S"), flush=True)
        print(text, flush=True)
        if not args.watch or done:
            return 0
        time.sleep(args.watch)
