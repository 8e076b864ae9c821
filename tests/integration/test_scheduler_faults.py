"""The scheduler out of reach, on the real cluster, and a run record that cannot be written.

The controller is made unreachable for hpcft alone (the lab is shared: its slurmctld keeps
running): a copy of the lab's `slurm.conf` sends the Slurm clients to a port nothing listens
on (a dead controller) or to a socket that accepts and never answers (a hung one), with a
1-second `MessageTimeout`. Day-2 commands and submissions then answer in one line, exit 1,
saying the scheduler is unreachable; nothing is recorded that did not happen, and once the
controller answers again the run's jobs are found and cancelled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_slurm
from tests.integration.helpers import FAST, HELD, hpcft, manifest, only_run, wait_gone

pytestmark = [needs_slurm, pytest.mark.slurm, pytest.mark.fault]

RUN = ("model=tiny_llama", "cluster=slurmlab", *FAST)


def conf_for_port(folder: Path, port: int) -> Path:
    """The lab's slurm.conf with the controller at `port` and a 1-second message timeout."""
    folder.mkdir()
    text = re.sub(r"(?m)^SlurmctldPort=.*$", f"SlurmctldPort={port}", Path(os.environ["SLURM_CONF"]).read_text())
    (folder / "slurm.conf").write_text(re.sub(r"(?m)^MessageTimeout=.*$", "", text) + "\nMessageTimeout=1\n")
    return folder / "slurm.conf"


@pytest.fixture(params=["dead", "hung"])
def unreachable(request, tmp_path) -> Iterator[tuple[Path, str]]:
    """A slurm.conf whose controller is dead (a port nothing listens on) or hung (a socket
    that accepts and never answers), and what Slurm's clients then say."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if request.param == "hung":
            listener.listen(64)
            yield conf_for_port(tmp_path / "conf", port), "Socket timed out on send/recv operation"
            return
    yield conf_for_port(tmp_path / "conf", port), "Unable to contact slurm controller (connect failure)"


def submit(run_root: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    run_root.mkdir(exist_ok=True)
    return hpcft(*RUN, f"run_root={run_root}", *extra, env=env)


def one_line(text: str) -> str:
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    return text.strip()


def test_an_unreachable_controller_gets_one_line_from_status_cancel_and_submit(unreachable, tmp_path):
    conf, said = unreachable
    assert submit(tmp_path / "held", HELD).returncode == 0
    run, env = only_run(tmp_path / "held"), {"SLURM_CONF": str(conf)}
    started = time.monotonic()
    for command in ("status", "cancel"):
        result = hpcft(command, str(run), env=env)
        assert result.returncode == 1, result.stderr
        squeue_said = f"squeue failed (exit 1): slurm_load_jobs error: {said}"
        assert one_line(result.stderr) == f"hpcft: the scheduler is unreachable: {squeue_said}"
    result = submit(tmp_path / "new", env=env)
    assert result.returncode == 1, result.stderr
    assert one_line(result.stderr) == (
        f"hpcft: the scheduler is unreachable: sbatch failed: Batch job submission failed: {said}; "
        "stage 'train' not submitted, nor any other"
    )
    assert manifest(only_run(tmp_path / "new"))["status"] == "submit_failed"
    logs = hpcft("logs", str(run), env=env)  # reads files only: it needs no scheduler
    assert logs.returncode == 2 and one_line(logs.stderr).endswith("no log yet (the job has not started)")
    assert time.monotonic() - started < 60  # Slurm's timeout, not a hang
    # The controller back: nothing was cancelled or recorded meanwhile.
    assert {s["state"] for s in manifest(run)["stages"].values()} == {"SUBMITTED"}
    status = hpcft("status", str(run))
    assert status.returncode == 0 and status.stdout.count("PENDING") == 3, status.stdout
    assert hpcft("cancel", str(run)).returncode == 0


def lost_after_first_sbatch(folder: Path, conf: Path) -> Path:
    """sbatch, squeue and scancel first on PATH: the first sbatch reaches the controller, then
    it is lost (every later call goes to `conf`)."""
    folder.mkdir()
    lost = folder / "lost"
    for name in ("sbatch", "squeue", "scancel"):
        real = shutil.which(name)
        then = f'touch "{lost}"; ' if name == "sbatch" else ""
        (folder / name).write_text(
            f'#!/bin/sh\nif [ -e "{lost}" ]; then SLURM_CONF="{conf}" exec "{real}" "$@"; fi\n'
            f'{then}out=$("{real}" "$@"); s=$?; echo "$out"; exit $s\n'
        )
        (folder / name).chmod(0o755)
    return folder


def test_a_controller_lost_mid_submission_leaves_a_job_the_record_and_cancel_still_know(unreachable, tmp_path):
    conf, said = unreachable
    shims = lost_after_first_sbatch(tmp_path / "bin", conf)
    result = submit(tmp_path / "runs", env={"PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 1, result.stderr
    run = only_run(tmp_path / "runs")
    record = manifest(run)
    train = str(record["stages"]["train"]["job_id"])
    assert one_line(result.stderr) == (
        f"hpcft: the scheduler is unreachable: sbatch failed: Batch job submission failed: {said}; "
        f"stage 'deploy' not submitted, cancelled nothing; could not cancel train (job {train}): "
        f"python -m hpcft cancel {run} once the scheduler answers"
    )
    # The record says what happened: train queued (not falsely cancelled), the rest never submitted.
    assert record["status"] == "submit_failed"
    assert [s["state"] for s in record["stages"].values()] == ["SUBMITTED", "NOT_SUBMITTED", "NOT_SUBMITTED"]
    cancel = hpcft("cancel", str(run))  # the controller back
    assert cancel.returncode == 0 and train in cancel.stdout, cancel.stdout
    wait_gone([train])


@pytest.fixture
def read_only(tmp_path) -> Iterator[Path]:
    """A folder made read-only by a read-only bind mount over itself (root passes modes)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_run_record_on_a_read_only_file_system_still_lets_status_and_cancel_work(read_only):
    assert submit(read_only, HELD).returncode == 0
    run = only_run(read_only)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(read_only)], check=True)
    record = manifest(run)
    status = hpcft("status", str(run))
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    said = f"could not record these states in {run / 'manifest.json'}: Read-only file system"
    assert status.stdout.count("PENDING") == 3 and said in status.stdout + status.stderr, status.stdout
    cancel = hpcft("cancel", str(run))
    assert cancel.returncode == 0 and "cancelled" in cancel.stdout, cancel.stderr
    assert "Traceback" not in cancel.stderr and cancel.stderr.splitlines() == [
        f"hpcft: could not record {what} in {run / 'manifest.json'}: Read-only file system"
        for what in ("these states", "the cancel")
    ]
    wait_gone([str(s["job_id"]) for s in record["stages"].values()])
    assert manifest(run) == record  # untouched, and whole
    after = hpcft("status", str(run))  # the states come from the scheduler
    assert after.returncode == 0 and after.stdout.count("CANCELLED") == 3, after.stdout
    assert json.loads((run / "manifest.json").read_text())["stages"]["train"]["state"] == "SUBMITTED"
