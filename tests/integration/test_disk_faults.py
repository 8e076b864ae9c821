"""A disk that fills up under a running eval, on the real cluster: the run's folder on a small
tmpfs, filled to the last page once the eval has answered a few rows.

What hpcft promises (docs/reliability.md): the failure is clean (every record write is
atomic: no record is left half-written; `status` says in one line what it could not
record), the deploy job releases its server although the eval could not say stop, and once
space returns a requeue of the deploy and the eval completes: state COMPLETED (not FAILED
on submitit's half-written save), every row answered once, the metrics written.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import FAST, hpcft, manifest, only_run, wait_final

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm, pytest.mark.fault]


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 16 MiB tmpfs (a finished tiny run takes 1.5 MiB); its jobs cancelled before it goes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "hpcft-full", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        records = [json.loads(path.read_text()) for path in disk.glob("*/manifest.json")]
        ids = [str(s["job_id"]) for record in records for s in record["stages"].values() if s.get("job_id")]
        subprocess.run(["scancel", *ids], check=False, capture_output=True)
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no page left."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 4096):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def wait_for(what: str, ready, timeout_s: float, poll_s: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(poll_s)


def queued(job_ids: list[str]) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i"], capture_output=True, text=True)
    return sorted(out.stdout.split()) == sorted(job_ids)


def test_a_disk_full_under_eval_fails_cleanly_releases_the_server_and_a_requeue_completes(small_disk, tmp_path):
    rows = 120
    evalset = tmp_path / "eval.json"
    evalset.write_text(json.dumps([{"instruction": f"Say {i}", "output": str(i)} for i in range(rows)]))
    args = [*FAST, f"evalset={evalset}", "eval.baseline=false", "eval.concurrency=1"]
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={small_disk}", *args)
    assert result.returncode == 0, result.stderr
    run = only_run(small_disk)
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    answers = run / "eval" / "predictions.jsonl"
    wait_for("eval answers", lambda: answers.exists() and len(answers.read_text().splitlines()) >= 5, 400)
    filler = fill(small_disk)
    assert wait_final([ids["eval"]], timeout_s=120) == {ids["eval"]: "FAILED"}
    # Every record whole; `status` shows the states and says in one line what it could not record.
    record = manifest(run)
    status = hpcft("status", str(run))
    assert status.returncode == 0 and "Traceback" not in status.stdout + status.stderr, status.stderr
    said = f"could not record these states in {run / 'manifest.json'}: No space left on device"
    assert said in status.stdout and f"--- {run.name} eval (FAILED)" in status.stdout, status.stdout
    assert manifest(run) == record
    # The server is released although the eval could not write its stop marker: the deploy
    # job sees the eval leave the queue (two looks, 30 s apart), the disk still full.
    wait_final([ids["deploy"]], timeout_s=180)
    assert not (run / "deploy" / "stop").exists()
    server = subprocess.run(["pgrep", "-f", str(run / "native" / "api.yaml")], capture_output=True, text=True)
    assert not server.stdout.split(), "the server still runs"
    # Space returns; the deploy and the eval are requeued; the eval goes on from its answers.
    filler.unlink()
    subprocess.run(["scontrol", "requeue", f"{ids['deploy']},{ids['eval']}"], check=True)
    wait_for("the requeued jobs", lambda: queued([ids["deploy"], ids["eval"]]), 30)
    states = wait_final([ids["deploy"], ids["eval"]], timeout_s=400)
    eval_log = Path(manifest(run)["stages"]["eval"]["logs"]["stdout"]).read_text(errors="replace")
    assert states == {ids["deploy"]: "COMPLETED", ids["eval"]: "COMPLETED"}, eval_log[-3000:]
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert sorted(r["index"] for r in lines) == list(range(rows))  # each row once, none cut off
    assert json.loads((run / "eval" / "metrics.json").read_text())["rows"] == rows
    resumed = [int(n) for n in re.findall(rf"{rows} rows, (\d+) already answered", eval_log)]
    assert resumed and resumed[-1] >= 5, resumed  # went on from the answers kept


def queued_names() -> str:
    return subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout


def test_a_full_run_root_at_submission_is_one_line_and_queues_nothing(small_disk):
    fill(small_disk)
    single = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={small_disk}", *FAST)
    sweep = hpcft("-m", "model=tiny_llama", "cluster=slurmlab", f"run_root={small_disk}", "framework.lora_rank=4,8")
    for result in (single, sweep):
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("hpcft: cannot write ") and line.endswith(": No space left on device"), line
    assert "config.yaml: No space left on device" in single.stderr  # the file it could not write
    names = queued_names()
    assert not any(f"{folder.name}." in names for folder in small_disk.iterdir())
