"""Benchmark 7: the eval job's request throughput against a stand-in batching engine.

The engine (`standin_engine.py`, on 127.0.0.1) answers each request after 100 ms, at most
64 at once: its capacity, 640 rows/s, is the floor nothing can beat. hpcft's eval job
(`run_eval`, in this process) sends 10,000 alpaca rows through it with `eval.concurrency` 64
(the default) and with 1 (what eval did before). Measured: rows/s of the request phase
(wall time of the job minus its scoring, which is timed apart). Target: >= 0.8x capacity.

Then the GPU time the eval holds: 10,000 rows through the fine-tuned and the base model, with
100-word answers and references (`standin_engine.prose`), scored by the job itself on this
machine's CPUs. The server is released (`<run>/deploy/stop`) once every answer is in; the
time from then to the job's end is scoring. Target: scoring <= 25 % of the job's wall time.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Result, fmt, median, rows_of
from benchmarks.standin_engine import Engine, Server, prose
from hpcft.frameworks.llamafactory import alpaca_eval_job
from hpcft.jobs.evaluate import run_eval
from hpcft.jobs.metrics import score
from hpcft.rundir import RunLayout, write_json_atomic

LATENCY_S, CAPACITY, ROWS = 0.1, 64, 10_000
TARGET, SCORING_SHARE, ANSWER_WORDS = 0.8, 0.25, 100


def one_eval(work: Path, rows: int, concurrency: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(dir=work))
    evalset = folder / "eval.jsonl"
    evalset.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(rows)))
    with Server(Engine(latency_s=LATENCY_S, capacity=CAPACITY)) as server:
        layout = RunLayout(folder / "run")
        write_json_atomic(layout.endpoint, server.endpoint)
        start = time.perf_counter()
        run_eval(alpaca_eval_job(str(layout.root), str(evalset), concurrency=concurrency))
        wall = time.perf_counter() - start
    records = [json.loads(line) for line in layout.predictions.read_text().splitlines()]
    start = time.perf_counter()
    score([r["predict"] for r in records], [r["label"] for r in records])
    scoring = time.perf_counter() - start
    return {"rows": rows, "wall_s": wall, "scoring_s": scoring, "rows_per_s": rows / max(wall - scoring, 1e-9)}


class ReleaseClock:
    """When the stop marker first appeared (the eval rewrites it when it ends), to 10 ms."""

    def __init__(self, marker: Path) -> None:
        self.marker, self.seen = marker, threading.Event()
        self.when = float("nan")
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self.marker.exists():
            time.sleep(0.01)
        self.when = time.monotonic()
        self.seen.set()

    def at(self) -> float:
        self.seen.wait(5)
        return self.when


def scored_eval(work: Path, rows: int) -> dict[str, float]:
    """A base + fine-tuned eval of 100-word answers: its wall time and the part after the
    server was released (the scoring)."""
    folder = Path(tempfile.mkdtemp(dir=work))
    evalset = folder / "eval.jsonl"
    lines = (json.dumps({"instruction": f"q{i}", "output": prose(f"reference {i}", ANSWER_WORDS)}) for i in range(rows))
    evalset.write_text("".join(line + "\n" for line in lines))
    engine = Engine(latency_s=LATENCY_S, capacity=CAPACITY, answer_words=ANSWER_WORDS)
    with Server(engine) as server:
        layout = RunLayout(folder / "run")
        write_json_atomic(layout.endpoint, {**server.endpoint, "baseline": {**server.endpoint, "model": "base"}})
        released = ReleaseClock(layout.stop_serving)
        start = time.monotonic()
        run_eval(alpaca_eval_job(str(layout.root), str(evalset), concurrency=CAPACITY))
        end = time.monotonic()
    scoring = end - released.at()
    return {"rows": rows, "models": 2, "wall_s": end - start, "scoring_s": scoring, "share": scoring / (end - start)}


def run(work: Path, repeat: int) -> Result:
    work.mkdir(parents=True, exist_ok=True)
    capacity = CAPACITY / LATENCY_S
    raw: dict[str, Any] = {"capacity_rows_per_s": capacity}
    raw["concurrent"] = [one_eval(work, ROWS, CAPACITY) for _ in range(repeat)]
    raw["one_at_a_time"] = [one_eval(work, 100, 1)]  # 10 rows/s: 100 rows are enough to show it
    fast, slow = median([r["rows_per_s"] for r in raw["concurrent"]]), raw["one_at_a_time"][0]["rows_per_s"]
    row = rows_of(f"eval against a stand-in engine ({LATENCY_S * 1000:.0f} ms, {CAPACITY} at once)", repeat)
    ratio = fast / capacity
    concurrent = row(
        f"rows/s, {CAPACITY} in flight vs capacity", fmt(fast), fmt(capacity), fmt(ratio, 2), f">= {TARGET}x"
    )
    concurrent.met = ratio >= TARGET
    before = row("rows/s, one at a time (before) vs 64 in flight", fmt(slow), fmt(fast), fmt(slow / fast, 3), "report")
    raw["scoring"] = [scored_eval(work, ROWS) for _ in range(repeat)]
    share = median([r["share"] for r in raw["scoring"]])
    scoring_row = rows_of(f"eval of {ROWS:,} rows x base + fine-tuned, {ANSWER_WORDS}-word answers", repeat)
    scoring = scoring_row(
        "s scoring after the server is released vs the job's wall time",
        fmt(median([r["scoring_s"] for r in raw["scoring"]])),
        fmt(median([r["wall_s"] for r in raw["scoring"]])),
        fmt(share, 2),
        f"<= {SCORING_SHARE}",
    )
    scoring.met = share <= SCORING_SHARE
    return Result([concurrent, before, scoring], raw)
