"""Integration tests leave no job behind, whatever they assert: every job named in a
manifest under the test's folder is cancelled at the end (a no-op for finished ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import slurm_up


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


@pytest.fixture(autouse=True)
def cancel_leftover_jobs(tmp_path):
    yield
    if not slurm_up():
        return
    ids = set()
    for path in tmp_path.rglob("manifest.json"):
        stages = json.loads(path.read_text()).get("stages", {})
        ids |= {str(s["job_id"]).split("_")[0] for s in stages.values() if s.get("job_id")}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True, check=False)


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
