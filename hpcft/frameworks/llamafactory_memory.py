"""The memory fit of a LLaMA-Factory train job, checked on the login node (docs/memory.md):
the estimate for its method, precision, DeepSpeed stage and the tokens of its micro-batch,
and, for a job that cannot fit, the cheapest change that would."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hpcft.config.schema import DeepSpeedConfig, HpcftConfig
from hpcft.errors import ConfigError
from hpcft.frameworks.llamafactory_compute import fused_loss, given_args, half_precision
from hpcft.frameworks.llamafactory_config import lf_settings
from hpcft.frameworks.llamafactory_datasets import TrainingData
from hpcft.memory import (
    Fit,
    Shape,
    Tokens,
    Trained,
    activations,
    estimate_memory,
    lora_params,
    loss_bytes,
    model_shape,
    more_sharding,
    padded,
    smaller_micro_batches,
)
from hpcft.resources import batch_layout

PAIRED_STAGES = frozenset({"rm", "dpo", "kto"})
"""Stages whose rows are two sequences in the micro-batch (chosen and rejected; kto's KL pair)."""
PACK_BELOW = 4
"""Rows are much shorter than `cutoff_len` when their mean is under a quarter of it."""
PACK_MIN_BATCHES = 8
"""Packing is planned only when the packed rows still fill this many global batches an epoch."""
CHOSEN_HEADROOM = 0.9
"""A micro-batch hpcft chooses must fit in this share of the GPU: the estimate is within 4 % of
the measured peaks, and a run near the edge fails on fragmentation."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What the estimate varies when looking for a plan that fits."""

    method: str
    """`finetuning_type`."""
    bits: int | None
    """`quantization_bit`."""
    ds: DeepSpeedConfig
    """The DeepSpeed preset."""
    batch: int
    """`per_device_train_batch_size`."""
    checkpointing: bool
    """Gradient checkpointing (LLaMA-Factory's default; `disable_gradient_checkpointing` turns it off)."""
    packed: bool = False
    """Rows packed into `cutoff_len` sequences (`neat_packing` that hpcft plans)."""
    fused: bool = False
    """The loss is Liger's fused linear cross-entropy (`llamafactory_compute.fused_loss`): no logits held."""


def micro_batch_tokens(cfg: HpcftConfig, data: TrainingData | None, batch: int, packed: bool = False) -> Tokens:
    """The tokens of one micro-batch: `batch` rows (two sequences each in paired stages) padded
    to the longest, which the data check bounds; `cutoff_len` when rows are packed to it (pt,
    `packing`), when the data was not read, or when the longest row may reach it."""
    fw, given = lf_settings(cfg), given_args(cfg)
    sequences = batch * (2 if fw.stage in PAIRED_STAGES else 1)
    if packed or fw.stage == "pt" or given.get("packing") or given.get("neat_packing"):
        return Tokens(sequences=sequences, length=fw.cutoff_len, why="cutoff_len: rows packed to it")
    if data is None or data.longest_tokens is None:
        return Tokens(sequences=sequences, length=fw.cutoff_len, why="cutoff_len: the rows are not read here")
    if data.longest_tokens >= fw.cutoff_len:
        return Tokens(sequences=sequences, length=fw.cutoff_len, why="cutoff_len, which the longest row may reach")
    why = f"the longest row, at most {data.longest_tokens} tokens: its UTF-8 bytes and the template's"
    return Tokens(sequences=sequences, length=padded(data.longest_tokens, fw.cutoff_len), why=why)


def trained(cfg: HpcftConfig, shape: Shape, plan: Plan) -> Trained:
    """Parameters trained by the plan's method: all (full), LoRA's at `lora_rank` on
    `lora_target`, or `freeze_trainable_layers` (2) layers; the rest frozen in the compute dtype
    (4-bit: 0.55 bytes, 8-bit: 1.1), as is DPO's and KTO's reference model beside a full or
    freeze fine-tuning."""
    fw, params = lf_settings(cfg), cfg.model.params_b * 1e9
    if plan.method == "full":
        trainable = params
    elif plan.method == "lora":
        targets = None if fw.lora_target == "all" else frozenset(t.strip() for t in fw.lora_target.split(","))
        trainable = float(lora_params(shape, fw.lora_rank, targets))
    else:
        layers = min(shape.layers, abs(int(given_args(cfg).get("freeze_trainable_layers", 2))))
        trainable = params * layers / shape.layers
    frozen = {4: 0.55, 8: 1.1}.get(plan.bits or 0, 2.0 if half_precision(cfg) else 4.0)
    reference = params if fw.stage in ("dpo", "kto") and plan.method != "lora" else 0.0
    return Trained(params=params, trainable=trainable, frozen_bytes=frozen, reference=reference)


def estimate(cfg: HpcftConfig, data: TrainingData | None, plan: Plan) -> Fit:
    shape = model_shape(cfg.model)
    tokens = micro_batch_tokens(cfg, data, plan.batch, plan.packed)
    width = 2 if half_precision(cfg) else 4
    vocab = width if lf_settings(cfg).stage == "rm" else loss_bytes(width)  # a reward model's loss is on a value head
    act = activations(shape, tokens.total, width, plan.checkpointing, True, vocab, fused=plan.fused)
    gpus = cfg.cluster.nodes * cfg.cluster.gpus_per_node
    return Fit(memory=estimate_memory(trained(cfg, shape, plan), plan.ds, gpus, act), tokens=tokens, shape=shape)


def configured(cfg: HpcftConfig) -> Plan:
    fw = lf_settings(cfg)
    return Plan(
        method=fw.finetuning_type,
        bits=fw.quantization_bit,
        ds=cfg.deepspeed,
        batch=batch_layout(cfg).per_device,  # 1 where hpcft chooses it (`chosen_batch`)
        checkpointing=not given_args(cfg).get("disable_gradient_checkpointing", False),
        fused=fused_loss(cfg),
    )


def alternatives(cfg: HpcftConfig, plan: Plan) -> list[tuple[str, Plan]]:
    """What to suggest when a job does not fit, cheapest change first: gradient checkpointing
    back on, a smaller micro-batch with more accumulation, a ZeRO stage or offload, then LoRA
    and QLoRA."""
    out = []
    if not plan.checkpointing:
        hint = "gradient checkpointing (drop disable_gradient_checkpointing)"
        out.append((hint, dataclasses.replace(plan, checkpointing=True)))
    out += [(hint, dataclasses.replace(plan, batch=batch)) for hint, batch in smaller_micro_batches(cfg)]
    out += [(f"deepspeed={ds.name}", dataclasses.replace(plan, ds=ds)) for ds in more_sharding(plan.ds)]
    if plan.method != "lora":
        out.append(("framework.finetuning_type=lora", dataclasses.replace(plan, method="lora", bits=None)))
    if plan.bits != 4:
        hint = "framework.finetuning_type=lora framework.quantization_bit=4"
        out.append((hint, dataclasses.replace(plan, method="lora", bits=4)))
    return out


def planned_packing(cfg: HpcftConfig, data: TrainingData | None) -> str | None:
    """Why hpcft packs the rows (`neat_packing`: LLaMA-Factory packs rows into `cutoff_len`
    sequences, each row attending only to itself), or None: an sft run that sets neither
    `packing` nor `neat_packing`, whose rows average under a quarter of `cutoff_len` (their
    bound, so the real rows are shorter still), fill `PACK_MIN_BATCHES` global batches when
    packed, and whose packed micro-batch still fits the GPU."""
    fw, given = lf_settings(cfg), given_args(cfg)
    if fw.stage != "sft" or {"packing", "neat_packing"} & given.keys() or not data or data.total_tokens is None:
        return None
    used = min(data.rows, fw.max_samples or data.rows)
    mean = data.total_tokens / data.rows
    packed = used * mean / fw.cutoff_len
    if mean * PACK_BELOW > fw.cutoff_len or packed < PACK_MIN_BATCHES * batch_layout(cfg).global_batch:
        return None
    plan = dataclasses.replace(configured(cfg), packed=True)
    if cfg.cluster.gpus_per_node and estimate(cfg, data, plan).memory.total_gb > cfg.cluster.gpu_mem_gb:
        return None
    return (
        f"rows average at most {mean:.0f} tokens, under a quarter of cutoff_len {fw.cutoff_len}: {used} rows pack"
        f" into ~{packed:.0f} sequences"
    )


def chosen_batch(cfg: HpcftConfig, data: TrainingData | None) -> tuple[int, float] | None:
    """The micro-batch hpcft picks, with its estimate (GiB), where the user left it null on a
    GPU cluster: the largest that divides the rows a process takes per optimizer step and
    whose estimate fits in `CHOSEN_HEADROOM` of a GPU; 1 when none does (`check_memory_fit`
    then refuses, naming a change that fits). None: the user's number (or a CPU cluster's 1)."""
    if lf_settings(cfg).per_device_train_batch_size is not None or not cfg.cluster.gpus_per_node:
        return None
    layout = batch_layout(cfg)
    rows = layout.per_device * layout.accumulation
    plan = dataclasses.replace(configured(cfg), packed=planned_packing(cfg, data) is not None)
    gb = 0.0
    for batch in (b for b in range(rows, 0, -1) if rows % b == 0):
        gb = estimate(cfg, data, dataclasses.replace(plan, batch=batch)).memory.total_gb
        if gb <= CHOSEN_HEADROOM * cfg.cluster.gpu_mem_gb:
            return batch, gb
    return 1, gb


def chosen_batch_note(cfg: HpcftConfig, data: TrainingData | None) -> str | None:
    """The dry run's line on the micro-batch hpcft chose, or None when the user set it."""
    if not (chosen := chosen_batch(cfg, data)):
        return None
    layout, gpu = batch_layout(cfg).rebatched(chosen[0]), cfg.cluster.gpu_mem_gb
    return (
        f"train: per_device_train_batch_size={layout.per_device} chosen: the largest micro-batch dividing the"
        f" {layout.per_device * layout.accumulation} rows a GPU takes per optimizer step whose estimate"
        f" (~{chosen[1]:.1f} GiB) fits {CHOSEN_HEADROOM:.0%} of {gpu:g} GiB; {layout.accumulation} accumulation"
        f" step(s) keep the global batch {layout.global_batch}; set framework.per_device_train_batch_size=N to fix it"
    )


def liger_saving_gb(cfg: HpcftConfig, data: TrainingData | None) -> float:
    """GiB per GPU the job's plan saves by Liger's fused loss (0 when its loss is not fused)."""
    plan = dataclasses.replace(configured(cfg), packed=planned_packing(cfg, data) is not None)
    plain = estimate(cfg, data, dataclasses.replace(plan, fused=False)).memory.total_gb
    return plain - estimate(cfg, data, plan).memory.total_gb


def check_memory_fit(cfg: HpcftConfig, data: TrainingData | None) -> Fit:
    """Refuse a train job whose per-GPU estimate exceeds the GPU, naming the numbers and the
    cheapest change that fits."""
    fw, c = lf_settings(cfg), cfg.cluster
    plan = dataclasses.replace(configured(cfg), packed=planned_packing(cfg, data) is not None)
    if chosen := chosen_batch(cfg, data):
        plan = dataclasses.replace(plan, batch=chosen[0])
    mine = estimate(cfg, data, plan)
    if mine.memory.total_gb <= c.gpu_mem_gb:
        return mine
    fits = ((hint, estimate(cfg, data, other).memory.total_gb) for hint, other in alternatives(cfg, plan))
    found = next(((hint, gb) for hint, gb in fits if gb <= c.gpu_mem_gb), None)
    suggestion = f"; try {found[0]} (~{found[1]:.0f} GiB)" if found else "; use more GPUs"
    raise ConfigError(
        "cluster.gpu_mem_gb",
        f"{cfg.model.name} ({cfg.model.params_b}B, {fw.finetuning_type}, deepspeed={cfg.deepspeed.name}) needs"
        f" {mine.describe(c.gpu_mem_gb)} over {c.nodes * c.gpus_per_node} GPUs, more than a GPU has{suggestion}",
    )
