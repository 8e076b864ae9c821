"""A training job's per-GPU peak memory, estimated on the login node (docs/memory.md).

Pure arithmetic over the model's architecture numbers (its `config.json`, or `model.shape`),
the tokens of one micro-batch and how the trainer holds weights, gradients, optimizer states,
activations and the logits the loss is computed over. The constants are those of PyTorch's
mixed-precision AdamW under the Hugging Face Trainer, checked against peaks measured with
nvidia-smi on an H200 (docs/memory.md; tests/test_memory.py holds the points).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcft.config.schema import DeepSpeedConfig, HpcftConfig, ModelConfig
from hpcft.resources import batch_layout

GB = 1024**3

CUDA_CONTEXT_GB = 1.0
"""The CUDA context, cuBLAS workspaces and NCCL buffers, per GPU (the measured peaks' intercept,
less weights and LoRA states, is 0.9-1.0 GiB)."""
ALLOCATOR_SLACK = 1.08
"""PyTorch's caching allocator keeps freed blocks reserved, and a new block that fits none of
them is reserved beside them: the measured per-token peaks are 8 % above what is allocated."""
PAD_MULTIPLE = 8
"""Both trainers' collators pad a micro-batch to its longest row, rounded up to a multiple of 8."""
FUSED_LOSS_HIDDENS = 4
"""Liger's fused linear cross-entropy never holds the logits: it computes them in chunks of
tokens bounded to the hidden states' size (up to twice that, a chunk being rounded up to a
power of two) and keeps the input's gradient, hidden-sized too: ~4 x hidden numbers a token at
the compute width, where the plain loss holds 14 x vocabulary bytes (`loss_bytes`)."""


@dataclass(frozen=True, kw_only=True)
class Shape:
    """The architecture numbers the estimate needs."""

    layers: int
    """Transformer layers."""
    hidden: int
    """Width of the hidden states."""
    intermediate: int
    """Width of the MLP's inner layer."""
    heads: int
    """Query heads."""
    kv_heads: int
    """Key/value heads."""
    vocab: int
    """Vocabulary size: the width of the logits."""
    source: str
    """Where the numbers come from: `config.json`, `model.shape`, or `a guess from params_b`."""
    model_type: str | None = None
    """`config.json`'s (else `model.shape`'s) `model_type`, e.g. `qwen2`; None: unknown."""

    @property
    def kv_width(self) -> int:
        """Width of the keys (and of the values) under grouped-query attention."""
        return self.hidden * self.kv_heads // max(self.heads, 1)


SHAPE_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)


def local_config(path: str) -> dict[str, Any]:
    """The model's `config.json` from its folder or from the Hugging Face cache; {} when neither has it."""
    folder = Path(path).expanduser()
    candidates = [folder / "config.json"]
    if "/" in path and not folder.exists():
        hub = os.environ.get("HF_HUB_CACHE") or str(
            Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
        )
        snapshots = Path(hub) / f"models--{path.replace('/', '--')}" / "snapshots"
        candidates += sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []
    for candidate in candidates:
        try:
            config = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and all(isinstance(config.get(k), int) for k in SHAPE_KEYS[:2]):
            return config
    return {}


