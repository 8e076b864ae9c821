"""How a LLaMA-Factory job computes, as planned on the login node: its precision and the
kernels a practitioner turns on where the job's environment has them (docs/memory.md):
Liger's fused kernels (`enable_liger_kernel`) and FlashAttention-2 (`flash_attn: fa2`), on GPU
clusters only. A value the user gives (`framework.args` or a native YAML) always wins."""

from __future__ import annotations

from typing import Any

from hpcft import jobenv
from hpcft.config.schema import HpcftConfig
from hpcft.frameworks.llamafactory_config import PRECISION_KEYS, lf_settings
from hpcft.frameworks.llamafactory_native import native_yaml_values
from hpcft.memory import model_shape
from hpcft.resources import half_precision as cluster_half_precision

LIGER_MODEL_TYPES = frozenset(
    {
        "gemma", "gemma2", "gemma3", "gemma3_text", "glm", "glm4", "glm4v", "granite", "llama", "llava",
        "mistral", "mixtral", "mllama", "olmo2", "paligemma", "phi3", "qwen2", "qwen2_vl", "qwen2_5_vl",
        "qwen3", "qwen3_moe", "qwen3_next", "qwen3_5",
    }
)  # fmt: skip
"""The `model_type`s LLaMA-Factory 0.9.5 applies Liger to (model/model_utils/liger_kernel.py);
others it only warns about."""
FUSED_LOSS_STAGES = frozenset({"pt", "sft"})
"""Stages whose loss Liger fuses with the output layer (LLaMA-Factory's loader passes
`require_logits` for the others: their trainers read the logits)."""
KERNEL_MODULES = ("flash_attn", "liger_kernel")
"""The job environment's modules these defaults need, asked about together (one question)."""


def given_args(cfg: HpcftConfig) -> dict[str, Any]:
    """What the user set: the native YAML's values, `framework.args` over them."""
    fw = lf_settings(cfg)
    return {**(native_yaml_values(fw.native_config) if fw.native_config else {}), **fw.args}


def half_precision(cfg: HpcftConfig) -> bool:
    """Whether the job computes in bf16/fp16, as the adapter's `native_values` decides: `args`
    first, then `framework.bf16` (which wins over a YAML), the YAML, else bf16/fp16 on GPUs."""
    fw = lf_settings(cfg)
    yaml_values = native_yaml_values(fw.native_config) if fw.native_config and fw.bf16 is None else {}
    for source in (fw.args, yaml_values):
        if PRECISION_KEYS & source.keys():
            return any(bool(source.get(k)) for k in PRECISION_KEYS)
    return fw.bf16 if fw.bf16 is not None else cfg.cluster.gpus_per_node > 0


def job_kernels(cfg: HpcftConfig) -> dict[str, jobenv.Known]:
    """`KERNEL_MODULES` in the train job's environment; nothing is asked on CPU clusters."""
    return jobenv.train_modules(cfg, KERNEL_MODULES) if cfg.cluster.gpus_per_node else {}


def liger_candidate(cfg: HpcftConfig) -> bool:
    """A GPU run Liger would help, whose user left `enable_liger_kernel` unset (Unsloth's own
    kernels exclude it), of a model type LLaMA-Factory patches."""
    given = given_args(cfg)
    if not cfg.cluster.gpus_per_node or "enable_liger_kernel" in given or given.get("use_unsloth"):
        return False
    return model_shape(cfg.model).model_type in LIGER_MODEL_TYPES


def planned_liger(cfg: HpcftConfig) -> str | None:
    """Why hpcft turns Liger on, or None: a `liger_candidate` whose job environment has
    `liger_kernel` (known from `cluster.train.modules` or its interpreter)."""
    if not liger_candidate(cfg):
        return None
    known = job_kernels(cfg)["liger_kernel"]
    if not known.present:
        return None
    model_type = model_shape(cfg.model).model_type
    return f"liger_kernel is in the train job's environment ({known.how}), a {model_type} model LLaMA-Factory patches"


def fused_loss(cfg: HpcftConfig) -> bool:
    """Whether the job's loss is Liger's fused linear cross-entropy, which never holds the
    logits: Liger on (given or planned), a stage that fuses it, a model type it patches."""
    on = given_args(cfg).get("enable_liger_kernel")
    if on is None:
        on = planned_liger(cfg) is not None
    model_type = model_shape(cfg.model).model_type
    return bool(on) and lf_settings(cfg).stage in FUSED_LOSS_STAGES and model_type in LIGER_MODEL_TYPES


def fa2_candidate(cfg: HpcftConfig) -> bool:
    """A GPU run whose user left `flash_attn` unset, computing in 16 bits on GPUs that have
    bf16 (FlashAttention-2 needs Ampere or newer), of a model with transformers' own code."""
    if not cfg.cluster.gpus_per_node or "flash_attn" in given_args(cfg):
        return False
    return cluster_half_precision(cfg.cluster) == "bf16" and half_precision(cfg) and not cfg.model.trust_remote_code


def planned_fa2(cfg: HpcftConfig) -> str | None:
    """Why hpcft asks for FlashAttention-2, or None: an `fa2_candidate` whose job environment
    has `flash_attn`."""
    if not fa2_candidate(cfg):
        return None
    known = job_kernels(cfg)["flash_attn"]
    return f"flash_attn is in the train job's environment ({known.how})" if known.present else None


def kernel_notes(cfg: HpcftConfig, saved_gb: float) -> list[str]:
    """The kernels hpcft turns on, why, what Liger's fused loss saves (`saved_gb` per GPU) and
    how to turn each off; then those that could apply and are not planned."""
    notes = []
    if why := planned_liger(cfg):
        loss = (
            f"; its fused cross-entropy never holds the logits (~{saved_gb:.1f} GiB less per GPU)" if saved_gb else ""
        )
        notes.append(
            f"train: enable_liger_kernel on: {why}: Liger's fused RMSNorm, SwiGLU and RoPE kernels{loss};"
            " off with +framework.args.enable_liger_kernel=false"
        )
    if why := planned_fa2(cfg):
        notes.append(
            f"train: flash_attn=fa2: {why}, and the GPUs compute in 16 bits: FlashAttention-2 instead of"
            " PyTorch's SDPA; off with +framework.args.flash_attn=sdpa"
        )
    return notes + unplanned_notes(cfg)


def unplanned_notes(cfg: HpcftConfig) -> list[str]:
    """Why a kernel default that could apply is not planned: its module is missing from the
    job's environment (and how to get it), or that environment cannot be asked (the check skipped)."""
    notes = []
    for module, candidate, key, value, package in (
        ("liger_kernel", liger_candidate, "enable_liger_kernel", "true", "liger-kernel"),
        ("flash_attn", fa2_candidate, "flash_attn", "fa2", "flash-attn"),
    ):
        if not candidate(cfg):
            continue
        known = job_kernels(cfg)[module]
        if known.present is None:
            notes.append(
                f"train: {key} not planned: {known.how}, so the check for {module} was skipped; if the job's"
                f" environment has {package}, say so with +cluster.train.modules.{module}=true"
                f" (or +framework.args.{key}={value})"
            )
        elif not known.present:
            notes.append(f"train: {key} not planned: {module} is not in the train job's environment ({known.how})")
    return notes
