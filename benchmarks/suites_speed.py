"""Benchmark 11: the standard suites' throughput through a stand-in batching engine.

The eval job scores `eval.suites` with lm-evaluation-harness's `local-completions` model, one
`python -m lm_eval run` per task (hpcft.jobs.suites). Here that same code path (`Suites`,
`lm_eval_argv`, `key_env`: the argv and environment the job uses) runs against the stand-in
engine (`standin_engine.py`, `/v1/completions`: 100 ms a prompt, at most 64 at once, so
640 prompts/s is the floor) on two generated local tasks in lm-eval's YAML format: a
multiple-choice one (1,500 docs x 4 choices = 6,000 log-likelihood prompts) and a generative
one (300 docs). Tokenizer: the tiny test model's (`scripts/setup.sh`).

Measured for `num_concurrent` as the eval job sets it for a full fine-tune
(`eval.concurrency`, 64), as it set it before (`min(eval.concurrency, 16)`: multiple choice
only), and one at a time (what it sets on a LoRA server, vllm#16668; 100 docs a task):
prompts/s over lm-eval's whole run, and over its run less its start-up (a 1-doc run of the
same task: interpreter, lm-eval's imports, task and tokenizer loading, the results files).
Reported against the engine's capacity and against what `num_concurrent` allows
(`min(num_concurrent, capacity) / latency`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import Result, fmt, median, rows_of
from benchmarks.standin_engine import Engine, Server, prose
from hpcft.config.run_schema import EvalConfig
from hpcft.jobs.spec import SuiteJob
from hpcft.jobs.suites import Suites
from hpcft.rowscores import FINE_TUNED
from hpcft.rundir import RunLayout

LATENCY_S, CAPACITY = 0.1, 64
MC_DOCS, GEN_DOCS, CHOICES, SLOW_DOCS = 1500, 300, 4, 100
JOB_CONCURRENCY = EvalConfig().concurrency
"""What hpcft.config.suites gives lm-eval on a server without LoRA: `eval.concurrency` (64)."""
BEFORE = 16
"""What it gave before (min(eval.concurrency, 16))."""
MC, GEN = "bench_mc", "bench_gen"

MC_YAML = f"""task: {MC}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {MC}.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
GEN_YAML = f"""task: {GEN}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {GEN}.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
generation_kwargs:
  until: ["\\n", "Question:"]
  max_gen_toks: 8
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_tasks(folder: Path) -> Path:
    """The two tasks, with questions of ~20 words and one-word choices and answers."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MC}.yaml").write_text(MC_YAML)
    (folder / f"{GEN}.yaml").write_text(GEN_YAML)
    mc = (
        {"question": prose(f"q{i}", 20), "choices": prose(f"c{i}", CHOICES).rstrip(".").split(), "answer": i % CHOICES}
        for i in range(MC_DOCS)
    )
    gen = ({"question": prose(f"g{i}", 20), "answer": prose(f"a{i}", 1).rstrip(".")} for i in range(GEN_DOCS))
    (folder / f"{MC}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in mc))
    (folder / f"{GEN}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in gen))
    return folder


def tokenizer() -> str:
    home = Path(os.environ.get("HPCFT_HOME") or Path.home() / ".cache" / "hpcft")
    if not (path := home / "models" / "tiny_llama").is_dir():
        raise RuntimeError(f"no tiny model in {path.parent}; run scripts/setup.sh")
    return str(path)


@contextlib.contextmanager
def quiet(log: Path) -> Iterator[None]:
    """lm-eval's progress bars and logs (it inherits our stdout/stderr) go to `log`."""
    with log.open("a") as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def one_run(work: Path, tasks: Path, task: str, concurrency: int, limit: int | None) -> dict[str, Any]:
    """One lm-eval run of `task`, as the eval job starts it, against a fresh stand-in engine."""
    folder = Path(tempfile.mkdtemp(dir=work))
    key = folder / "key"
    key.write_text("bench-key")
    job = SuiteJob(tasks=(task,), tokenizer=tokenizer(), limit=limit, include_path=str(tasks), concurrency=concurrency)
    engine = Engine(latency_s=LATENCY_S, capacity=CAPACITY)
    with Server(engine) as server, quiet(work / "lm_eval.log"):
        side = {**server.endpoint, "api_key_file": str(key)}
        start = time.perf_counter()
        Suites(job, RunLayout(folder / "run"), side).task_results(FINE_TUNED, side, task)
        wall = time.perf_counter() - start
    return {
        "task": task, "num_concurrent": concurrency, "limit": limit, "wall_s": wall, "prompts": engine.prompts,
        "requests": engine.arrivals, "max_in_flight": engine.max_in_flight,
    }  # fmt: skip


@contextlib.contextmanager
def datasets_cache(folder: Path) -> Iterator[None]:
    """The generated tasks' Arrow caches in the work folder, not the user's HF cache."""
    before = os.environ.get("HF_DATASETS_CACHE")
    os.environ["HF_DATASETS_CACHE"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            del os.environ["HF_DATASETS_CACHE"]
        else:
            os.environ["HF_DATASETS_CACHE"] = before


def measure(work: Path, repeat: int) -> dict[str, Any]:
    tasks = write_tasks(work / "tasks")
    raw: dict[str, Any] = {"capacity_prompts_per_s": CAPACITY / LATENCY_S, "latency_s": LATENCY_S}
    with datasets_cache(work / "hf-datasets"):
        for task in (MC, GEN):  # warm-up: builds the Arrow cache, as a second run of a task finds it
            one_run(work, tasks, task, JOB_CONCURRENCY, 1)
        raw["startup"] = [one_run(work, tasks, task, JOB_CONCURRENCY, 1) for _ in range(repeat) for task in (MC, GEN)]
        raw["concurrent"] = [one_run(work, tasks, t, JOB_CONCURRENCY, None) for _ in range(repeat) for t in (MC, GEN)]
        raw["one_at_a_time"] = [one_run(work, tasks, task, 1, SLOW_DOCS) for task in (MC, GEN)]
        raw["before"] = [one_run(work, tasks, MC, BEFORE, None)]
    return raw


def rate(runs: list[dict[str, Any]], task: str, startup: float = 0.0) -> float:
    return median([r["prompts"] / max(r["wall_s"] - startup, 1e-9) for r in runs if r["task"] == task])


def run(work: Path, repeat: int) -> Result:
    work.mkdir(parents=True, exist_ok=True)
    raw = measure(work, repeat)
    capacity, allowed = CAPACITY / LATENCY_S, min(JOB_CONCURRENCY, CAPACITY) / LATENCY_S
    startup = {t: median([r["wall_s"] for r in raw["startup"] if r["task"] == t]) for t in (MC, GEN)}
    raw["startup_s"] = startup
    rows = []
    for task, what in ((MC, f"{MC_DOCS:,} docs x {CHOICES} choices"), (GEN, f"{GEN_DOCS} docs, 8 tokens")):
        engine = f"stand-in engine {LATENCY_S * 1000:.0f} ms x {CAPACITY}"
        row = rows_of(f"suite {task} ({what}) via lm-eval, {engine}", repeat)
        whole, net = rate(raw["concurrent"], task), rate(raw["concurrent"], task, startup[task])
        rows.append(row(f"prompts/s, num_concurrent {JOB_CONCURRENCY} vs capacity", fmt(whole), fmt(capacity),
                        fmt(whole / capacity, 2), "report"))  # fmt: skip
        rows.append(row(f"prompts/s less start-up vs {JOB_CONCURRENCY} in flight allow", fmt(net), fmt(allowed),
                        fmt(net / allowed, 2), "report"))  # fmt: skip
        slow = rate(raw["one_at_a_time"], task, startup[task])
        rows.append(row(f"prompts/s less start-up, one at a time (LoRA) vs {JOB_CONCURRENCY}", fmt(slow), fmt(net),
                        fmt(slow / net, 3), "report"))  # fmt: skip
        if task == MC:
            before = rate(raw["before"], MC, startup[MC])
            rows.append(row(f"prompts/s less start-up, num_concurrent {BEFORE} (before) vs {JOB_CONCURRENCY}",
                            fmt(before), fmt(net), fmt(before / net, 2), "report"))  # fmt: skip
        wall = median([r["wall_s"] for r in raw["concurrent"] if r["task"] == task])
        rows.append(row("s lm-eval start-up (1-doc run) vs the whole run", fmt(startup[task]), fmt(wall),
                        fmt(startup[task] / wall, 2), "report"))  # fmt: skip
    return Result(rows, raw)
