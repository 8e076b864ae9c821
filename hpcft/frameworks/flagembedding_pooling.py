"""How a FlagEmbedding model becomes one vector per text, the same when it trains, when it
is served and when it is scored; and which folder holds the weights the servers load.

FlagEmbedding's inference classes fix the pooling by architecture: `FlagModel` (encoder-only)
pools `cls` or `mean`, `FlagLLMModel` (decoder-only) refuses anything but `last_token`. Its
trainer, though, takes any `--sentence_pooling_method`, so a decoder-only embedder trained
with `last_token` (every FlagEmbedding README command) and served with `cls` scored another
model. `model.pooling` is the one setting: training, vLLM's pooler and hpcft's own server
all read it.

Decoder-only modules train LoRA by default and save an adapter; with
`save_merged_lora_model` FlagEmbedding also writes the merged model to
`<output_dir>/merged_model`, which is what a server (vLLM or FlagEmbedding's) can load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpcft.config.checks import check_choice
from hpcft.errors import ConfigError

VLLM_POOLING = {"cls": "CLS", "mean": "MEAN", "last_token": "LAST"}
"""`model.pooling` (FlagEmbedding's `sentence_pooling_method`) → vLLM's `pooling_type`."""

MERGED = "merged_model"
"""Where FlagEmbedding's `save_merged_lora_model` writes the merged weights, in `output_dir`."""


def is_decoder_only(module: str) -> bool:
    return ".decoder_only." in f".{module}."


def check_pooling(module: str, pooling: str, args: dict[str, Any]) -> None:
    """`model.pooling` as the module's inference class accepts it, and no second pooling in
    `framework.args` that training would use and serving would not."""
    check_choice("model.pooling", pooling, tuple(VLLM_POOLING))
    if module.startswith("embedder."):
        decoder = is_decoder_only(module)
        if decoder != (pooling == "last_token"):
            want = "last_token" if decoder else "cls or mean"
            raise ConfigError(
                "model.pooling",
                f"{pooling}, but {module} embeddings are pooled {want} (FlagEmbedding's inference for this"
                f" architecture takes nothing else); set model.pooling={'last_token' if decoder else 'cls'}",
            )
    given = args.get("sentence_pooling_method")
    if given is not None and given != pooling:
        raise ConfigError(
            "framework.args.sentence_pooling_method",
            f"{given}, but model.pooling={pooling} is what serving and scoring use;"
            f" set model.pooling={given} and drop the argument",
        )


def merges_lora(module: str, args: dict[str, Any]) -> bool:
    """Whether the job trains LoRA (decoder-only modules, unless `use_lora=false`) and so
    must save the merged model for the servers."""
    return is_decoder_only(module) and bool(args.get("use_lora", True))


def served_weights(module: str, args: dict[str, Any], output: Path) -> Path:
    """The folder the deploy stage loads: the merged model of a LoRA run, else `output`."""
    return output / MERGED if merges_lora(module, args) else output
