"""Benchmark 2b: what a sweep costs per point, and how that grows with the points.

- hpcft: `python -m hpcft -m ... framework.learning_rate=<N values>`, held: the 3-stage
  pipeline for N = 1 and 256 (the main sweep benchmark's runs), and `stages=[train]` for
  N = 1, 256, 1024, 4096 (4,096 points x 3 stages would pass Slurm's default MaxJobCount of
  10,000 queued jobs). Wall time and the process's CPU time (user + system, from wait4). CPU
  per point beyond the first: (CPU(N) - CPU(1)) / (N - 1), the 1-point sweep measured in
  the same run, best of its runs (the machine is shared: the least disturbed).
- the array floor: one `sbatch --array=0-<N-1>` of hpcft's own train script, through the
  same shim: what the scheduler alone charges for an array.

Targets (issue 34): <= 2 ms of CPU per point beyond the first; 4,096 points in <= 15 s; cost
linear in points (per point at 4,096 within 1.5x of per point at 256).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, Shim, fmt, median, rows_of

SIZES = (256, 1024, 4096)
POINTS_3 = 256
"""The main sweep benchmark's points (3 stages)."""
CPU_PER_POINT_MS = 2.0
WALL_4096_S = 15.0
LINEAR = 1.5
"""Per point at the largest size over per point at the smallest, at most."""


def array_floor(scripts: Path, shim: Shim, work: Path, tasks: int) -> float:
    """Seconds for one `sbatch --array` of `tasks` tasks (held, then cancelled)."""
    argv = ["sbatch", "--parsable", f"--array=0-{tasks - 1}", "--job-name=bench-array-floor"]
    start = time.perf_counter()
    out = subprocess.run(
        [*argv, str(scripts / "train.sbatch")], env=shim.env(work / "array.log"), capture_output=True, text=True
    )
    took = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"sbatch --array: {out.stderr.strip()}")
    subprocess.run(["scancel", out.stdout.strip().split(";")[0]], capture_output=True, check=False)
    return took


TRAIN_ONLY = ("stages=[train]",)


def run(work: Path, shim: Shim, scripts: Path, run_hpcft: Any, repeat: int) -> dict[str, Any]:
    """The 1-point sweeps `repeat` times, each size in SIZES once, the array floor `repeat` times."""
    raw: dict[str, Any] = {"one_3stage": [], "one": [], "sizes": {}, "array_floor_s": []}
    for i in range(repeat):
        raw["one_3stage"].append(run_hpcft(work, shim, f"one3-{i}", points=1, cancel=True))
        raw["one"].append(run_hpcft(work, shim, f"one-{i}", points=1, cancel=True, extra=TRAIN_ONLY))
        raw["array_floor_s"].append(array_floor(scripts, shim, work, 256))
    for size in SIZES:
        try:
            raw["sizes"][str(size)] = run_hpcft(work, shim, f"scale-{size}", points=size, cancel=True, extra=TRAIN_ONLY)
        except RuntimeError as e:  # one size refused (a full queue) leaves the others' figures
            raw["sizes"][str(size)] = {"error": str(e).splitlines()[-1][:200]}
    return raw


def per_point_ms(ones: list[dict[str, Any]], run: dict[str, Any], size: int, key: str = "cpu_s") -> float:
    """(key(size) - best key(1)) / (size - 1), in ms; NaN for a run that failed."""
    if key not in run:
        return float("nan")
    return (float(run[key]) - min(float(r[key]) for r in ones)) / (size - 1) * 1000


def rows(raw: dict[str, Any], three_stage: list[dict[str, Any]]) -> list[Row]:
    """`three_stage`: the main benchmark's 256-point runs of the 3-stage pipeline."""
    row = rows_of("sweep scale", len(raw["one"]))
    best = min(three_stage, key=lambda r: float(r["cpu_s"]))
    cpu3 = per_point_ms(raw["one_3stage"], best, POINTS_3)
    out = [
        row("1-point sweep, 3 stages | train only: CPU (s), best run", fmt(min(r["cpu_s"] for r in raw["one_3stage"])),
            fmt(min(r["cpu_s"] for r in raw["one"]))),
        row(f"{POINTS_3} points, 3 stages: CPU per point beyond the first (ms)", fmt(cpu3), "", "",
            f"<= {CPU_PER_POINT_MS:g} ms", cpu3 <= CPU_PER_POINT_MS),
        row("one sbatch --array=0-255 (the array floor), median wall (s)", fmt(median(raw["array_floor_s"]))),
    ]  # fmt: skip
    for size in SIZES:
        r = raw["sizes"][str(size)]
        cpu = per_point_ms(raw["one"], r, size)
        what = r.get("error") or f"{fmt(r['wall_s'])} / {fmt(r['cpu_s'])} / {fmt(cpu)}"
        out.append(row(f"{size} points, train only: wall (s) / CPU (s) / CPU per point beyond the first (ms)",
                       what, "", "", f"<= {CPU_PER_POINT_MS:g} ms", cpu <= CPU_PER_POINT_MS))  # fmt: skip
    big = raw["sizes"][str(SIZES[-1])]
    small_ms, big_ms = per_point_ms(raw["one"], raw["sizes"][str(SIZES[0])], SIZES[0]), float("nan")
    if "wall_s" in big:
        big_ms = per_point_ms(raw["one"], big, SIZES[-1])
    wall = float(big.get("wall_s", float("nan")))
    out += [
        row(f"{SIZES[-1]} points: wall (s)", fmt(wall), "", "", f"<= {WALL_4096_S:g}", wall <= WALL_4096_S),
        row(f"linear: CPU per point at {SIZES[-1]} / at {SIZES[0]} (ms)", fmt(big_ms), fmt(small_ms),
            fmt(big_ms / small_ms), f"<= {LINEAR:g}", big_ms / small_ms <= LINEAR),
    ]  # fmt: skip
    return out
