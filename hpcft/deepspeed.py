"""DeepSpeed presets rendered to the JSON the frameworks take (HF Trainer integration).

Batch sizes, clipping and precision are `"auto"`: the Trainer fills them from its own
arguments, so the preset never disagrees with the framework's config.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hpcft.config.schema import DeepSpeedConfig, HpcftConfig
from hpcft.errors import ConfigError


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


def user_deepspeed_config(path: str, key: str) -> DeepSpeedConfig:
    """A DeepSpeed JSON of the user's, read for its ZeRO settings (the file is used as is);
    `key` names the setting that gave the path, for the one-line error."""
    try:
        data = json.loads(Path(path).expanduser().read_text())
        zero = data.get("zero_optimization", {})
        stage = int(zero.get("stage", 0))
    except (OSError, ValueError, AttributeError, TypeError, RecursionError) as e:
        raise ConfigError(key, f"{path}: not a DeepSpeed JSON config ({e})") from None
    offloaded = {
        k: (zero.get(k) or {}).get("device", "none") not in ("none", None)
        for k in ("offload_optimizer", "offload_param")
    }
    return DeepSpeedConfig(name="custom", zero_stage=stage, config=str(Path(path).expanduser().absolute()), **offloaded)


def with_user_deepspeed(cfg: HpcftConfig) -> HpcftConfig:
    """The config with a `deepspeed.config=<file>` read into typed ZeRO settings, for every
    framework alike: the file then reaches the trainer (`--deepspeed`) and the memory estimate
    (a FlagEmbedding run used to drop it, its preset being "no DeepSpeed")."""
    ds = cfg.deepspeed
    if not ds.config or ds.zero_stage is not None:
        return cfg
    return dataclasses.replace(cfg, deepspeed=user_deepspeed_config(ds.config, "deepspeed.config"))
