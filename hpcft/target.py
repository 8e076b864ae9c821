"""Where each stage's job will run, as typed values the framework rules are checked against.

Built once per run from the cluster config (what the login node cannot see, it is told: GPU
type and memory are cluster settings), never from the login node's own hardware: the login
node has no GPU, the job usually has. What the job's interpreter can import is asked of it
where it is visible from here (`hpcft.jobenv`, once per command); a container or a remote
path is stated as unknown.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from enum import Enum

from hpcft.config.schema import ClusterConfig, HpcftConfig, StageName, StageSite
from hpcft.resources import NO_BF16, deploy_gpus


class DeviceKind(Enum):
    cpu = "cpu"
    gpu = "gpu"


@dataclass(frozen=True, kw_only=True)
class Device:
    """The device a stage's processes compute on."""

    kind: DeviceKind
    """`cpu` (gloo, fp32) or `gpu` (NCCL)."""
    gpu_type: str | None = None
    """The cluster's GPU type (`cluster.gpu_type`); None: any, or a CPU stage."""
    gpu_mem_gb: float | None = None
    """Memory of one GPU in GB (`cluster.gpu_mem_gb`); None on CPU."""

    @property
    def bf16(self) -> bool:
        """Whether bfloat16 runs here: GPUs of compute capability 8.0 and later (not on CPU,
        where LLaMA-Factory refuses it at start)."""
        return self.kind is DeviceKind.gpu and (self.gpu_type or "").lower() not in NO_BF16

    @property
    def half(self) -> str | None:
        """The 16-bit type to train in: `bf16`, `fp16` on GPUs without bf16, None (fp32) on CPU."""
        if self.kind is DeviceKind.cpu:
            return None
        return "bf16" if self.bf16 else "fp16"

    def describe(self) -> str:
        if self.kind is DeviceKind.cpu:
            return "CPU"
        return f"GPU ({self.gpu_type or 'any type'}, {self.gpu_mem_gb:g} GB, {self.half})"


@dataclass(frozen=True, kw_only=True)
class Target:
    """One stage's job: its device, its processes, and the interpreter that runs them."""

    stage: StageName
    device: Device
    nodes: int
    """Nodes of the job; >= 1."""
    procs_per_node: int
    """Processes on each node: one per GPU, else `cluster.procs_per_node` (train) or 1."""
    python: tuple[str, ...]
    """The command that runs the job's Python (`cluster.<stage>.python`, else `cluster.python`);
    empty: the interpreter that submits."""

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    def describe(self) -> str:
        """One line for the dry run: what the stage's plan was checked against."""
        python = shlex.join(self.python) if self.python else shlex.quote(sys.executable)
        return (
            f"{self.stage}: runs on {self.nodes} node(s) x {self.procs_per_node} process(es), {self.device.describe()};"
            f" Python as {python}"
        )


def _device(c: ClusterConfig, gpus: int) -> Device:
    if gpus == 0:
        return Device(kind=DeviceKind.cpu)
    return Device(kind=DeviceKind.gpu, gpu_type=c.gpu_type, gpu_mem_gb=c.gpu_mem_gb)


def _python(c: ClusterConfig, site: StageSite) -> tuple[str, ...]:
    return tuple(site.python if site.python is not None else c.python)


def local_encode(cfg: HpcftConfig) -> bool:
    """Whether the eval encodes with FlagEmbedding in its own job (`eval.encode=local`)."""
    return StageName.eval in cfg.stages and cfg.eval.encode == "local"


def planned_stages(cfg: HpcftConfig) -> list[StageName]:
    """The stages that get a job: `stages`, less deploy where the eval encodes on its own and
    no one asked to keep a server (`deploy.keep_serving`)."""
    drop = local_encode(cfg) and not cfg.deploy.keep_serving
    return [s for s in cfg.stages if not (drop and s == StageName.deploy)]


def eval_gpus(cfg: HpcftConfig) -> int:
    """The eval job's GPUs: none (it sends requests), or the deploy job's where it encodes."""
    return deploy_gpus(cfg) if local_encode(cfg) else 0


def stage_targets(cfg: HpcftConfig) -> dict[StageName, Target]:
    """Each planned stage's target: train on the whole allocation, deploy on the GPUs the
    served model needs (one node), eval on one CPU process (on the deploy's GPUs where it
    encodes on its own)."""
    c, planned = cfg.cluster, planned_stages(cfg)
    targets = {
        StageName.train: Target(
            stage=StageName.train,
            device=_device(c, c.gpus_per_node),
            nodes=c.nodes,
            procs_per_node=c.gpus_per_node or c.procs_per_node,
            python=_python(c, c.train),
        )
    }
    if StageName.deploy in planned:
        gpus = deploy_gpus(cfg)
        targets[StageName.deploy] = Target(
            stage=StageName.deploy,
            device=_device(c, gpus),
            nodes=1,
            procs_per_node=max(gpus, 1),
            python=_python(c, c.deploy),
        )
    if StageName.eval in planned:
        targets[StageName.eval] = Target(
            stage=StageName.eval,
            device=_device(c, eval_gpus(cfg)),
            nodes=1,
            procs_per_node=max(eval_gpus(cfg), 1),
            python=_python(c, c.eval),
        )
    return targets
