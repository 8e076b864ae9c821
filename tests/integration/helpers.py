"""Helpers for tests against the real local Slurm cluster and real training."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Small, fast settings for the tiny model: a real LoRA SFT of a few steps on CPU.
FAST = [
    "framework.num_train_epochs=1",
    "framework.per_device_train_batch_size=4",
    "framework.gradient_accumulation_steps=1",
    "framework.cutoff_len=64",
    "framework.learning_rate=1e-3",
    "framework.save_steps=4",
    "eval.max_new_tokens=8",
]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}


def hpcft(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `python -m hpcft ...` as a user would, from the repository."""
    return subprocess.run(
        [sys.executable, "-m", "hpcft", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_run(run_root: Path) -> Path:
    (run,) = [p for p in run_root.iterdir() if p.is_dir()]
    return run


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id] = state.split()[0] if state else ""
    return states


def wait_final(job_ids: list[str], timeout_s: float = 600) -> dict[str, str]:
    """Poll sacct until every job is in a final state; return the states."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = sacct_states(job_ids)
        if len(states) == len(job_ids) and all(s in FINAL for s in states.values()):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not finished after {timeout_s} s: {states}")
        time.sleep(2)


def job_names() -> str:
    """Names of every job the cluster holds or has ever accepted (queue and accounting)."""
    queue = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout
    accounting = subprocess.run(
        ["sacct", "-X", "-n", "-a", "-S", "2000-01-01", "-o", "JobName%300"], capture_output=True, text=True, check=True
    ).stdout
    return queue + accounting


def assert_eval_outputs(run: Path, eval_rows: int) -> dict:
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for key in ("bleu-4", "rouge-l", "exact_match"):
        assert math.isfinite(metrics[key]) and 0 <= metrics[key] <= 100, metrics
    predictions = (run / "eval" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == eval_rows == metrics["rows"]
    assert all({"prompt", "label", "predict"} <= json.loads(p).keys() for p in predictions)
    return metrics
