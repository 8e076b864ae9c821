"""Resource arithmetic done on the login node: world size, batch layout, GPUs and memory of
the jobs (the training memory estimate is `hpcft.memory`).

Pure functions of the typed config, so that `dry_run` shows the same numbers the job uses
and a job that cannot fit is refused before it waits in a queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpcft.config.schema import ClusterConfig, HpcftConfig
from hpcft.errors import ConfigError

GB = 1024**3


def procs_per_node(cluster: ClusterConfig) -> int:
    """Training processes per node: one per GPU, or `procs_per_node` where there are none."""
    return cluster.gpus_per_node or cluster.procs_per_node


def world_size(cluster: ClusterConfig) -> int:
    return cluster.nodes * procs_per_node(cluster)


@dataclass(frozen=True)
class BatchLayout:
    world_size: int
    per_device: int
    accumulation: int

    @property
    def global_batch(self) -> int:
        return self.world_size * self.per_device * self.accumulation

    def rebatched(self, per_device: int) -> BatchLayout:
        """The same global batch at another micro-batch, which divides the rows a process takes
        per optimizer step."""
        rows = self.per_device * self.accumulation
        assert rows % per_device == 0, (rows, per_device)
        return BatchLayout(self.world_size, per_device, rows // per_device)

    def describe(self) -> str:
        return (
            f"global batch {self.global_batch} = {self.world_size} processes x {self.per_device} per device"
            f" x {self.accumulation} accumulation steps"
        )


def batch_layout(cfg: HpcftConfig) -> BatchLayout:
    """Gradient accumulation derived from `framework.global_batch_size` when it is set, so the
    same hyper-parameters hold on any cluster size; else the configured accumulation. A null
    micro-batch counts as 1 here: the layout then holds the rows a process takes per optimizer
    step, which a micro-batch chosen later divides (`BatchLayout.rebatched`)."""
    fw, world = cfg.framework, world_size(cfg.cluster)
    per_device = fw.per_device_train_batch_size or 1
    if fw.global_batch_size is None:
        return BatchLayout(world, per_device, fw.gradient_accumulation_steps)
    step = world * per_device
    if fw.global_batch_size % step:
        lower = max(step, fw.global_batch_size // step * step)
        raise ConfigError(
            "framework.global_batch_size",
            f"{fw.global_batch_size} is not a multiple of {world} processes x {per_device} per device = {step};"
            f" use {lower} or {lower + step}",
        )
    return BatchLayout(world, per_device, fw.global_batch_size // step)


NO_BF16 = frozenset({"v100", "t4", "p100", "p40", "k80", "rtx2080", "rtx2080ti", "titanv"})
"""GPU types without bfloat16 (compute capability below 8.0): fp16 there instead."""


def half_precision(cluster: ClusterConfig) -> str | None:
    """The 16-bit type to train in on this cluster: `bf16`, `fp16` on GPU types without bf16,
    None (fp32) where there are no GPUs."""
    if cluster.gpus_per_node == 0:
        return None
    return "fp16" if (cluster.gpu_type or "").lower() in NO_BF16 else "bf16"


def serving_gpus(params_b: float, gpu_mem_gb: float, gpus_per_node: int) -> int:
    """GPUs to serve a model: the smallest power of two whose memory holds the bf16 weights
    with 30 % left for the KV cache (vLLM's tensor parallelism wants a power of two), at most
    a node's worth; 0 on clusters without GPUs."""
    if gpus_per_node == 0:
        return 0
    need = params_b * 1e9 * 2 * 1.3 / GB / gpu_mem_gb
    gpus = 1
    while gpus < need and gpus < gpus_per_node:
        gpus *= 2
    return min(gpus, gpus_per_node)


def deploy_gpus(cfg: HpcftConfig) -> int:
    """The deploy job's GPUs: `deploy.gpus`, else what the model's size needs."""
    if cfg.deploy.gpus is not None:
        return cfg.deploy.gpus
    return serving_gpus(cfg.model.params_b, cfg.cluster.gpu_mem_gb, cfg.cluster.gpus_per_node)


def retrieval_eval_mem(passages: int, queries: int, text_bytes: int, dims: int) -> str:
    """`--mem` of a retrieval eval job: its Python and numpy (1 GiB), the texts (~3x their
    bytes as Python strings and rows), and the vectors of one model at a time, normalised
    into a copy (2 x float32 per number), queries x 8192 scores per block; +50 %."""
    vectors = 2 * (passages + queries) * dims * 4 + queries * 8192 * 4 * 3
    need = 1024**3 + 3 * text_bytes + vectors
    return f"{math.ceil(need * 1.5 / 1024**2)}M"
