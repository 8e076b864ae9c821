"""Resource arithmetic done on the login node: world size, batch layout, memory fit.

Pure functions of the typed config, so that `dry_run` shows the same numbers the job uses
and a job that cannot fit is refused before it waits in a queue.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from hpcft.config.schema import ClusterConfig, DeepSpeedConfig, HpcftConfig
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

    def describe(self) -> str:
        return (
            f"global batch {self.global_batch} = {self.world_size} processes x {self.per_device} per device"
            f" x {self.accumulation} accumulation steps"
        )


def batch_layout(cfg: HpcftConfig) -> BatchLayout:
    """Gradient accumulation derived from `framework.global_batch_size` when it is set, so the
    same hyper-parameters hold on any cluster size; else the configured accumulation."""
    fw, world = cfg.framework, world_size(cfg.cluster)
    per_device = fw.per_device_train_batch_size
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


@dataclass(frozen=True)
class MemoryEstimate:
    """A per-GPU estimate for mixed-precision AdamW training (see docs/memory.md); not a promise."""

    weights_gb: float
    gradients_gb: float
    optimizer_gb: float
    activations_gb: float
    overhead_gb: float

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.gradients_gb + self.optimizer_gb + self.activations_gb + self.overhead_gb


CUDA_CONTEXT_GB = 1.0
"""The CUDA context, the allocator's reserve and NCCL buffers, per GPU."""


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    vocab: int


def model_shape(path: str, params_b: float) -> ModelShape:
    """Layers, hidden size and vocabulary from the model's config.json when it is local; else
    a Llama-like shape for its size (hidden = (128 P / 12)^(1/3), layers = hidden / 128, 32k
    vocabulary)."""
    try:
        c = json.loads((Path(path).expanduser() / "config.json").read_text())
        return ModelShape(int(c["num_hidden_layers"]), int(c["hidden_size"]), int(c["vocab_size"]))
    except (OSError, ValueError, KeyError, TypeError):
        hidden = int((params_b * 1e9 * 128 / 12) ** (1 / 3))
        return ModelShape(max(1, hidden // 128), hidden, 32000)


def activations_gb(shape: ModelShape, seq: int, batch: int, checkpointing: bool) -> float:
    """Activation memory per GPU (Korthikanti et al. 2022, bf16, attention kernels that keep no
    s x s scores): with gradient checkpointing (LLaMA-Factory's default) each layer keeps its
    input (2 s b h bytes) and one layer at a time recomputes all of its own (34 s b h); without,
    every layer keeps all (34 s b h each). Plus the logits and their fp32 copy for the loss
    (6 s b V)."""
    sbh = seq * batch * shape.hidden
    layers = shape.layers * 2 * sbh + 34 * sbh if checkpointing else shape.layers * 34 * sbh
    return (layers + 6 * seq * batch * shape.vocab) / GB


def estimate_memory(
    params_b: float,
    trainable_fraction: float,
    quant_bits: int | None,
    ds: DeepSpeedConfig,
    gpus: int,
    activations: float = 0.0,
) -> MemoryEstimate:
    """Per-GPU memory of mixed-precision AdamW training `trainable_fraction` of the
    parameters (1.0: all of them; the framework knows what its methods train). Full
    fine-tuning keeps fp32 master weights and a bf16 copy (6 bytes a parameter), fp32
    gradients (4) and Adam's two moments (8), 18 in all; partial training keeps the frozen
    weights in bf16 (2; 4-bit 0.55, 8-bit 1.1) and the trainable ones like full fine-tuning.
    Each is divided over `gpus` by the ZeRO stage that shards it; `activations` (GB,
    `activations_gb`) and the CUDA context come on top."""
    params = params_b * 1e9
    stage = ds.zero_stage or 0
    trainable = params * trainable_fraction
    frozen_bytes = {4: 0.55, 8: 1.1}.get(quant_bits or 0, 2.0)
    weight_bytes = params * 6 if trainable_fraction >= 1 else params * frozen_bytes + trainable * 4
    weights = weight_bytes / (gpus if stage >= 3 else 1)
    gradients = trainable * 4 / (gpus if stage >= 2 else 1)
    optimizer = trainable * 8 / (gpus if stage >= 1 else 1)
    if ds.offload_optimizer:
        optimizer = 0.0
    if ds.offload_param and stage >= 3:
        weights = 0.0
    return MemoryEstimate(weights / GB, gradients / GB, optimizer / GB, activations, CUDA_CONTEXT_GB)


def retrieval_eval_mem(passages: int, queries: int, text_bytes: int, dims: int) -> str:
    """`--mem` of a retrieval eval job: its Python and numpy (1 GiB), the texts (~3x their
    bytes as Python strings and rows), and the vectors of one model at a time, normalised
    into a copy (2 x float32 per number), queries x 8192 scores per block; +50 %."""
    vectors = 2 * (passages + queries) * dims * 4 + queries * 8192 * 4 * 3
    need = 1024**3 + 3 * text_bytes + vectors
    return f"{math.ceil(need * 1.5 / 1024**2)}M"
