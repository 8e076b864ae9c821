"""`deploy.placement=after_train`: deploy and eval in the train job's allocation. Checked on
the login node, planned as one job, and run in order by `hpcft.jobs.allocation`
(tests/integration/test_placement.py runs it on the cluster, through a requeue)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from hpcft.configure import check, load_config
from hpcft.errors import UserError
from hpcft.jobs import allocation
from hpcft.jobs.entry import ResumableStage, stage_callable
from hpcft.jobs.spec import AllocationJob, DeployJob, EvalJob, TrainJob
from hpcft.plan import build_pipeline
from hpcft.rundir import RunLayout

LLM = ["model=tiny_llama", "cluster=slurmlab", "deploy.placement=after_train"]


def test_one_job_holds_the_three_stages_on_the_train_jobs_resources():
    cfg = load_config(LLM)
    pipeline = build_pipeline(check(cfg), RunLayout(Path("/runs/r")))
    own = build_pipeline(check(load_config(LLM[:2])), RunLayout(Path("/runs/r")))
    assert [s.name for s in pipeline.stages] == ["train"] and pipeline.stages[0].after == ()
    job = pipeline.stage("train").job
    assert isinstance(job, AllocationJob)
    assert (job.train, job.deploy, job.eval) == (own.stage("train").job, own.stage("deploy").job, own.stage("eval").job)
    assert pipeline.stage("train").resources == own.stage("train").resources
    assert isinstance(stage_callable(job), ResumableStage)  # requeued and resumed like a train job
    assert pipeline.notes[-1].endswith("(deploy.placement=after_train)")


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        (["model=tiny_llama", "cluster=slurmlab", "deploy.placement=together"],
         "deploy.placement: unknown value 'together'"),
        (["model=tiny_llama", "deploy.placement=after_train"], "deploy.placement: after_train: the local executor"),
        ([*LLM, "stages=[train,deploy]"], "deploy.placement: after_train: it runs deploy and eval in the train job"),
        ([*LLM, "deploy.keep_serving=true"], "deploy.placement: after_train: deploy.keep_serving would hold"),
        (["model=minilm", "cluster=slurmlab", "deploy.placement=after_train", "eval.encode=local"],
         "deploy.placement: after_train: eval.encode=local plans no server"),
        ([*LLM, "cluster.eval.python=[/usr/bin/python3]"], "deploy.placement: after_train: cluster.eval.python"),
        ([*LLM, "cluster.eval.partition=cpu"], "deploy.placement: after_train: cluster.eval.partition applies"),
        ([*LLM, "cluster.deploy.setup=[module load x]"], "deploy.placement: after_train: cluster.deploy.setup"),
    ],
)  # fmt: skip
def test_what_one_job_cannot_honour_is_refused_before_submit(overrides, refusal):
    with pytest.raises(UserError) as refused:
        check(load_config(overrides))
    assert str(refused.value).startswith(refusal), refused.value


def test_a_sweep_keeps_its_own_jobs():
    from hpcft.config.placement import refuse_in_sweep

    with pytest.raises(UserError, match="sweeps and studies use own_job"):
        refuse_in_sweep(load_config(LLM))


def allocation_job(tmp_path: Path) -> AllocationJob:
    run = str(tmp_path)
    return AllocationJob(
        train=TrainJob(run_dir=run, argv=["true"]),
        deploy=DeployJob(run_dir=run, serve_argv=["true"], model_name="m"),
        eval=EvalJob(run_dir=run, evalset="e.json"),
    )


@pytest.fixture
def stages(monkeypatch) -> list[str]:
    """The stages' runners replaced by recorders: what ran, in order."""
    import hpcft.jobs.evaluate
    import hpcft.jobs.train

    ran: list[str] = []
    monkeypatch.setattr(hpcft.jobs.train, "run_train", lambda job: ran.append("train") or "trained")
    monkeypatch.setattr(allocation, "start_deploy", lambda job: ran.append("deploy") or subprocess.Popen(["true"]))
    monkeypatch.setattr(hpcft.jobs.evaluate, "run_eval", lambda job: ran.append("eval") or "eval: {}")
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    return ran


def test_the_first_task_trains_serves_and_evaluates_and_a_rerun_trains_no_more(tmp_path, stages):
    job = allocation_job(tmp_path)
    assert allocation.run_allocation(job) == "eval: {}"
    assert sorted(stages) == ["deploy", "eval", "train"] and stages[0] == "train"
    assert allocation.train_done(job).is_file()
    stages.clear()
    assert allocation.run_allocation(job) == "eval: {}"  # a requeued attempt: training had finished
    assert sorted(stages) == ["deploy", "eval"]


def test_the_other_nodes_only_train(tmp_path, stages, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "1")
    job = allocation_job(tmp_path)
    assert allocation.run_allocation(job).startswith("train finished")
    assert stages == ["train"] and not allocation.train_done(job).exists()  # the first task marks it


def test_a_server_that_failed_fails_the_job_after_the_eval(tmp_path, stages, monkeypatch):
    monkeypatch.setattr(allocation, "start_deploy", lambda job: subprocess.Popen(["false"]))
    with pytest.raises(RuntimeError, match="the deploy stage ended with exit status 1"):
        allocation.run_allocation(allocation_job(tmp_path))


def test_the_server_starts_in_the_deploy_stages_interpreter_from_its_record(tmp_path, monkeypatch):
    import hpcft.jobs.deploy
    from hpcft.jobs import deploy_here

    started: list[list[str]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv: started.append(argv))
    job = dataclasses.replace(allocation_job(tmp_path), deploy_python=("/envs/serve/bin/python",))
    allocation.start_deploy(job)
    (argv,) = started
    assert argv[:3] == ["/envs/serve/bin/python", "-m", "hpcft.jobs.deploy_here"]
    assert (Path(argv[3]).stat().st_mode & 0o777) == 0o600
    served: list[DeployJob] = []
    monkeypatch.setattr(hpcft.jobs.deploy, "run_deploy", lambda job: served.append(job) or "served")
    deploy_here.main([argv[3]])
    assert served == [job.deploy]


def test_the_plan_names_the_deploy_stages_interpreter():
    job = build_pipeline(check(load_config([*LLM, f"cluster.deploy.python=[{sys.executable}]"])), RunLayout(Path("/r")))
    assert job.stage("train").job.deploy_python == (sys.executable,)  # type: ignore[union-attr]


def test_the_deploy_stage_writes_its_key_where_the_submit_made_no_deploy_folder(tmp_path):
    # The submit makes deploy/ and eval/ only for planned stages; under this placement only
    # the train job is planned, and its deploy child wrote the run's key into a missing folder.
    from hpcft.jobs.deploy import new_api_key
    from hpcft.submit import write_run_files

    layout = RunLayout(tmp_path / "run")
    write_run_files(build_pipeline(check(load_config(LLM)), layout), "{}\n")
    assert not layout.deploy.exists()
    key = new_api_key(layout)
    assert layout.api_key.read_text() == key + "\n" and layout.api_key.stat().st_mode & 0o777 == 0o600
