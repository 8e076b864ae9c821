"""LLaMA-Factory's config schema (`framework=llamafactory`), apart from the adapter so that
the adapter's helper modules can name its type."""

from __future__ import annotations

from dataclasses import dataclass, field

from hpcft.config.schema import FrameworkConfig, HpcftConfig

PRECISION_KEYS = frozenset({"bf16", "fp16", "pure_bf16"})
"""LLaMA-Factory's arguments that choose the precision."""


@dataclass(kw_only=True)
class Config(FrameworkConfig):
    """LLaMA-Factory's options; the YAML is `conf/framework/llamafactory.yaml`."""

    stage: str = "sft"
    """LLaMA-Factory training stage: `sft` (supervised), `pt` (pre-training), `dpo`
    (preference pairs) or `kto` (answers tagged good or bad)."""
    finetuning_type: str = "lora"
    """`lora` (adapter; QLoRA with `quantization_bit`), `full` or `freeze`."""
    lora_rank: int = 8
    """LoRA rank; >= 1. Used with `finetuning_type=lora`."""
    lora_target: str = "all"
    """Modules LoRA attaches to: `all` or a comma-separated list of module names."""
    quantization_bit: int | None = None
    """4 or 8 for QLoRA (GPU only); null for none."""
    cutoff_len: int = 1024
    """Maximum tokens per sample after tokenisation; >= 1."""
    max_samples: int | None = None
    """Use at most this many training samples; null for all."""
    val_size: float = 0.0
    """Fraction of the training set held out for validation, in [0, 1)."""
    dataset_format: str = "alpaca"
    """Layout of a plain `trainset` file: `alpaca` (instruction/input/output, optional
    system/history), `sharegpt` (`conversations` of from/value turns as LLaMA-Factory's
    default, or `messages` of role/content turns; tool turns and a `tools` column) or `openai`.
    A `dataset_info.json` registry declares its own layouts."""
    dataset: list[str] = field(default_factory=list)
    """When `trainset` is a dataset_dir with a `dataset_info.json` (or that file): the
    registered datasets to train on, e.g. `framework.dataset=[alpaca_en,my_chat]`;
    LLaMA-Factory mixes them (`+framework.args.mix_strategy=...`, `interleave_probs`).
    Empty: the registry's only dataset."""
    bf16: bool | None = None
    """Train in bfloat16. Null: what a practitioner would choose, bf16 on GPU clusters (fp16
    on GPU types without bf16, e.g. `cluster.gpu_type=v100`), fp32 on CPU."""
    native_config: str | None = None
    """An existing LLaMA-Factory training YAML, used as it is: its settings win over the
    defaults above, and `args` win over it. hpcft still sets the model, data, output and
    DeepSpeed paths from its own config, and says so when the file sets them."""


def lf_settings(cfg: HpcftConfig) -> Config:
    """The run's LLaMA-Factory settings, typed (the run's framework must be LLaMA-Factory)."""
    assert isinstance(cfg.framework, Config), f"not a LLaMA-Factory run: {type(cfg.framework).__name__}"
    return cfg.framework
