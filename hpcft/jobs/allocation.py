"""`deploy.placement=after_train`: deploy and eval in the train job's allocation.

Every node trains, as the train job does. Then training is marked finished
(`<run>/train/hpcft_train_done`), the other nodes' tasks end, and the first node runs the
deploy stage in a background thread (its server a child process, on the GPUs the deploy job
would have asked for) and the eval in the foreground, against that server, as their own jobs
would: the eval waits for the endpoint, releases the server once every answer is in, then
scores. A requeue (time limit, preemption) stops everything; the next attempt resumes where
it stopped: training from its last checkpoint, or, when the marker says it had finished,
straight to a fresh server and the eval's kept answers (`predictions.jsonl`, `answered.json`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hpcft.jobs.requeue import is_requeue
from hpcft.jobs.spec import AllocationJob, DeployJob
from hpcft.rundir import RunLayout, write_atomic

DONE = "hpcft_train_done"
"""The marker, in the training output, that training has finished in an earlier attempt."""
JOIN_S = 120.0
"""How long the job waits for its server to stop after the eval has released it."""


def train_done(job: AllocationJob) -> Path:
    return RunLayout(Path(job.train.run_dir)).train_output / DONE


def first_task() -> bool:
    return os.environ.get("SLURM_PROCID", "0") == "0"


def serve_in_background(job: DeployJob, failures: list[BaseException]) -> threading.Thread:
    """The deploy stage in a daemon thread (a requeue ends the process without waiting for
    it); a failure is kept in `failures` (the deploy has already told the eval, which stops
    waiting: `hpcft.jobs.evaluate.wait_endpoint`)."""
    from hpcft.jobs.deploy import run_deploy

    def deploy() -> None:
        try:
            print(run_deploy(job), flush=True)
        except BaseException as e:
            failures.append(e)

    thread = threading.Thread(target=deploy, name="hpcft-deploy", daemon=True)
    thread.start()
    return thread


def run_allocation(job: AllocationJob) -> str:
    from hpcft.jobs.evaluate import run_eval
    from hpcft.jobs.train import run_train

    marker = train_done(job)
    if marker.is_file():
        print("hpcft: training finished in an earlier attempt of this job; serving and evaluating", flush=True)
    else:
        run_train(job.train)
        if first_task():
            write_atomic(marker, "training finished\n")
    if not first_task():
        return f"train finished: {job.train.run_dir}/train (node {os.environ.get('SLURM_NODEID', '?')})"
    failures: list[BaseException] = []
    thread = serve_in_background(job.deploy, failures)
    try:
        summary = run_eval(job.eval)  # releases the server once every answer is in
    except BaseException as e:
        if not is_requeue(e):  # the eval said stop: let the server stop before the job ends
            thread.join(JOIN_S)
        raise
    thread.join(JOIN_S)
    if failures:
        raise RuntimeError(f"the server failed after the eval: {failures[0]}") from failures[0]
    return summary
