"""Benchmark 3: `python -m hpcft status <sweep dir>` on the 256-point sweep (768 jobs).

Run while the sweep's jobs are queued (held), and again after they were cancelled and have
left the queue (then their states come from accounting). Measured: scheduler calls (through
the shim) and wall time. Floor: the same `squeue` and `sacct` calls hpcft makes, run directly
(one process each), i.e. what reading the states costs without Python, manifests or the table.
"""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PYTHON,
    Result,
    Row,
    Shim,
    calls,
    fmt,
    median,
    read_json,
    rows_of,
    run_timed,
    scancel,
    wait_gone,
)

TARGET_CALLS = 2


def job_ids(sweep_dir: Path) -> list[str]:
    """Every task id of the sweep, as the runs' manifests list them."""
    ids = []
    for point in read_json(sweep_dir / "sweep.json")["points"]:
        stages = read_json(Path(point["run_dir"]) / "manifest.json")["stages"]
        ids += [str(s["job_id"]) for s in stages.values() if s.get("job_id")]
    return ids


def floor_s(ids: list[str], finished: bool) -> float:
    """The scheduler calls alone: squeue for the user's queue, sacct for the jobs not in it."""
    start = time.perf_counter()
    run_timed(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%M|%N|%r"]).check()
    if finished:
        run_timed(["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "JobID,State,Elapsed,NodeList"]).check()
    return time.perf_counter() - start


def measure(sweep_dir: Path, shim: Shim, work: Path, tag: str, repeat: int) -> list[dict[str, Any]]:
    runs = []
    ids = job_ids(sweep_dir)
    for i in range(repeat):
        log = work / f"status-{tag}-{i}.log"
        timed = run_timed([PYTHON, "-m", "hpcft", "status", str(sweep_dir)], shim.env(log, hold=False)).check()
        lines = len(timed.stdout.splitlines())
        runs.append(
            {"wall_s": timed.wall_s, "calls": calls(log), "lines": lines, "floor_s": floor_s(ids, tag == "finished")}
        )
    return runs


def run(sweep_dir: Path, array_ids: list[str], shim: Shim, work: Path, repeat: int) -> Result:
    """Status while the sweep is queued, then after cancelling it; the jobs are always cancelled."""
    raw: dict[str, Any] = {"sweep_dir": str(sweep_dir), "jobs": 0}
    try:
        raw["jobs"] = len(job_ids(sweep_dir))
        raw["queued"] = measure(sweep_dir, shim, work, "queued", repeat)
    finally:
        scancel(array_ids)
    wait_gone(array_ids)
    raw["finished"] = measure(sweep_dir, shim, work, "finished", repeat)
    return Result(rows(raw, repeat), raw)


def rows(raw: dict[str, Any], n: int) -> list[Row]:
    out = []
    for phase in ("queued", "finished"):
        runs, row = raw[phase], rows_of(f"status ({raw['jobs']} jobs, {phase})", n)
        total = max(r["calls"]["squeue"] + r["calls"]["sacct"] + r["calls"]["scontrol"] for r in runs)
        detail = ", ".join(f"{k} {max(r['calls'][k] for r in runs)}" for k in ("squeue", "sacct"))
        wall, floor = median([r["wall_s"] for r in runs]), median([r["floor_s"] for r in runs])
        out += [
            row("scheduler calls", f"{total} ({detail})", "", "", "<= 2", total <= TARGET_CALLS),
            row("median wall (s), vs the bare squeue/sacct calls", fmt(wall), fmt(floor), fmt(wall / floor)),
        ]
    return out
