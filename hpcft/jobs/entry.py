"""The callables submitit runs inside every job: dispatch a stage record to its runner.

Every attempt first clears the half-written saves an earlier attempt of the same job left
(`hpcft.jobs.requeue`), so a rerun after a full disk or a kill mid-save can end COMPLETED.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import submitit

from hpcft.jobs.requeue import clear_leftover_saves, mark_requeue
from hpcft.jobs.spec import AllocationJob, DeployJob, EvalJob, StageJob, TrainJob


def run_stage(job: StageJob) -> str:
    """Run one stage in this job; return a one-line summary (submitit pickles it as the result)."""
    clear_leftover_saves()
    # Imported here so that unpickling on a compute node loads only what the stage needs.
    if isinstance(job, TrainJob):
        from hpcft.jobs.train import run_train

        return run_train(job)
    if isinstance(job, DeployJob):
        from hpcft.jobs.deploy import run_deploy

        return run_deploy(job)
    if isinstance(job, EvalJob):
        from hpcft.jobs.evaluate import run_eval

        return run_eval(job)
    if isinstance(job, AllocationJob):
        from hpcft.jobs.allocation import run_allocation

        return run_allocation(job)
    raise TypeError(f"unknown stage job {type(job).__name__}")


class ResumableStage(submitit.helpers.Checkpointable):
    """A train or eval stage that Slurm may stop (time limit, preemption): submitit requeues
    it on the warning signal, and the rerun resumes: train from the framework's last
    checkpoint in the run directory (LLaMA-Factory and the HF Trainer pick up
    `output_dir/checkpoint-*`), eval from the answers already in `predictions.jsonl`."""

    def __call__(self, job: StageJob) -> str:
        return run_stage(job)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit's USR2 handler just before it requeues the job and exits: the
        stage then knows that it is stopping to resume, not ending (`requeue.is_requeue`)."""
        mark_requeue()
        return super().checkpoint(*args, **kwargs)


def stage_callable(job: StageJob) -> Callable[[StageJob], str]:
    """Train and eval (alone, or with deploy in the train job's allocation) resume after
    requeue; deploy is plain (a rerun serves afresh)."""
    # submitit.helpers.Checkpointable.__new__ has no annotations.
    resumable = isinstance(job, TrainJob | EvalJob | AllocationJob)
    return ResumableStage() if resumable else run_stage  # type: ignore[no-untyped-call]
