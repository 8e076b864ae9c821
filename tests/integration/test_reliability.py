"""Faults and load on the real local Slurm cluster."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import FAST, REPO, hpcft, manifest, only_run, wait_final

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]


def test_a_server_that_never_comes_up_fails_eval_quickly_with_the_reason(run_root):
    # sglang is a valid backend name but is not installed here: the server exits at start.
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "deploy.backend=sglang")
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    states = wait_final(list(ids.values()), timeout_s=400)
    assert states == {ids["train"]: "COMPLETED", ids["deploy"]: "FAILED", ids["eval"]: "FAILED"}
    assert "the server exited with status" in (run / "deploy" / "failed").read_text()
    eval_log = manifest(run)["stages"]["eval"]["logs"]["stderr"]
    assert "the deploy job failed" in Path(eval_log).read_text()
    status = hpcft("status", str(run))
    assert f"--- {run.name} deploy (FAILED)" in status.stdout


def test_twenty_concurrent_submissions_land_apart_with_their_own_dependencies(run_root):
    def submit(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "hpcft",
                "model=tiny_llama",
                "cluster=slurmlab",
                f"run_root={run_root}",
                "name=same",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(submit, range(20)))
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if r.returncode]
    runs = sorted(run_root.iterdir())
    assert len(runs) == 20 and len({r.name for r in runs}) == 20
    all_ids = []
    for run in runs:
        ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
        all_ids += ids.values()
        out = subprocess.run(["scontrol", "show", "job", ids["eval"]], capture_output=True, text=True).stdout
        assert f"afterok:{ids['train']}" in out and f"after:{ids['deploy']}" in out
    assert len(set(all_ids)) == 60
    subprocess.run(["scancel", *all_ids], check=True)
