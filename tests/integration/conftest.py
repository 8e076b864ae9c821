"""Integration tests leave no job behind, whatever they assert: every job named in a
manifest under the test's folder is cancelled at the end (a no-op for finished ones)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import pytest

from tests.conftest import slurm_up

# Up to 4 tests run side by side on CI's 2 cores: a `cluster=local` run's jobs take one core's
# thread each (hpcft exports the cluster's CPUs per process unless this is set; slurmlab's
# nodes have 1 CPU each anyway). Threads that outnumber the cores spin-wait: 4x the CPU for
# the same tiny training.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def say_what_runs(request):
    """Integration tests take up to minutes each: name each one, and what it does, as it
    starts (pytest alone shows one dot when it ends)."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    doc = (request.function.__doc__ or "").strip().splitlines()
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # side by side (scripts/test.sh): say which worker
    line = f"[{time.strftime('%H:%M:%S')}]{f' {worker}' if worker else ''} {request.node.nodeid}"
    line += f": {doc[0]}" if doc else ""
    if capture is not None:
        with capture.global_and_fixture_disabled():  # else pytest captures it with the test's output
            if reporter is not None and not worker:
                reporter.write_line(line)
            else:  # an xdist worker's stderr is the terminal's
                print(line, file=sys.__stderr__, flush=True)
    yield


def jobs_of(tmp_path) -> list[str]:
    """The Slurm jobs named in the manifests under a test's folder (arrays by their id)."""
    ids = set()
    for path in tmp_path.rglob("manifest.json"):
        stages = json.loads(path.read_text()).get("stages", {})
        ids |= {str(s["job_id"]).split("_")[0] for s in stages.values() if s.get("job_id")}
    return sorted(ids)


def cpu_seconds_of(ids: list[str]) -> float:
    """CPU the jobs used so far, by Slurm's accounting (sacct's TotalCPU of each job, array
    tasks included; steps are summed into their job's line)."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-o", "JobID,TotalCPU", "-j", ",".join(ids)], capture_output=True, text=True
    ).stdout
    total = 0.0
    for line in out.splitlines():
        job, _, cpu = line.partition("|")
        if "." in job or not cpu:
            continue
        days, _, clock = cpu.rpartition("-")
        parts = [float(p) for p in clock.split(":")]
        total += 86400 * float(days or 0) + sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return total


def login_cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.fixture(autouse=True)
def cancel_leftover_jobs(tmp_path, record_property):
    """Also charges the test the CPU it cost: its own process and the commands it waited for
    (`cpu_login_s`), and its Slurm jobs (`cpu_jobs_s`); scripts/test_timing.py sums them."""
    before = login_cpu_seconds()
    yield
    record_property("cpu_login_s", round(login_cpu_seconds() - before, 1))
    ids = jobs_of(tmp_path) if slurm_up() else []
    if ids:
        record_property("cpu_jobs_s", round(cpu_seconds_of(ids), 1))
        subprocess.run(["scancel", *ids], capture_output=True, check=False)


FIRST = (
    "test_study.py",
    "test_sweep.py",
    "test_slurm_training.py",
    "test_reliability.py",
    "test_disk_faults.py",
    "test_job_faults.py",
    "test_vllm_serving.py",
    "test_vllm_checkpoints.py",
)
"""Modules whose tests mostly wait (requeues, time limits, arrays, servers): started first, so
that the CPU-bound tests run beside their waits rather than after them (scripts/test.sh)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return FIRST.index(name) if name in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: the order within a module is kept
