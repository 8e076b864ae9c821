"""DeepSpeed presets rendered to the JSON the frameworks take (HF Trainer integration).

Batch sizes, clipping and precision are `"auto"`: the Trainer fills them from its own
arguments, so the preset never disagrees with the framework's config.
"""

from __future__ import annotations

from typing import Any

from hpcft.config.schema import DeepSpeedConfig


def deepspeed_json(preset: DeepSpeedConfig) -> dict[str, Any]:
    """The DeepSpeed config of a preset; only called when `zero_stage` is set."""
    assert preset.zero_stage is not None
    zero: dict[str, Any] = {
        "stage": preset.zero_stage,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if preset.zero_stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if preset.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if preset.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": "auto"},
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
    }
