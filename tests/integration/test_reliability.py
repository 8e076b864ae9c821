"""Faults and load on the real local Slurm cluster."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from submitit.core.utils import DelayedSubmission

from hpcft.rundir import RunLayout, write_json_atomic
from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import (
    FAST,
    HELD,
    LAB,
    LONG,
    NO_BASE,
    REPO,
    assert_resumed,
    attempt_states,
    hpcft,
    kill_node,
    logs,
    manifest,
    node_state,
    only_run,
    requeues,
    revive_node,
    wait_final,
    wait_gone,
)

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]


@pytest.mark.fault
def test_a_server_that_never_comes_up_fails_eval_quickly_with_the_reason(run_root):
    # sglang is a valid backend name but is not installed here: the server exits at start.
    args = [*FAST, NO_BASE, "deploy.backend=sglang"]
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *args)
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
                HELD,  # their landing is the subject: 20 trainings started only to be cancelled cost ~60 s of CPU
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
    overrides = [*LONG, "framework.num_train_epochs=100", "cluster.nodes=2", "eval.max_new_tokens=8", NO_BASE]
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
    stopped = kill_node(victim)
    try:
        # The controller declares the node dead after SlurmdTimeout=30 s (the lab's
        # slurm.conf) and ends this run of the job with NODE_FAIL before requeueing it.
        deadline = time.monotonic() + 180
        while "NODE_FAIL" not in attempt_states(ids["train"]):
            assert time.monotonic() < deadline, (node_state(victim), attempt_states(ids["train"]))
            time.sleep(2)
    finally:
        revive_node(victim, stopped)
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
    args = ["model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, NO_BASE, f"evalset={evalset}"]
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


REQUEST = re.compile(r'"model": "([^"]*)",\s*"messages": \[\s*\{\s*"role": "user",\s*"content": "([^"]*)"')
"""A chat request as LLaMA-Factory's API server logs it: the model asked and the row's prompt."""


def asked(deploy_log: Path, prompts: list[str]) -> Counter[tuple[str, str]]:
    """(model, prompt) -> times the server was asked one of `prompts`, from its own log
    (its readiness probe, "hi", left out)."""
    wanted = set(prompts)
    return Counter(r for r in REQUEST.findall(deploy_log.read_text(errors="replace")) if r[1] in wanted)


def wait_for(what: str, ready: Callable[[], bool], timeout_s: float, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(poll_s)


@pytest.mark.fault
def test_an_eval_requeued_at_its_time_limit_resumes_on_the_same_server_asking_no_row_twice(run_root, tmp_path):
    """Time-limit requeue of eval: the server stays up; same answers as an uninterrupted eval."""
    # Bounded by state: the test sends Slurm's time-limit warning (USR2, what slurmctld sends
    # cluster.signal_delay_s before the limit) once 100 of the 400 rows are answered, so the
    # requeue lands mid-eval however fast this machine answers. With eval.time=1 submitit
    # takes it for a time-out, as it is by its clock; a slow attempt may meet the real
    # 1-minute limit too: with the machine's CPU all in use, attempts answered so few rows
    # that 5 requeues ran out (ci-like, 95 % busy), so 20 are allowed, each one resuming.
    rows, signal_at = 400, 100
    evalset = tmp_path / "eval.json"
    evalset.write_text(json.dumps([{"instruction": f"Say {i}", "output": str(i)} for i in range(rows)]))
    args = [*FAST, f"evalset={evalset}", "eval.baseline=false", "eval.concurrency=1", "eval.time=1"]
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *args, "cluster.max_requeues=20")
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    # The uninterrupted eval of the same rows runs first, on the same server, while the run's
    # own eval is held (pending: its server must keep serving through that too).
    subprocess.run(["scontrol", "hold", ids["eval"]], check=True)
    wait_for("the endpoint", (run / "deploy" / "endpoint.json").exists, timeout_s=400, poll_s=1)
    reference = uninterrupted_eval(run, ids["eval"], tmp_path / "reference")
    subprocess.run(["scontrol", "release", ids["eval"]], check=True)
    answers = run / "eval" / "predictions.jsonl"
    wait_for("eval answers", lambda: answers.exists() and len(answers.read_text().splitlines()) >= signal_at, 300)
    # (Refused if the real limit has just requeued it: that requeue is then the one checked.)
    subprocess.run(["scancel", "--signal=USR2", ids["eval"]], check=False)
    states = wait_final([ids["eval"], ids["deploy"]], timeout_s=900)
    eval_log = Path(manifest(run)["stages"]["eval"]["logs"]["stdout"]).read_text()
    assert states == {ids["eval"]: "COMPLETED", ids["deploy"]: "COMPLETED"}, eval_log[-3000:]
    assert requeues(ids["eval"]) >= 1 and "this job is timed-out" in logs(run)
    resumed = [int(n) for n in re.findall(rf"{rows} rows, (\d+) already answered", eval_log)]
    assert any(signal_at <= n < rows for n in resumed), resumed  # went on from the answers kept
    assert attempt_states(ids["deploy"]) == ["COMPLETED"]  # one server all along, stopped when eval ended
    deploy_log = Path(manifest(run)["stages"]["deploy"]["logs"]["stdout"])
    assert "hpcft deploy: eval is done, stopping the server" in deploy_log.read_text()
    model = json.loads((run / "eval" / "metrics.json").read_text())["model"]
    prompts = [f"Say {i}" for i in range(rows)]
    assert asked(deploy_log, prompts) == Counter({(m, p): 1 for p in prompts for m in (model, "reference")})
    assert answers.read_text() == (reference.eval / "predictions.jsonl").read_text()
    got, want = (json.loads(p.read_text()) for p in (run / "eval" / "metrics.json", reference.metrics))
    assert {**got, "model": "reference"} == want


def uninterrupted_eval(run: Path, eval_id: str, root: Path) -> RunLayout:
    """The run's own eval job (as pickled for Slurm) run here, start to end, through the same
    server under another model name (LLaMA-Factory's server answers any), so the server's
    log tells its requests apart."""
    from hpcft.jobs.evaluate import run_eval

    job = DelayedSubmission.load(run / "slurm" / f"{eval_id}_submitted.pkl").args[0]
    layout = RunLayout(root)
    endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
    write_json_atomic(layout.endpoint, {**endpoint, "model": "reference"})
    run_eval(dataclasses.replace(job, run_dir=str(root)))
    return layout


@pytest.mark.fault
def test_an_eval_that_ends_without_saying_so_still_releases_its_server(run_root):
    """An eval cancelled alone (no stop marker): the deploy sees it leave the queue and stops."""
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "eval.baseline=false")
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    subprocess.run(["scontrol", "hold", ids["eval"]], check=True)  # so that it cannot end by itself first
    wait_for("the endpoint", (run / "deploy" / "endpoint.json").exists, timeout_s=400, poll_s=1)
    subprocess.run(["scancel", ids["eval"]], check=True)  # as a full disk or a kill: it says nothing
    states = wait_final([ids["deploy"]], timeout_s=180)  # two looks at the queue, 30 s apart
    deploy_log = Path(manifest(run)["stages"]["deploy"]["logs"]["stdout"]).read_text()
    assert states == {ids["deploy"]: "COMPLETED"}, deploy_log[-2000:]
    assert f"eval job {ids['eval']} left the queue without saying it was done" in deploy_log
    assert not (run / "deploy" / "stop").exists()
