"""Integration tests leave no job behind, whatever they assert: every job named in a
manifest under the test's folder is cancelled at the end (a no-op for finished ones)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import slurm_up


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
