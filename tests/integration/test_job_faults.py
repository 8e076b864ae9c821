"""Jobs of a run that die or lose what they need, on the real cluster: the eval fails soon,
naming why, instead of waiting out its time limit or its endpoint timeout."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import FAST, hpcft, manifest, only_run, wait_final

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm, pytest.mark.fault]


def state_of(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def test_a_deploy_job_that_dies_before_serving_fails_the_waiting_eval_with_the_reason(run_root):
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "eval.baseline=false")
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    deadline = time.monotonic() + 400
    while state_of(ids["deploy"]) != "RUNNING":  # train done, the server loading (tens of seconds)
        assert time.monotonic() < deadline, f"deploy never ran: {state_of(ids['deploy'])}"
        time.sleep(0.2)
    subprocess.run(["scancel", ids["deploy"]], check=True)  # as a preemption or an admin would
    started = time.monotonic()
    states = wait_final([ids["deploy"], ids["eval"]], timeout_s=240)
    assert states == {ids["deploy"]: "CANCELLED", ids["eval"]: "FAILED"}, states
    assert time.monotonic() - started < 200  # two looks at the queue, not eval.endpoint_timeout_s (1 h)
    said = f"the deploy job {ids['deploy']} left the queue without publishing an endpoint"
    assert said in Path(manifest(run)["stages"]["eval"]["logs"]["stderr"]).read_text()
    assert not (run / "deploy" / "endpoint.json").exists()
    status = hpcft("status", str(run))
    assert status.returncode == 0 and f"cause: RuntimeError: {said}" in status.stdout, status.stdout


def test_an_eval_whose_server_key_is_gone_fails_at_once_naming_it_and_releases_the_server(run_root):
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "eval.baseline=false")
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    subprocess.run(["scontrol", "hold", ids["eval"]], check=True)  # eval waits behind train and deploy anyway
    deadline = time.monotonic() + 400
    while not (run / "deploy" / "endpoint.json").exists():
        assert time.monotonic() < deadline, "no endpoint"
        time.sleep(0.5)
    key = run / "deploy" / "api_key"
    key.unlink()  # a clean-up script, a quota purge: the server keeps its key, the eval cannot read it
    subprocess.run(["scontrol", "release", ids["eval"]], check=True)
    states = wait_final([ids["eval"], ids["deploy"]], timeout_s=180)
    assert states == {ids["eval"]: "FAILED", ids["deploy"]: "COMPLETED"}, states
    assert (run / "deploy" / "stop").read_text() == "eval ended: FileNotFoundError\n"  # the server released at once
    status = hpcft("status", str(run))
    assert status.returncode == 0 and "Traceback" not in status.stdout + status.stderr
    assert f"cause: FileNotFoundError: [Errno 2] No such file or directory: '{key}'" in status.stdout, status.stdout
