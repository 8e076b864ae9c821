"""Benchmark 5: the login-node data check at real sizes, against `json.load` in the same run.

Files of 1k to 1M rows (~1 KB each) in three layouts: an alpaca JSON array (LLaMA-Factory's
demo layout), alpaca JSONL, and a sharegpt JSON array with from/value turns. For each, one
process runs hpcft's full check (`training_data`: streaming reader + LLaMA-Factory's row
rules), and one runs the floor: `json.load` of the array (the list of rows a loader must
build) or `json.loads` per line for JSONL. Both report wall time and peak RSS.

Then the two acceptance runs end to end (`python -m hpcft ... dry_run=true`): a 30k-row
alpaca array and a 1M-row JSONL; and a 16-point sweep over a 100k-row file against a
1-point one: the file is checked once, so the sweep costs about one check, not sixteen.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, REPO, Result, Row, fmt, median, rows_of, run_timed

SIZES = (1_000, 10_000, 100_000, 1_000_000)
LAYOUTS = ("alpaca.json", "alpaca.jsonl", "sharegpt.json")
BIG_LAYOUTS = ("alpaca.json", "alpaca.jsonl")
"""Layouts measured at 1M rows (~1 GB each); sharegpt stops at 100k to bound disk and time."""
TARGET_MB_S = 100.0
TARGET_RATIO = 3.0
TARGET_RSS_MB = 200.0
MIN_JUDGED_MB = 10.0

CHECK = """
import resource, sys, time
from hpcft.frameworks.llamafactory_datasets import training_data
path, fmt = sys.argv[1], sys.argv[2]
start = time.perf_counter()
rows = training_data(path, [], fmt, "sft", offline=True).rows
print(rows, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
FLOOR = """
import json, resource, sys, time
path = sys.argv[1]
start = time.perf_counter()
if path.endswith(".jsonl"):
    with open(path, "rb") as f:
        rows = sum(1 for line in f if json.loads(line) is not None)
else:
    with open(path, "rb") as f:
        rows = len(json.load(f))
print(rows, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def alpaca_row(i: int, rng: random.Random) -> dict[str, str]:
    words = " ".join(rng.choice(("model", "data", "cluster", "node", "loss", "token")) for _ in range(60))
    return {"instruction": f"Question {i}: explain {words}", "input": words[:200], "output": f"Answer {i}: {words}"}


def sharegpt_row(i: int, rng: random.Random) -> dict[str, Any]:
    row = alpaca_row(i, rng)
    turns = [("human", row["instruction"]), ("gpt", row["output"]), ("human", "and then?"), ("gpt", row["input"])]
    return {"conversations": [{"from": who, "value": text} for who, text in turns]}


def write_file(path: Path, rows: int) -> None:
    """Streamed to disk, so generating a 1 GB file takes no more memory than one row."""
    rng = random.Random(rows)
    make = sharegpt_row if "sharegpt" in path.name else alpaca_row
    with path.open("w", encoding="utf-8") as f:
        if path.suffix == ".jsonl":
            for i in range(rows):
                f.write(json.dumps(make(i, rng)) + "\n")
            return
        f.write("[\n")
        for i in range(rows):
            f.write(("  " if i == 0 else ",\n  ") + json.dumps(make(i, rng), indent=None))
        f.write("\n]\n")


def measure(script: str, *argv: str) -> dict[str, float]:
    out = run_timed([PYTHON, "-c", script, *argv], cwd=REPO).check().stdout.split()
    return {"rows": int(out[0]), "wall_s": float(out[1]), "rss_mb": float(out[2])}


def file_check_rows(name: str, mb: float, mine: list[dict[str, float]], floor: list[dict[str, float]]) -> list[Row]:
    wall, base = median([m["wall_s"] for m in mine]), median([m["wall_s"] for m in floor])
    rss, base_rss = max(m["rss_mb"] for m in mine), max(m["rss_mb"] for m in floor)
    # Below ~10 MB a check takes milliseconds and start-up costs dominate: reported, not judged.
    judged = mb >= MIN_JUDGED_MB
    speed_target = f">= {TARGET_MB_S:.0f}, ratio <= {TARGET_RATIO:g}" if judged else "report"
    speed_met = (mb / wall >= TARGET_MB_S and wall / base <= TARGET_RATIO) if judged else None
    row = rows_of(name, len(mine))
    return [
        row(
            "MB/s on one core (vs json)",
            f"{mb / wall:.0f}",
            f"{mb / base:.0f}",
            fmt(wall / base, 2),
            speed_target,
            speed_met,
        ),
        row(
            "peak RSS MB (vs json)", f"{rss:.0f}", f"{base_rss:.0f}", "", f"< {TARGET_RSS_MB:.0f}", rss < TARGET_RSS_MB
        ),
    ]


def file_rows(work: Path, repeat: int) -> tuple[list[Row], list[dict[str, Any]]]:
    rows, raw = [], []
    for size in SIZES:
        for layout in LAYOUTS if size < 1_000_000 else BIG_LAYOUTS:
            path = work / f"{size}-{layout}"
            write_file(path, size)
            mb = path.stat().st_size / 1e6
            fmt_name = "sharegpt" if layout.startswith("sharegpt") else "alpaca"
            mine = [measure(CHECK, str(path), fmt_name) for _ in range(repeat if size < 1_000_000 else 1)]
            floor = [measure(FLOOR, str(path)) for _ in range(repeat if size < 1_000_000 else 1)]
            path.unlink()
            assert all(m["rows"] == size for m in mine + floor)
            raw.append({"rows": size, "layout": layout, "mb": mb, "hpcft": mine, "json": floor})
            rows += file_check_rows(f"data check {layout} {size:,} rows ({mb:.0f} MB)", mb, mine, floor)
    return rows, raw


def dry_run_s(trainset: Path, *extra: str) -> float:
    argv = [PYTHON, "-m", "hpcft", *extra, "model=tiny_llama", f"trainset={trainset}", "dry_run=true"]
    timed = run_timed([*argv, f"run_root={trainset.parent / 'runs'}"], cwd=REPO).check()
    return timed.wall_s


def acceptance_rows(work: Path, repeat: int) -> tuple[list[Row], dict[str, Any]]:
    raw: dict[str, Any] = {}
    rows = []
    for size, layout, target in ((30_000, "alpaca.json", 2.0), (1_000_000, "alpaca.jsonl", 15.0)):
        path = work / f"accept-{size}-{layout}"
        write_file(path, size)
        walls = [dry_run_s(path) for _ in range(repeat if size < 1_000_000 else 1)]
        raw[f"{size}-{layout}"] = walls
        mb = path.stat().st_size / 1e6
        path.unlink()
        row = rows_of(f"dry run, {layout} {size:,} rows ({mb:.0f} MB)", len(walls))
        rows.append(row("median wall (s)", fmt(median(walls)), "", "", f"< {target:g}", median(walls) < target))
    path = work / "sweep-100000-alpaca.json"
    write_file(path, 100_000)
    points = ",".join(f"{i + 1}e-4" for i in range(16))
    one = [dry_run_s(path, "-m", "cluster=slurmlab", "framework.learning_rate=1e-4") for _ in range(repeat)]
    sixteen = [dry_run_s(path, "-m", "cluster=slurmlab", f"framework.learning_rate={points}") for _ in range(repeat)]
    raw["sweep"] = {"one_point_s": one, "sixteen_points_s": sixteen}
    ratio = median(sixteen) / median(one)
    row = rows_of("sweep over a 100,000-row file, dry run", repeat)
    shown = fmt(median(sixteen)), fmt(median(one)), fmt(ratio, 2)
    rows.append(row("16 points vs 1 point, median wall (s)", *shown, "<= 2 (file checked once)", ratio <= 2))
    return rows, raw


def run(work: Path, repeat: int) -> Result:
    work.mkdir(parents=True, exist_ok=True)
    per_file, raw_files = file_rows(work, repeat)
    accept, raw_accept = acceptance_rows(work, repeat)
    return Result([*per_file, *accept], {"files": raw_files, "acceptance": raw_accept})