def guessed_shape(params_b: float) -> dict[str, int]:
    """A Llama-like shape for `params_b` billion parameters: 12 h^2 per layer with h / 128
    layers, a SwiGLU MLP of 8h/3, 128-wide heads and a 32k vocabulary."""
    hidden = int((params_b * 1e9 * 128 / 12) ** (1 / 3))
    heads = max(1, hidden // 128)
    return dict(zip(SHAPE_KEYS, (max(1, hidden // 128), hidden, hidden * 8 // 3, heads, heads, 32000), strict=True))


def model_shape(model: ModelConfig) -> Shape:
    """The model's numbers: its `config.json` where the login node has it, else `model.shape`,
    else a Llama-like guess from `params_b` (each number on its own)."""
    found, given = local_config(model.path), vars(model.shape)
    guess = guessed_shape(model.params_b)
    values = {k: found.get(k) or given.get(k) or guess[k] for k in SHAPE_KEYS}
    values["num_key_value_heads"] = (
        found.get("num_key_value_heads") or given.get("num_key_value_heads") or values["num_attention_heads"]
    )
    source = (
        "config.json" if found else "model.shape" if any(given.values()) else f"a guess from params_b={model.params_b}"
    )
    return Shape(
        layers=int(values["num_hidden_layers"]),
        hidden=int(values["hidden_size"]),
        intermediate=int(values["intermediate_size"]),
        heads=int(values["num_attention_heads"]),
        kv_heads=int(values["num_key_value_heads"]),
        vocab=int(values["vocab_size"]),
        source=source,
        model_type=found.get("model_type") or model.shape.model_type,
    )


@dataclass(frozen=True, kw_only=True)
class Tokens:
    """The tokens one micro-batch holds: sequences padded to one length."""

    sequences: int
    """Sequences in the micro-batch (a preference pair is two)."""
    length: int
    """Tokens of each, padding included."""
    why: str
    """Where the length comes from, for the dry run (`cutoff_len`, the longest row, ...)."""

    @property
    def total(self) -> int:
        return self.sequences * self.length

    def describe(self) -> str:
        return f"{self.total} tokens = {self.sequences} x {self.length} ({self.why})"


def padded(length: int, cap: int) -> int:
    """A micro-batch's length: its longest row rounded up to the collator's multiple, at most `cap`."""
    return min(cap, -(-length // PAD_MULTIPLE) * PAD_MULTIPLE)


def layer_bytes(shape: Shape, width: int, gated: bool) -> int:
    """Activations one layer keeps for its backward, per token, at `width` bytes a number.
    A SwiGLU layer (Llama, Qwen): its input, RMSNorm's fp32 input (twice) and output, q, k, v,
    rotated q and k, attention output, and gate, up, SiLU(gate) and their product: 10h + 3kv + 4I
    numbers. A BERT layer (Korthikanti et al. 2022, 34 s b h bytes at 16 bits for I = 4h): 9h + 2I.
    Attention kernels that keep no s x s scores (SDPA, FlashAttention)."""
    h, i = shape.hidden, shape.intermediate
    return width * (10 * h + 3 * shape.kv_width + 4 * i) if gated else width * (9 * h + 2 * i)


def loss_bytes(width: int) -> int:
    """Bytes per vocabulary entry per token for a loss over the logits, computed in fp32 (as
    transformers' causal-LM loss upcasts them): the logits (`width`), their fp32 copy (when
    `width` is 2), log-softmax's output and, in the backward, its gradient."""
    return width + (4 if width < 4 else 0) + 4 + 4


@dataclass(frozen=True, kw_only=True)
class Activations:
    """Activation memory of one micro-batch (GiB), allocator slack included."""

    layers_gb: float
    """What the transformer layers keep (and, checkpointed, one layer recomputed at a time)."""
    logits_gb: float
    """The logits and loss buffers over the vocabulary."""


def activations(
    shape: Shape, tokens: int, width: int, checkpointing: bool, gated: bool, vocab_bytes: int, *, fused: bool = False
) -> Activations:
    """With gradient checkpointing each layer keeps its input (`width` h per token) and one
    layer at a time recomputes its own and their gradients (2 layers' worth), which is freed
    before the loss buffers are needed; without, every layer keeps all of its own.
    `vocab_bytes` per vocabulary entry per token: `loss_bytes`, or 0 when no loss is taken
    over the vocabulary (embedders, rerankers); `fused`: a fused linear cross-entropy (Liger)
    holds `FUSED_LOSS_HIDDENS` hidden states' worth instead."""
    layer = layer_bytes(shape, width, gated)
    loss = FUSED_LOSS_HIDDENS * width * shape.hidden if fused and vocab_bytes else vocab_bytes * shape.vocab
    checkpointed = shape.layers * width * shape.hidden + max(0, 2 * layer - loss)
    kept = checkpointed if checkpointing else shape.layers * layer
    scale = tokens * ALLOCATOR_SLACK / GB
    return Activations(layers_gb=kept * scale, logits_gb=loss * scale)


def lora_params(shape: Shape, rank: int, modules: frozenset[str] | None = None) -> int:
    """Parameters LoRA adds at `rank`: rank x (in + out) per adapted linear layer, on the
    attention (q, k, v, o) and MLP (gate, up, down) projections named in `modules` (None: all)."""
    h, kv, i = shape.hidden, shape.kv_width, shape.intermediate
    widths = {
        "q_proj": h + h,
        "k_proj": h + kv,
        "v_proj": h + kv,
        "o_proj": h + h,
        "gate_proj": h + i,
        "up_proj": h + i,
        "down_proj": h + i,
    }
    chosen = widths if modules is None else {k: v for k, v in widths.items() if k in modules} or widths
    return rank * shape.layers * sum(chosen.values())


@dataclass(frozen=True, kw_only=True)
class MemoryEstimate:
    """A per-GPU estimate of a training job's peak (GiB); not a promise."""

    weights_gb: float
    """The model's weights, trained ones in fp32."""
    gradients_gb: float
    """Gradients of the trained parameters (and DDP's bucket copy of them)."""
    optimizer_gb: float
    """Adam's two moments (and DeepSpeed's fp32 master weights)."""
    activations_gb: float
    """What the layers keep for the backward."""
    logits_gb: float
    """The logits and loss buffers over the vocabulary."""
    overhead_gb: float
    """CUDA context, workspaces, NCCL."""

    @property
    def total_gb(self) -> float:
        return (
            self.weights_gb + self.gradients_gb + self.optimizer_gb + self.activations_gb + self.logits_gb
        ) + self.overhead_gb

    def describe(self) -> str:
        return (
            f"weights {self.weights_gb:.1f}, gradients {self.gradients_gb:.1f}, optimizer {self.optimizer_gb:.1f},"
            f" activations {self.activations_gb:.1f}, logits/loss {self.logits_gb:.1f}, CUDA {self.overhead_gb:.0f}"
        )


@dataclass(frozen=True, kw_only=True)
class Trained:
    """What a job trains, and how the rest is held."""

    params: float
    """All parameters."""
    trainable: float
    """Parameters with gradients and optimizer states (all of them for full fine-tuning)."""
    frozen_bytes: float
    """Bytes a frozen parameter takes: 2 in bf16/fp16, 4 in fp32, 0.55 at 4 bits, 1.1 at 8."""
    reference: float = 0.0
    """Parameters of a frozen reference model beside it (DPO and KTO of a full or freeze
    fine-tuning; LoRA's reference is its base with the adapter off), in `frozen_bytes`."""


def states_gb(t: Trained, ds: DeepSpeedConfig, gpus: int) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) per GPU. Without DeepSpeed the trained parameters are
    fp32 (4 bytes), with fp32 gradients (4) and Adam's two moments (8); DDP over several GPUs
    keeps its gradient buckets beside them (4 more). Under ZeRO the model is in 16 bits (2) and
    DeepSpeed keeps fp32 master weights with Adam's moments (12, sharded from stage 1), fp32
    gradients (sharded from stage 2), the weights sharded at stage 3; offloading moves the
    optimizer, and stage 3's weights, to CPU memory."""
    frozen = (t.params - t.trainable + t.reference) * t.frozen_bytes
    stage = ds.zero_stage
    if stage is None:
        weights, gradients, optimizer = frozen + t.trainable * 4, t.trainable * (8 if gpus > 1 else 4), t.trainable * 8
    else:
        weights = frozen + t.trainable * 2
        gradients = t.trainable * 4 / (gpus if stage >= 2 else 1)
        optimizer = 0.0 if ds.offload_optimizer else t.trainable * 12 / (gpus if stage >= 1 else 1)
        if stage >= 3:
            weights = 0.0 if ds.offload_param else weights / gpus
    return weights / GB, gradients / GB, optimizer / GB


def estimate_memory(t: Trained, ds: DeepSpeedConfig, gpus: int, act: Activations) -> MemoryEstimate:
    """Per-GPU peak: the states (`states_gb`), the activations and the CUDA context."""
    weights, gradients, optimizer = states_gb(t, ds, gpus)
    return MemoryEstimate(
        weights_gb=weights,
        gradients_gb=gradients,
        optimizer_gb=optimizer,
        activations_gb=act.layers_gb,
        logits_gb=act.logits_gb,
        overhead_gb=CUDA_CONTEXT_GB,
    )


@dataclass(frozen=True, kw_only=True)
class Fit:
    """A plan's estimate, with the numbers it rests on."""

    memory: MemoryEstimate
    """Per GPU."""
    tokens: Tokens
    """Of one micro-batch."""
    shape: Shape
    """The model's numbers."""

    def describe(self, gpu_mem_gb: float) -> str:
        return (
            f"~{self.memory.total_gb:.1f} GiB per GPU of {gpu_mem_gb:g} ({self.memory.describe()}; micro-batch of"
            f" {self.tokens.describe()}; model numbers from {self.shape.source}; docs/memory.md)"
        )


ZERO_PRESETS = (
    DeepSpeedConfig(name="zero2", zero_stage=2),
    DeepSpeedConfig(name="zero3", zero_stage=3),
    DeepSpeedConfig(name="zero3_offload", zero_stage=3, offload_optimizer=True, offload_param=True),
)
"""The DeepSpeed presets to suggest, least sharding first."""


def more_sharding(ds: DeepSpeedConfig) -> list[DeepSpeedConfig]:
    """The presets that shard more than `ds`."""
    mine = (ds.zero_stage or 0, ds.offload_param)
    return [p for p in ZERO_PRESETS if ((p.zero_stage or 0), p.offload_param) > mine]


def smaller_micro_batches(cfg: HpcftConfig) -> list[tuple[str, int]]:
    """Smaller micro-batches that keep the global batch, largest first: (the overrides, the
    micro-batch), with the accumulation steps that keep it unless `global_batch_size` derives them."""
    fw, layout = cfg.framework, batch_layout(cfg)
    rows = layout.per_device * layout.accumulation  # per process per optimizer step
    out = []
    for batch in range(layout.per_device - 1, 0, -1):
        if rows % batch:
            continue
        hint = f"framework.per_device_train_batch_size={batch}"
        if fw.global_batch_size is None:
            hint += f" framework.gradient_accumulation_steps={rows // batch}"
        out.append((hint, batch))
    return out
