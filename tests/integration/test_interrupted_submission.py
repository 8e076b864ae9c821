"""Submission is all or nothing on the real cluster, however it ends: Ctrl-C or SIGKILL
while the second `sbatch` is in flight, a disk that fills after the first, a corrupt run
record. Afterwards, once `hpcft cancel` has run, no job of the run is left in the queue,
and `status` answers without a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcft import manifest as run_record
from hpcft.cli import main
from tests.conftest import REPO, needs_slurm
from tests.integration.helpers import FAST, hpcft

pytestmark = [needs_slurm, pytest.mark.slurm, pytest.mark.fault]

REAL_SBATCH = shutil.which("sbatch")


def slow_second_sbatch(folder: Path) -> Path:
    """An `sbatch` first on PATH: the first call goes straight through; the second writes
    `second.started`, waits 3 s, then submits for real and writes `second.done`."""
    folder.mkdir()
    shim = folder / "sbatch"
    shim.write_text(
        "#!/bin/sh\n"
        f'n=$(ls "{folder}" | grep -c "^call")\n'
        f'touch "{folder}/call$n"\n'
        f'if [ "$n" = 1 ]; then touch "{folder}/second.started"; sleep 3; '
        f'"{REAL_SBATCH}" "$@"; s=$?; touch "{folder}/second.done"; exit $s; fi\n'
        f'exec "{REAL_SBATCH}" "$@"\n'
    )
    shim.chmod(0o755)
    return folder


def wait_for(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def queued_jobs_of(run_name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1].startswith(f"{run_name}.")]


def assert_queue_empties(run_name: str) -> None:
    wait_for(lambda: not queued_jobs_of(run_name), 60, f"the jobs of {run_name} to leave the queue")


def default_sigint() -> None:
    # A shell without job control (CI, `cmd &`) starts its children with SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: restore the terminal's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_submission(run_root: Path, shims: Path) -> subprocess.Popen[str]:
    args = ["model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "cluster.time=5"]
    return subprocess.Popen(
        [sys.executable, "-m", "hpcft", *args],
        cwd=REPO,
        env={**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )


def the_run(run_root: Path) -> Path:
    (run,) = [p for p in run_root.iterdir() if p.is_dir()]
    return run


def test_ctrl_c_during_the_second_sbatch_cancels_the_first_job(run_root, tmp_path):
    shims = slow_second_sbatch(tmp_path / "bin")
    proc = start_submission(run_root, shims)
    wait_for((shims / "second.started").exists, 60, "the second sbatch")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "submitting stage 'deploy' was interrupted; cancelled train" in err and "Traceback" not in err
    run = the_run(run_root)
    record = json.loads((run / "manifest.json").read_text())
    assert record["status"] == "interrupted" and record["stages"]["train"]["state"] == "CANCELLED"
    assert_queue_empties(run.name)
    status = hpcft("status", str(run))
    assert status.returncode == 0 and "Traceback" not in status.stderr


def test_sigkill_during_the_second_sbatch_leaves_a_job_that_status_and_cancel_find(run_root, tmp_path):
    shims = slow_second_sbatch(tmp_path / "bin")
    proc = start_submission(run_root, shims)
    wait_for((shims / "second.started").exists, 60, "the second sbatch")
    proc.kill()  # SIGKILL: no handler runs; the sbatch already started goes on and submits
    proc.communicate(timeout=60)
    wait_for((shims / "second.done").exists, 60, "the cut-off sbatch to finish submitting")
    run = the_run(run_root)
    assert len(queued_jobs_of(run.name)) == 2  # train (recorded) and deploy (unrecorded)
    status = hpcft("status", str(run))
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "deploy?" in status.stdout and "(unrecorded)" in status.stdout
    cancel = hpcft("cancel", str(run))
    assert cancel.returncode == 0, cancel.stderr
    assert "cancelled" in cancel.stdout and "train" in cancel.stdout and "deploy" in cancel.stdout
    assert_queue_empties(run.name)


def test_a_disk_that_fills_after_the_first_sbatch_leaves_nothing_queued(run_root, monkeypatch, capsys):
    real_write, writes = run_record.write_json_atomic, []

    def full_disk(path, data):  # type: ignore[no-untyped-def]
        writes.append(path)
        if len(writes) == 2:  # the record, then: the write after the first sbatch
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(run_record, "write_json_atomic", full_disk)
    code = main(["model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "cancelled train" in err
    run = the_run(run_root)
    assert_queue_empties(run.name)
    record = json.loads((run / "manifest.json").read_text())
    assert record["status"] == "submit_failed"


def test_a_corrupt_run_record_still_lets_status_and_cancel_reach_the_jobs(run_root):
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST)
    assert result.returncode == 0, result.stderr
    run = the_run(run_root)
    (run / "manifest.json").write_text('{"run_name": "trunc')
    status = hpcft("status", str(run))
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "unreadable run record" in status.stdout
    cancel = hpcft("cancel", str(run))
    assert cancel.returncode == 0 and "Traceback" not in cancel.stderr
    assert_queue_empties(run.name)
    (run / "manifest.json").unlink()
    status = hpcft("status", str(run))
    assert status.returncode == 0 and "no run record" in status.stdout
