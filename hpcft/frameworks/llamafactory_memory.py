"""The memory fit of a LLaMA-Factory train job, checked on the login node (docs/memory.md):
the estimate for its method, precision, DeepSpeed stage and activations, and, for a job that
cannot fit, the smallest change that would."""

from __future__ import annotations

from hpcft.config.schema import DeepSpeedConfig, HpcftConfig
from hpcft.errors import ConfigError
from hpcft.frameworks.llamafactory_config import lf_settings
from hpcft.frameworks.llamafactory_native import native_yaml_values
from hpcft.resources import MemoryEstimate, activations_gb, estimate_memory, model_shape

_ZERO2 = DeepSpeedConfig(name="zero2", zero_stage=2)
_ZERO3 = DeepSpeedConfig(name="zero3", zero_stage=3)
_ZERO3_OFFLOAD = DeepSpeedConfig(name="zero3_offload", zero_stage=3, offload_optimizer=True, offload_param=True)
FIT_ALTERNATIVES: tuple[tuple[str, str | None, int | None, DeepSpeedConfig | None], ...] = (
    ("deepspeed=zero2", None, None, _ZERO2),
    ("deepspeed=zero3", None, None, _ZERO3),
    ("deepspeed=zero3_offload", None, None, _ZERO3_OFFLOAD),
    ("framework.finetuning_type=lora", "lora", None, None),
    ("framework.finetuning_type=lora framework.quantization_bit=4", "lora", 4, None),
)
"""What to suggest when a job does not fit, cheapest change first: (hint, method, bits, preset);
None keeps what is configured."""


def training_activations_gb(cfg: HpcftConfig) -> float:
    """Activations of one micro-batch of `cutoff_len` tokens, checkpointed unless the run turns
    LLaMA-Factory's gradient checkpointing off."""
    fw = lf_settings(cfg)
    given = {**(native_yaml_values(fw.native_config) if fw.native_config else {}), **fw.args}
    checkpointing = not given.get("disable_gradient_checkpointing", False)
    shape = model_shape(cfg.model.path, cfg.model.params_b)
    return activations_gb(shape, fw.cutoff_len, fw.per_device_train_batch_size, checkpointing)


TRAINABLE_FRACTION = {"full": 1.0, "freeze": 0.1, "lora": 0.004}
"""Share of parameters each `finetuning_type` trains, with gradients and optimizer states
(LoRA at rank 8 on all linear layers trains 0.3-0.5 % of a 7B model)."""


def estimate(cfg: HpcftConfig, method: str, bits: int | None, ds: DeepSpeedConfig, act: float) -> MemoryEstimate:
    gpus = cfg.cluster.nodes * cfg.cluster.gpus_per_node
    return estimate_memory(cfg.model.params_b, TRAINABLE_FRACTION.get(method, 1.0), bits, ds, gpus, act)


def check_memory_fit(cfg: HpcftConfig) -> MemoryEstimate:
    """Refuse a train job whose per-GPU estimate exceeds the GPU, naming what would fit."""
    fw, c = lf_settings(cfg), cfg.cluster
    act = training_activations_gb(cfg)
    mine = estimate(cfg, fw.finetuning_type, fw.quantization_bit, cfg.deepspeed, act)
    if mine.total_gb <= c.gpu_mem_gb:
        return mine
    fits = []
    for hint, method, bits, preset in FIT_ALTERNATIVES:
        other = estimate(
            cfg, method or fw.finetuning_type, bits if method else fw.quantization_bit, preset or cfg.deepspeed, act
        )
        if other.total_gb <= c.gpu_mem_gb:
            fits.append(hint)
    suggestion = f"; try {fits[0]}" if fits else "; use more GPUs"
    raise ConfigError(
        "cluster.gpu_mem_gb",
        f"{cfg.model.name} ({cfg.model.params_b}B, {fw.finetuning_type}, deepspeed={cfg.deepspeed.name}) needs"
        f" ~{mine.total_gb:.0f} GB per GPU over {c.nodes * c.gpus_per_node} GPUs,"
        f" more than the {c.gpu_mem_gb:g} GB a GPU has{suggestion}",
    )
