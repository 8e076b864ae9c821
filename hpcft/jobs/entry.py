"""The function submitit runs inside every job: dispatch a stage record to its runner."""

from __future__ import annotations

from hpcft.jobs.spec import DeployJob, EvalJob, StageJob, TrainJob


def run_stage(job: StageJob) -> str:
    """Run one stage in this job; return a one-line summary (submitit pickles it as the result)."""
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
    raise TypeError(f"unknown stage job {type(job).__name__}")
