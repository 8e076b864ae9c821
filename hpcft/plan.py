"""The plan: a pure function from the typed config to the pipeline of stages to submit.

No I/O and no Slurm: a `Pipeline` says what each stage runs, with which resources, after
which other stage, and which files must be written first. `hpcft.submit` carries it out.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Literal

from hpcft.config.schema import HpcftConfig, StageName
from hpcft.configure import CheckedRun
from hpcft.frameworks.base import Files, FrameworkAdapter
from hpcft.jobs.rendezvous import PORT_BASE, PORT_SPAN, launch_env
from hpcft.jobs.spec import AllocationJob, DeployJob, EvalJob, StageJob, TrainJob
from hpcft.resources import deploy_gpus
from hpcft.rundir import RunLayout
from hpcft.stage_site import Resources, node_share, stage_resources
from hpcft.target import eval_gpus, local_encode, planned_stages


@dataclass(frozen=True, kw_only=True)
class Dependency:
    kind: Literal["afterok", "after"]
    """Slurm dependency type: `afterok` (after it succeeded) or `after` (after it started)."""
    stage: StageName


@dataclass(frozen=True, kw_only=True)
class Stage:
    name: StageName
    job: StageJob
    resources: Resources
    after: tuple[Dependency, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    run_name: str
    layout: RunLayout
    stages: tuple[Stage, ...]
    files: Files = field(default_factory=dict)
    """Files to write into the run directory before submitting (relative path -> text)."""
    notes: tuple[str, ...] = ()
    """Derived numbers shown to the user (batch layout, memory estimate)."""

    def stage(self, name: StageName | str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def run_base_name(cfg: HpcftConfig) -> str:
    return cfg.name or f"{cfg.model.name}-{cfg.framework.name}"


def build_pipeline(run: CheckedRun, layout: RunLayout) -> Pipeline:
    """Stages `train -> deploy -> eval` (the configured prefix) with resources and dependencies,
    from what the checks learned (`run`: the adapter that checked, the stages' targets)."""
    cfg, adapter = run.cfg, run.adapter
    files = dict(adapter.train_files(layout))
    stages, planned = [train_stage(cfg, adapter, layout)], planned_stages(cfg)
    if StageName.deploy in planned:
        files.update(adapter.deploy_files(layout))
        stages.append(deploy_stage(cfg, adapter, layout))
    if StageName.eval in planned:
        stages.append(local_eval_stage(cfg, adapter, layout) if local_encode(cfg) else eval_stage(cfg, adapter, layout))
    if cfg.deploy.placement == "after_train":
        stages = [placed(stages, tuple(run.targets[StageName.deploy].python))]
    targets = [target.describe() for target in run.targets.values()]
    notes = [*adapter.notes(), launch_note(stages[0].job, cfg.cluster.nodes), *targets]
    if local_encode(cfg):
        notes.append(encode_note(StageName.deploy in planned))
    if cfg.deploy.placement == "after_train":
        notes.append(
            "deploy, eval: in the train job's allocation once training ends,"
            f" within its cluster.time={cfg.cluster.time} (deploy.placement=after_train)"
        )
    return Pipeline(run_name=layout.root.name, layout=layout, stages=tuple(stages), files=files, notes=tuple(notes))


def train_stage(cfg: HpcftConfig, adapter: FrameworkAdapter, layout: RunLayout) -> Stage:
    """The whole allocation: every node, with the cluster's (or `cluster.train`'s) resources."""
    c = cfg.cluster
    resources = stage_resources(
        c,
        c.train,
        gpus=c.gpus_per_node,
        cpus=c.cpus_per_node,
        mem=c.mem,
        time=c.time,
        nodes=c.nodes,
        exclusive=c.exclusive,
        processes=c.gpus_per_node or c.procs_per_node,
    )
    return Stage(name=StageName.train, job=adapter.train_job(layout), resources=resources)


def deploy_stage(cfg: HpcftConfig, adapter: FrameworkAdapter, layout: RunLayout) -> Stage:
    """The GPUs the served model needs, with their share of a node's CPUs and memory."""
    c, gpus = cfg.cluster, deploy_gpus(cfg)
    cpus, mem = node_share(c, gpus)
    return Stage(
        name=StageName.deploy,
        job=adapter.deploy_job(layout),
        resources=stage_resources(c, c.deploy, gpus=gpus, cpus=cpus, mem=mem, time=cfg.deploy.time),
        after=(Dependency(kind="afterok", stage=StageName.train),),
    )


def eval_stage(cfg: HpcftConfig, adapter: FrameworkAdapter, layout: RunLayout) -> Stage:
    """One CPU on the CPU partition: eval only sends requests (and ranks, for retrieval)."""
    c = cfg.cluster
    return Stage(
        name=StageName.eval,
        job=adapter.eval_job(layout),
        resources=stage_resources(
            c, c.eval, gpus=0, cpus=1, mem=adapter.eval_mem, time=cfg.eval.time, partition=c.cpu_partition
        ),
        # Eval talks to the running server, so it starts once deploy has started; the
        # `afterok` on train makes Slurm cancel it too when training fails.
        after=(Dependency(kind="afterok", stage=StageName.train), Dependency(kind="after", stage=StageName.deploy)),
    )


def local_eval_stage(cfg: HpcftConfig, adapter: FrameworkAdapter, layout: RunLayout) -> Stage:
    """`eval.encode=local`: the eval encodes with FlagEmbedding itself, on the GPUs (and their
    share of a node) a server would have had, after training only: it needs no server."""
    c, gpus = cfg.cluster, eval_gpus(cfg)
    cpus, mem = node_share(c, gpus)
    return Stage(
        name=StageName.eval,
        job=adapter.eval_job(layout),
        resources=stage_resources(c, c.eval, gpus=gpus, cpus=cpus, mem=mem, time=cfg.eval.time),
        after=(Dependency(kind="afterok", stage=StageName.train),),
    )


def placed(stages: list[Stage], deploy_python: tuple[str, ...]) -> Stage:
    """`deploy.placement=after_train`: one job, the train stage's resources, running all three
    (the server in the deploy stage's interpreter)."""
    train, deploy, evaluation = stages
    assert isinstance(train.job, TrainJob) and isinstance(deploy.job, DeployJob) and isinstance(evaluation.job, EvalJob)
    job = AllocationJob(train=train.job, deploy=deploy.job, eval=evaluation.job, deploy_python=deploy_python)
    return Stage(name=StageName.train, job=job, resources=train.resources)


def encode_note(deploys: bool) -> str:
    kept = "the deploy job serves beside it (deploy.keep_serving)" if deploys else "no deploy job"
    return f"eval: encodes with FlagEmbedding in its own job (eval.encode=local); {kept}"


def launch_note(job: StageJob, nodes: int) -> str:
    """What every node of the train job runs, with the rendezvous values it gets at run time."""
    job = job.train if isinstance(job, AllocationJob) else job
    assert isinstance(job, TrainJob)
    placeholders = {
        "NNODES": str(nodes),
        "NODE_RANK": f"<0..{nodes - 1}>",
        "MASTER_ADDR": "<first host of the allocation>",
        "MASTER_PORT": f"<{PORT_BASE} + job id % {PORT_SPAN}>",
    }
    return f"train: each of {nodes} node(s) runs: {shlex.join(launch_env(job, placeholders))}"
