"""Shared helpers: timed child processes, the scheduler-call shim, medians and result rows."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
PYTHON = sys.executable
SCHEDULER_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")
# What every job of the pipeline gets in its environment (hpcft.render.job_env on an offline cluster).
JOB_ENV = {
    "PYTHONUNBUFFERED": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}


@dataclass
class Timed:
    """One finished child process."""

    argv: list[str]
    wall_s: float
    returncode: int
    maxrss_mb: float
    stdout: str
    stderr: str
    cpu_s: float = 0.0
    """User + system CPU time of the process and the children it waited for."""

    def check(self) -> Timed:
        if self.returncode != 0:
            raise RuntimeError(f"{self.argv[:4]}... exited {self.returncode}:\n{self.stderr[-3000:]}")
        return self


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    metric: str
    hpcft: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    n: str = ""


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "raw": self.raw}


def rows_of(benchmark: str, n: int | str) -> Callable[..., Row]:
    """Row(metric, hpcft, baseline, ratio, target, met) for one benchmark and run count."""
    return functools.partial(Row, benchmark, n=str(n))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value != value else f"{value:.{digits}g}"


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, float, float]:
    """Reap the child with wait4 (so its own peak RSS and CPU time are known); kill its group
    on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            kill_group(proc)
        time.sleep(0.005)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End a child started with start_new_session=True, and what it started."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_timed(
    argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path = REPO, timeout_s: float = 600
) -> Timed:
    """Run a command to its end: wall time from start to exit, exit status, peak RSS, output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=out, stderr=err, start_new_session=True)
        code, rss, cpu = _wait(proc, timeout_s)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return Timed(list(argv), wall, code, rss, out.read().decode(errors="replace"), err.read().decode(), cpu)


def until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


class Shim:
    """A folder put first on PATH with one wrapper per scheduler command: each call is appended
    to `$HPCFT_BENCH_CALL_LOG` ("<name> start" / "<name> end"), then the real binary runs.
    With `$HPCFT_BENCH_HOLD=1`, sbatch gets `--hold`, so benchmark jobs never start. Every
    contender goes through the same wrappers, so their small cost is the same for all."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "shim"
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in SCHEDULER_COMMANDS:
            real = shutil.which(name)
            if real is None:
                raise RuntimeError(f"{name} is not on PATH: is the Slurm cluster set up (SLURM_CONF)?")
            hold = " ${HPCFT_BENCH_HOLD:+--hold}" if name == "sbatch" else ""
            script = self.dir / name
            script.write_text(
                "#!/bin/sh\n"
                f'echo "{name} start" >> "${{HPCFT_BENCH_CALL_LOG:-/dev/null}}"\n'
                f'{real}{hold} "$@"\n'
                "rc=$?\n"
                f'echo "{name} end" >> "${{HPCFT_BENCH_CALL_LOG:-/dev/null}}"\n'
                "exit $rc\n"
            )
            script.chmod(0o755)

    def env(self, log: Path, hold: bool = True, **extra: str) -> dict[str, str]:
        env = {**os.environ, **extra, "PATH": f"{self.dir}{os.pathsep}{os.environ['PATH']}"}
        env["HPCFT_BENCH_CALL_LOG"] = str(log)
        env.pop("HPCFT_BENCH_HOLD", None)
        if hold:
            env["HPCFT_BENCH_HOLD"] = "1"
        return env


def calls(log: Path) -> dict[str, int]:
    """Scheduler calls made, by command, from a shim log."""
    counts = {name: 0 for name in SCHEDULER_COMMANDS}
    if log.is_file():
        for line in log.read_text().splitlines():
            name, _, what = line.partition(" ")
            if what == "start":
                counts[name] += 1
    return counts


def scheduler(*argv: str) -> str:
    """A scheduler command outside the measurements (no shim)."""
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout


def scancel(job_ids: Sequence[str]) -> None:
    """Cancel exactly these jobs (array ids cancel every task)."""
    ids = sorted({j for j in job_ids if j})
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, check=False)


def wait_gone(job_ids: Sequence[str], timeout_s: float = 60) -> bool:
    """Until sacct reports every job (array) in a final state."""
    ids = sorted({j.split("_")[0] for j in job_ids if j})

    def done() -> bool:
        out = scheduler("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids))
        states = [line.partition("|")[2].split(" ")[0] for line in out.splitlines()]
        active = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", ""}
        return bool(states) and not any(s in active for s in states)

    return not ids or until(done, timeout_s, interval_s=1.0)


def only_child(folder: Path) -> Path:
    (child,) = [p for p in folder.iterdir() if p.is_dir()]
    return child


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    header = ["benchmark", "metric", "hpcft", "baseline", "ratio", "target", "met?", "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        cells = [r.benchmark, r.metric, r.hpcft, r.baseline, r.ratio, r.target, met, r.n]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)
