"""The plan: a pure function from the typed config to the pipeline of stages to submit.

No I/O and no Slurm: a `Pipeline` says what each stage runs, with which resources, after
which other stage, and which files must be written first. `hpcft.submit` carries it out.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from hpcft.config.schema import ClusterConfig, HpcftConfig
from hpcft.frameworks import adapter_for
from hpcft.frameworks.base import Files
from hpcft.jobs.spec import EvalJob, StageJob, TrainJob
from hpcft.jobs.train import PORT_BASE, PORT_SPAN, launch_env
from hpcft.resources import serving_gpus
from hpcft.rundir import RunLayout
from hpcft.tracking import wandb_env


@dataclass(frozen=True, kw_only=True)
class Resources:
    nodes: int = 1
    tasks_per_node: int = 1
    """Slurm tasks per node: one per node; the stage's own launcher starts the processes."""
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    time: str = "01:00:00"
    mem: str | None = None
    partition: str | None = None
    """The stage's own partition; null: the cluster's."""


_MEM = re.compile(r"^([0-9]+)([KMGTkmgt]?)$")
_MB_PER = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def node_share(c: ClusterConfig, gpus: int) -> tuple[int, str | None]:
    """CPUs and memory for a job using `gpus` of a node's `node_gpus`: that share of the node
    (1 of 8 GPUs gets 1/8), so a 1-GPU server leaves the other GPUs usable; a whole node, or a
    job on a cluster without GPUs, gets all of `cpus_per_node` and `mem`."""
    if not gpus or not c.node_gpus or gpus >= c.node_gpus:
        return c.cpus_per_node, c.mem
    cpus = max(1, c.cpus_per_node * gpus // c.node_gpus)
    match = _MEM.match(c.mem or "")
    if not match:
        return cpus, c.mem
    mb = int(match.group(1)) * _MB_PER[(match.group(2) or "m").lower()]
    return cpus, f"{max(1, int(mb * gpus // c.node_gpus))}M"


@dataclass(frozen=True, kw_only=True)
class Dependency:
    kind: str
    """Slurm dependency type: `afterok` (after it succeeded) or `after` (after it started)."""
    stage: str


@dataclass(frozen=True, kw_only=True)
class Stage:
    name: str
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

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def run_base_name(cfg: HpcftConfig) -> str:
    return cfg.name or f"{cfg.model.name}-{cfg.framework.name}"


def build_pipeline(cfg: HpcftConfig, layout: RunLayout) -> Pipeline:
    """Stages `train -> deploy -> eval` (the configured prefix) with resources and dependencies."""
    adapter = adapter_for(cfg)
    c = cfg.cluster
    files = dict(adapter.train_files(layout))
    stages = [
        Stage(
            name="train",
            job=adapter.train_job(layout),
            resources=Resources(
                nodes=c.nodes, gpus_per_node=c.gpus_per_node, cpus_per_task=c.cpus_per_node, time=c.time, mem=c.mem
            ),
        )
    ]
    if "deploy" in cfg.stages:
        files.update(adapter.deploy_files(layout))
        gpus = cfg.deploy.gpus
        if gpus is None:
            gpus = serving_gpus(cfg.model.params_b, c.gpu_mem_gb, c.gpus_per_node)
        cpus, mem = node_share(c, gpus)
        stages.append(
            Stage(
                name="deploy",
                job=adapter.deploy_job(layout),
                resources=Resources(gpus_per_node=gpus, cpus_per_task=cpus, time=cfg.deploy.time, mem=mem),
                after=(Dependency(kind="afterok", stage="train"),),
            )
        )
    if "eval" in cfg.stages:
        assert cfg.evalset is not None  # checked by validate_stages
        stages.append(
            Stage(
                name="eval",
                job=EvalJob(
                    run_dir=str(layout.root),
                    evalset=cfg.evalset,
                    max_new_tokens=cfg.eval.max_new_tokens,
                    request_timeout_s=cfg.eval.request_timeout_s,
                    endpoint_timeout_s=cfg.eval.endpoint_timeout_s,
                    concurrency=cfg.eval.concurrency,
                    retries=cfg.eval.retries,
                    chat_template=cfg.model.template,
                    env=wandb_env(cfg, layout, "eval"),
                    task=adapter.eval_task,
                ),
                resources=Resources(cpus_per_task=1, time=cfg.eval.time, partition=c.cpu_partition),
                # Eval talks to the running server, so it starts once deploy has started; the
                # `afterok` on train makes Slurm cancel it too when training fails.
                after=(Dependency(kind="afterok", stage="train"), Dependency(kind="after", stage="deploy")),
            )
        )
    notes = [*adapter.notes(), launch_note(stages[0].job, c.nodes)]
    return Pipeline(run_name=layout.root.name, layout=layout, stages=tuple(stages), files=files, notes=tuple(notes))


def launch_note(job: StageJob, nodes: int) -> str:
    """What every node of the train job runs, with the rendezvous values it gets at run time."""
    assert isinstance(job, TrainJob)
    placeholders = {
        "NNODES": str(nodes),
        "NODE_RANK": f"<0..{nodes - 1}>",
        "MASTER_ADDR": "<first host of the allocation>",
        "MASTER_PORT": f"<{PORT_BASE} + job id % {PORT_SPAN}>",
    }
    return f"train: each of {nodes} node(s) runs: {shlex.join(launch_env(job, placeholders))}"
