"""The train stage: run the framework's command on every node of the allocation.

One Slurm task per node. Every node gets the same rendezvous: MASTER_ADDR is the first
host of the allocation and MASTER_PORT is derived from the job id (the frameworks would
otherwise pick a random free port per node, and the nodes would never meet).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from hpcft.jobs.process import resolve
from hpcft.jobs.rendezvous import launch_env, master_port
from hpcft.jobs.spec import TrainJob
from hpcft.plots import ensure_loss_plot


def rendezvous() -> dict[str, str]:
    """NNODES / NODE_RANK / MASTER_ADDR / MASTER_PORT of this task, from submitit's job environment."""
    import submitit

    env = submitit.JobEnvironment()
    return {
        "NNODES": str(env.num_nodes),
        "NODE_RANK": str(env.node),
        "MASTER_ADDR": env.hostnames[0] if env.num_nodes > 1 else "127.0.0.1",
        "MASTER_PORT": str(master_port(str(env.job_id))),
    }


def ignore_warning_signal() -> None:
    """In the training process: ignore Slurm's USR2 warning, which submitit (in this job's own
    process) answers by requeueing; training goes on until Slurm stops it, so the last
    checkpoint is as recent as it can be."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def prepare_resume(output: Path) -> None:
    """Make `output` safe to resume from. The frameworks resume from the highest-numbered
    `checkpoint-*`, so one cut off while being written (no `trainer_state.json`, the last file
    the HF Trainer writes) is renamed out of their way; an attempt stopped before its first
    checkpoint left files the frameworks refuse, which are moved aside. Nothing is deleted."""
    stamp = int(time.time())
    for checkpoint in output.glob("checkpoint-*"):
        if not (checkpoint / "trainer_state.json").is_file():
            checkpoint.rename(checkpoint.with_name(f"incomplete-{checkpoint.name}-{stamp}"))
            print(f"hpcft train: {checkpoint.name} was cut off while being saved; set aside", flush=True)
    if output.is_dir() and any(output.iterdir()) and not any(output.glob("checkpoint-*")):
        aside = output.with_name(f"{output.name}.interrupted-{stamp}")
        output.rename(aside)
        print(f"hpcft train: no checkpoint yet; moved the partial output to {aside}", flush=True)


def run_train(job: TrainJob) -> str:
    argv = resolve(launch_env(job, rendezvous()))
    if job.resume_from_dir:
        prepare_resume(Path(job.resume_from_dir))
    print(f"hpcft train: {argv}", flush=True)
    result = subprocess.run(argv, env={**os.environ, **job.env}, check=False, preexec_fn=ignore_warning_signal)
    if result.returncode != 0:
        raise RuntimeError(f"training command failed with exit status {result.returncode}")
    if os.environ.get("SLURM_PROCID", "0") == "0":  # one picture per run, from the first node
        ensure_loss_plot(Path(job.run_dir) / "train", f"training loss: {Path(job.run_dir).name}")
    return f"train finished: {job.run_dir}/train"
