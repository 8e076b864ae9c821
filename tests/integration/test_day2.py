"""Day-2 commands against the real local Slurm cluster: status, logs, cancel."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import FAST, hpcft, manifest, wait_final, wait_gone

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]


def submit(run_root: Path, *overrides: str) -> Path:
    before = set(run_root.iterdir())
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, *overrides)
    assert result.returncode == 0, result.stderr
    (run,) = set(run_root.iterdir()) - before
    return run


def ids(run: Path) -> dict[str, str]:
    return {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}


@pytest.fixture
def counted_scheduler(tmp_path) -> Path:
    """squeue/sacct wrappers first on PATH that log each call, then run the real command."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in ("squeue", "sacct"):
        real = subprocess.run(["which", name], capture_output=True, text=True, check=True).stdout.strip()
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\necho {name} >> "{log}"\nexec "{real}" "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return log


def test_status_logs_and_cancel(run_root, counted_scheduler):
    failing = submit(run_root, "framework.lora_target=nope")
    cancelled = submit(run_root)
    # Held from the start (sbatch --begin): a hold after submitting races the scheduler, which
    # starts an idle cluster's job at once.
    pending = submit(run_root, "+cluster.additional_parameters.begin=now+1hour")

    # logs: the train log of a running job
    log = Path(manifest(cancelled)["stages"]["train"]["logs"]["stdout"])
    deadline = time.monotonic() + 120
    while not (log.exists() and log.stat().st_size):
        assert time.monotonic() < deadline, "train never started"
        time.sleep(1)
    shown = hpcft("logs", str(cancelled), "--stage", "train", "--stdout", "-n", "20")
    assert shown.returncode == 0 and "submitit" in shown.stdout

    # cancel: the run's jobs leave the queue, dependents included
    result = hpcft("cancel", str(cancelled))
    assert result.returncode == 0 and "cancelled" in result.stdout
    wait_final(list(ids(cancelled).values()), timeout_s=60)
    wait_gone(list(ids(cancelled).values()))

    wait_final(list(ids(failing).values()), timeout_s=300)
    env = {"PATH": f"{counted_scheduler.parent / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    status = hpcft("status", str(failing), str(cancelled), str(pending), env=env)
    assert status.returncode == 0, status.stderr
    assert len(counted_scheduler.read_text().split()) <= 2
    lines = status.stdout.splitlines()

    def state(run: Path, stage: str) -> str:
        return next(line for line in lines if line.startswith(run.name) and f" {stage} " in line)

    assert "FAILED" in state(failing, "train")
    assert "CANCELLED" in state(failing, "deploy") and "CANCELLED" in state(failing, "eval")
    assert "CANCELLED" in state(cancelled, "train")
    assert "PENDING (BeginTime)" in state(pending, "train")
    # Slurm gives one reason: the begin time or the dependency, whichever it checks first
    assert re.search(r"PENDING \((Dependency|BeginTime)\)", state(pending, "eval")), state(pending, "eval")
    assert f"--- {failing.name} train (FAILED)" in status.stdout  # the tail of the failed log
    assert manifest(failing)["stages"]["train"]["state"] == "FAILED"  # recorded for later

    assert hpcft("cancel", str(pending)).returncode == 0
    wait_final(list(ids(pending).values()), timeout_s=60)
    wait_gone(list(ids(pending).values()))


@pytest.mark.canary
def test_day2_commands_refuse_what_is_not_a_run(tmp_path):
    for command in ("status", "logs", "cancel"):
        result = hpcft(command, str(tmp_path))
        assert result.returncode == 2 and "not a run directory" in result.stderr
