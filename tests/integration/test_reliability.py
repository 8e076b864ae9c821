"""Faults and load on the real local Slurm cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import (
    FAST,
    LAB,
    LONG,
    REPO,
    assert_resumed,
    attempt_states,
    hpcft,
    kill_node,
    logs,
    manifest,
    node_state,
    only_run,
    revive_node,
    wait_final,
    wait_gone,
)

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]


@pytest.mark.fault
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


@pytest.mark.fault
@pytest.mark.alone  # kills a node: the jobs of tests running beside it would die with it
def test_a_node_dying_under_a_two_node_train_requeues_it_and_it_resumes(run_root):
    overrides = [*LONG, "framework.num_train_epochs=100", "cluster.nodes=2", "eval.max_new_tokens=8"]
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *overrides)
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    deadline = time.monotonic() + 300
    while not list((run / "train").glob("checkpoint-*")):
        assert time.monotonic() < deadline, "no checkpoint appeared: " + logs(run)[-2000:]
        time.sleep(1)
    hosts = job_hosts(ids["train"])
    assert len(hosts) == 2, hosts
    victim = hosts[1]  # the job's second node; its first runs the batch script
    try:
        os.kill(int((LAB / "run" / f"slurmd-{victim}.pid").read_text()), 0)
    except OSError:
        subprocess.run(["scancel", *ids.values()], check=False)
        pytest.skip("the lab's slurmd processes are not visible from here (another PID namespace)")
    kill_node(victim)
    try:
        # The controller declares the node dead after SlurmdTimeout=30 s (the lab's
        # slurm.conf) and ends this run of the job with NODE_FAIL before requeueing it.
        deadline = time.monotonic() + 180
        while "NODE_FAIL" not in attempt_states(ids["train"]):
            assert time.monotonic() < deadline, (node_state(victim), attempt_states(ids["train"]))
            time.sleep(2)
    finally:
        revive_node(victim)
    states = wait_final(list(ids.values()), timeout_s=900)
    attempts = attempt_states(ids["train"])
    assert len(attempts) >= 2 and attempts[0] == "NODE_FAIL", attempts
    # Requeued (Slurm's JobRequeue=1) and resumed from its last checkpoint; the dependents
    # waited for it and then ran, never stranded.
    assert states == dict.fromkeys(ids.values(), "COMPLETED"), states
    assert_resumed(run, save_steps=100, logging_steps=25)


def job_hosts(job_id: str) -> list[str]:
    """The nodes a running job holds, in order (`node[3-4]` -> node3, node4)."""
    nodelist = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True).stdout
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist.strip()], capture_output=True, text=True)
    return out.stdout.split()


@pytest.mark.fault
def test_a_server_that_dies_mid_eval_fails_eval_with_the_cause(run_root, tmp_path):
    rows = [{"instruction": f"Say {i}", "output": str(i)} for i in range(3000)]
    evalset = tmp_path / "eval.json"
    evalset.write_text(json.dumps(rows))
    args = ["model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, f"evalset={evalset}"]
    result = hpcft(*args, "eval.concurrency=1", "eval.retries=2")
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    answers = run / "eval" / "predictions.jsonl"
    deadline = time.monotonic() + 400
    while not (answers.exists() and len(answers.read_text().splitlines()) >= 5):
        assert time.monotonic() < deadline, "eval never got going"
        time.sleep(0.2)
    server = subprocess.run(["pgrep", "-f", str(run / "native" / "api.yaml")], capture_output=True, text=True)
    assert server.stdout.split(), "no server process found"
    for pid in server.stdout.split():
        os.kill(int(pid), 9)  # the server dies; the deploy job and the eval's requests notice
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    states = wait_final([ids["eval"]], timeout_s=120)
    assert states[ids["eval"]] == "FAILED"
    kept = (run / "eval" / "predictions.jsonl").read_text().splitlines()
    assert 5 <= len(kept) < 3000  # the answers before the death are kept for a rerun
    status = hpcft("status", str(run))
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "cause: " in status.stdout and "Connection refused" in status.stdout, status.stdout
    assert hpcft("cancel", str(run)).returncode == 0
    wait_gone(list(ids.values()))
