"""Helpers for tests against the real local Slurm cluster and real training."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import signal
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
NO_BASE = "eval.baseline=false"
"""For tests whose subject is not the base model's score: its second server costs a
LLaMA-Factory process (~8 s of CPU) per deploy. The base server's path is covered by
test_slurm_pipeline, the quick starts and the vLLM tests."""
HELD = "+cluster.additional_parameters.begin=now+1hour"
"""Held from its submission: the jobs wait in the queue and never run (tests whose subject is
the submission itself, not what the jobs do)."""
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


def wait_gone(job_ids: list[str], timeout_s: float = 120) -> None:
    """Poll squeue until none of the jobs (array tasks included) is in the queue: after
    `scancel` a job is CANCELLED in accounting while it may still be COMPLETING."""
    bases = {str(j).split("_")[0] for j in job_ids}
    deadline = time.monotonic() + timeout_s
    while True:
        queue = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True)
        left = [j for j in queue.stdout.split() if j.split("_")[0] in bases]
        if not left:
            return
        assert time.monotonic() < deadline, f"still queued after {timeout_s} s: {left}"
        time.sleep(0.5)


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


def attempt_states(job_id: str) -> list[str]:
    """The state of each run of the job (`sacct --duplicates` keeps one row per requeue)."""
    out = subprocess.run(["sacct", "-D", "-X", "-n", "-j", job_id, "-o", "State"], capture_output=True, text=True)
    return out.stdout.split()


def requeues(job_id: str) -> int:
    """How often Slurm requeued the job."""
    return attempt_states(job_id).count("REQUEUED")


def logs(run: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((run / "slurm").glob("*_log.*")))


def sacct_field(job_id: str, field: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", field], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def steps_logged(run: Path) -> list[int]:
    path = run / "train" / "trainer_log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["current_steps"] for line in path.read_text().splitlines() if line.strip()]


RESUMED = re.compile(r"Resuming training from checkpoint with epoch \S+ and global step (\d+)")
"""What the HF Trainer logs when it goes on from a checkpoint."""


def assert_resumed(run: Path, save_steps: int, logging_steps: int) -> None:
    """Each restart went on from a checkpoint (the Trainer says so), losing at most one save
    interval of logged steps, and training reached its end."""
    resumed = [int(step) for step in RESUMED.findall(logs(run))]
    steps = steps_logged(run)
    assert resumed and min(resumed) >= save_steps, f"no resume from a checkpoint: {resumed}, steps {steps}"
    for before, after in itertools.pairwise(steps):
        if after <= before:  # steps logged after the last checkpoint are trained again
            assert after > 0 and before - after <= save_steps + logging_steps, (before, after, steps)
    state = json.loads((run / "train" / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == steps[-1]


TRAIN_PROGRESS = re.compile(r"\bRUNNING\b.*\bstep (\d+)/(\d+), loss \S+, ETA \d+ (s|min|h|d)\b")
"""A running train stage's row in `status`: step/total, the last loss and an ETA."""


def train_progress_shown(run: Path) -> re.Match[str] | None:
    """`status` run as a user would; the train row's progress when it shows it now (the
    stage may be starting, between attempts or done: the caller polls)."""
    result = hpcft("status", str(run), timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(f"{run.name} ") and " train " in line]
    return next((m for row in rows if (m := TRAIN_PROGRESS.search(row))), None)


LONG = [
    "framework.per_device_train_batch_size=4",
    "framework.gradient_accumulation_steps=1",
    "framework.cutoff_len=32",
    "framework.save_steps=100",
    "framework.logging_steps=25",
]


LAB = Path(os.environ.get("HPCFT_SLURMLAB_DIR", "/tmp/hpcft-slurmlab"))


def kill_node(node: str) -> set[int]:
    """A lab node dies: its slurmd and every process of the job steps it runs stop at once
    (SIGSTOP), and the pids are returned for `revive_node` to end.

    Stopped, not killed: a dead machine answers nothing and resets no connection, so its
    peers hang until Slurm declares it dead (NODE_FAIL, then a requeue). SIGKILL here would
    make this one machine's kernel reset their sockets at once: the surviving rank fails
    first (gloo: "Connection reset by peer") and the job ends FAILED, as it would on a real
    cluster only for a process that crashed. Stopping slurmd alone would leave the job's
    processes running like ghosts. They are found by the node name Slurm puts in their
    environment, together with their slurmstepd parents."""
    victims = {int((LAB / "run" / f"slurmd-{node}.pid").read_text())}
    marker = f"SLURMD_NODENAME={node}".encode()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            victims.add(int(proc.name))
            if Path(f"/proc/{parent}/comm").read_text().strip() == "slurmstepd":
                victims.add(parent)
        except (OSError, ValueError):
            continue  # exited meanwhile
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    return victims


def revive_node(node: str, stopped: set[int], timeout_s: float = 60) -> None:
    """End the dead node's stopped processes, start its slurmd again and wait until Slurm
    takes it back (ReturnToService=2)."""
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while alive := [pid for pid in stopped if running(pid)]:  # the old slurmd's port free again
        assert time.monotonic() < deadline, f"{node}'s processes {alive} did not end"
        time.sleep(0.2)
    subprocess.run(["slurmd", "-f", os.environ["SLURM_CONF"], "-N", node], check=True)
    deadline = time.monotonic() + timeout_s
    while node_state(node) not in {"idle", "mixed", "allocated"}:
        assert time.monotonic() < deadline, f"{node} did not come back: {node_state(node)}"
        time.sleep(1)


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def node_state(node: str) -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip().rstrip("*~#")
