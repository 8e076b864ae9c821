"""`deploy.placement=after_train`: deploy and eval in the train job's allocation.

Every node trains, as the train job does. Then training is marked finished
(`<run>/train/hpcft_train_done`), the other nodes' tasks end, and the first node runs the
deploy stage as a child process in the deploy stage's own interpreter (`cluster.deploy.python`:
vLLM's environment; `hpcft.jobs.deploy_here`), serving on the GPUs the deploy job would have
asked for, and the eval in the foreground, against that server, as their own jobs would: the
eval waits for the endpoint, releases the server once every answer is in, then scores. A
requeue (time limit, preemption) stops everything; the next attempt resumes where it
stopped: training from its last checkpoint, or, when the marker says it had finished,
straight to a fresh server and the eval's kept answers (`predictions.jsonl`, `answered.json`).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from hpcft.jobs.requeue import is_requeue
from hpcft.jobs.spec import AllocationJob
from hpcft.rundir import RunLayout, write_atomic

DONE = "hpcft_train_done"
"""The marker, in the training output, that training has finished in an earlier attempt."""
JOIN_S = 120.0
"""How long the job waits for its server to stop after the eval has released it."""


def train_done(job: AllocationJob) -> Path:
    return RunLayout(Path(job.train.run_dir)).train_output / DONE


def first_task() -> bool:
    return os.environ.get("SLURM_PROCID", "0") == "0"


def start_deploy(job: AllocationJob) -> subprocess.Popen[bytes]:
    """The deploy stage in its own interpreter (empty: this one), from its record pickled into
    the run's `slurm/` folder; its output goes to this job's log. It tells the eval when it
    fails (`deploy/failed`), which then stops waiting for an endpoint."""
    record = RunLayout(Path(job.train.run_dir)).slurm / "allocation_deploy.pkl"
    write_atomic(record, pickle.dumps(job.deploy).hex(), private=True)
    python = list(job.deploy_python) or [sys.executable]
    print(f"hpcft: serving with {' '.join(python)} in this job's allocation", flush=True)
    return subprocess.Popen([*python, "-m", "hpcft.jobs.deploy_here", str(record)])


def stopped(server: subprocess.Popen[bytes]) -> int | None:
    """The deploy's exit status once it has ended (at most `JOIN_S`); None if it has not."""
    try:
        return server.wait(JOIN_S)
    except subprocess.TimeoutExpired:
        server.terminate()
        return None


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
    server = start_deploy(job)
    try:
        summary = run_eval(job.eval)  # releases the server once every answer is in
    except BaseException as e:
        if not is_requeue(e):  # the eval said stop: let the server stop before the job ends
            stopped(server)
        raise
    if stopped(server):
        raise RuntimeError(f"the deploy stage ended with exit status {server.returncode} (its log is this job's)")
    return summary
