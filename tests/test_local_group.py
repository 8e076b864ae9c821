"""A local (`cluster=local`) sweep runs each run's stages in one process group that
`python -m hpcft cancel` and the death of the sweep's process end (hpcft.localgroup).

No Slurm: real `python -m hpcft -m ... cluster=local` processes. The stage's interpreter is
a site wrapper (`cluster.python`) that records its pid, starts a child and waits, standing in
for a long training with its worker processes. Only SIGKILL and `cancel` are used: a shell
without job control (CI) starts background processes with SIGINT ignored.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_LLAMA

pytestmark = pytest.mark.skipif(not (TINY_LLAMA / "config.json").is_file(), reason="tiny model missing")


def alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet reaped by its parent, counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(what: str, ready, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(0.1)


def start_sweep(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, Path]:
    """A 2-point local sweep whose first stage waits for ever; its process, its folder and the
    file where each stage process writes its pid and its child's."""
    pids = tmp_path / "pids"
    stage = tmp_path / "stage.sh"
    stage.write_text(f'#!/bin/sh\necho $$ >> "{pids}"\nsleep 600 &\necho $! >> "{pids}"\nwait\n')
    stage.chmod(0o755)
    args = ["-m", "model=tiny_llama", "cluster=local", f"cluster.python=[{stage}]", "framework.lora_rank=4,8"]
    process = subprocess.Popen(
        [sys.executable, "-m", "hpcft", *args, f"run_root={tmp_path / 'runs'}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # away from pytest's own group, whatever is signalled
    )
    wait_until("the first stage and its child", lambda: len(read_pids(pids)) == 2, 120)
    (sweep,) = (tmp_path / "runs").iterdir()
    return process, sweep, pids


def read_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_the_sweeps_death_ends_its_stage_processes(tmp_path):
    process, sweep, pids = start_sweep(tmp_path)
    stage_pids = read_pids(pids)
    assert all(alive(p) for p in stage_pids)
    process.kill()  # SIGKILL: no handler of hpcft runs
    process.communicate(timeout=30)
    wait_until("the stage processes to end", lambda: not any(alive(p) for p in stage_pids), 30)
    status = subprocess.run(
        [sys.executable, "-m", "hpcft", "status", str(sweep)], cwd=REPO, capture_output=True, text=True
    )
    assert status.returncode == 0 and "CANCELLED" in status.stdout and "RUNNING" not in status.stdout, status.stdout
    assert json.loads((sweep / "0" / "manifest.json").read_text())["status"] == "interrupted"


def test_cancel_ends_a_local_sweeps_stages_and_the_sweep(tmp_path):
    process, sweep, pids = start_sweep(tmp_path)
    stage_pids = read_pids(pids)
    cancel = subprocess.run(
        [sys.executable, "-m", "hpcft", "cancel", str(sweep)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert cancel.returncode == 0 and "Traceback" not in cancel.stderr, cancel.stderr
    assert "nothing to cancel" not in cancel.stdout, cancel.stdout
    wait_until("the stage processes to end", lambda: not any(alive(p) for p in stage_pids), 30)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].endswith("cancelled (python -m hpcft cancel)"), err
    assert read_pids(pids) == stage_pids  # the second point never started
    status = subprocess.run(
        [sys.executable, "-m", "hpcft", "status", str(sweep)], cwd=REPO, capture_output=True, text=True
    )
    assert status.returncode == 0 and "CANCELLED" in status.stdout, status.stdout + status.stderr
