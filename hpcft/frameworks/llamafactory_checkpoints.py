"""LLaMA-Factory's part of `eval.checkpoints` (hpcft.checkpoints): which runs can serve their
saved checkpoints on one vLLM server, and whether the trainer will save any to compare.

Each `checkpoint-<step>` of a LoRA run holds an adapter (`adapter_model.safetensors`), which
vLLM serves beside the final one over the base model loaded once. A full or freeze fine-tune
saves whole models, which would need a server each; another backend serves one model.
"""

from __future__ import annotations

import math
from typing import Any

from hpcft.checkpoints import checkpoint_every
from hpcft.config.schema import HpcftConfig
from hpcft.errors import ConfigError
from hpcft.frameworks.vllm_serving import MAX_LORAS_IN_BATCH
from hpcft.jobs.spec import CheckpointServing
from hpcft.resources import BatchLayout


def checkpoints_refused(finetuning_type: str, backend: str) -> str | None:
    """Why this run's checkpoints cannot be served side by side, or None."""
    if finetuning_type != "lora":
        return (
            f"checkpoints are served as LoRA adapters on one server; finetuning_type={finetuning_type} saves whole"
            " models (use framework.finetuning_type=lora, or eval.checkpoints=last)"
        )
    if backend != "vllm":
        return (
            f"one vLLM server serves every checkpoint's adapter; deploy.backend={backend} serves one model"
            " (use deploy.backend=vllm)"
        )
    return None


def planned_steps(rows: int, batches: BatchLayout, epochs: float, values: dict[str, Any]) -> int:
    """The optimizer steps the trainer will take, as the HF Trainer counts them: `max_steps`
    when given, else the epochs over the rows kept (`max_samples`, less `val_size`)."""
    if int(values.get("max_steps") or 0) > 0:
        return int(values["max_steps"])
    kept = min(rows, int(values["max_samples"])) if values.get("max_samples") else rows
    val = float(values.get("val_size") or 0.0)
    kept -= math.ceil(kept * val) if 0 < val < 1 else int(val)
    per_epoch = max(1, math.ceil(kept / batches.global_batch))
    return max(1, math.ceil(per_epoch * epochs))


def no_checkpoint_saved(every: int, save_steps: int, steps: int, rows: int) -> str | None:
    """Why no checkpoint would be scored before the last step (nothing to compare): training
    saves none before it, or `every_<n>` chooses none; None where some would be. The count
    ignores packing, which only makes the steps fewer."""
    if save_steps >= steps:
        return (
            f"framework.save_steps={save_steps} saves no checkpoint before the last of this run's {steps} steps"
            f" ({rows} rows): lower framework.save_steps, or use eval.checkpoints=last"
        )
    if every >= steps:
        return f"no checkpoint before the last of this run's {steps} steps ({rows} rows) is at a multiple of {every}"
    return None


def check_saved(cfg: HpcftConfig, rows: int, batches: BatchLayout, values: dict[str, Any]) -> None:
    """Refuse `eval.checkpoints` other than `last` where no checkpoint would be scored beside
    the final model (`values`: the native settings the trainer gets)."""
    every = checkpoint_every(cfg.eval.checkpoints)
    if not every:
        return
    steps = planned_steps(rows, batches, cfg.framework.num_train_epochs, values)
    save_steps = int(values.get("save_steps") or cfg.framework.save_steps)
    if why := no_checkpoint_saved(every, save_steps, steps, rows):
        raise ConfigError("eval.checkpoints", f"{cfg.eval.checkpoints}: {why}")


def checkpoint_serving(checkpoints: str, folder: str, model_name: str) -> CheckpointServing | None:
    """The deploy job's part of `eval.checkpoints`: the adapters of the training output's
    checkpoints served beside the final one (`model_name`); None for `last`."""
    every = checkpoint_every(checkpoints)
    if not every:
        return None
    return CheckpointServing(folder=folder, every=every, model_name=model_name, max_in_batch=MAX_LORAS_IN_BATCH)
