"""The memory fit of a FlagEmbedding train job, checked on the login node (docs/memory.md):
the estimate for its queries and passages (lengths x group size x batch), the gradient
checkpointing it needs, and, for a job that cannot fit, the cheapest change that would."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hpcft.config.schema import DeepSpeedConfig, HpcftConfig
from hpcft.data import Row
from hpcft.errors import ConfigError
from hpcft.memory import (
    Fit,
    Tokens,
    Trained,
    activations,
    estimate_memory,
    lora_params,
    model_shape,
    more_sharding,
    padded,
    smaller_micro_batches,
)

SPECIAL_TOKENS = 4
"""Tokens a tokenizer adds around a text or a query-passage pair (`[CLS] ... [SEP]`; `<s> q </s></s> p </s>`)."""
DECODER_LORA_RANK = 64
"""FlagEmbedding's default `lora_rank` for its decoder-only modules, which train LoRA unless `use_lora=false`."""


def text_sizes(row: Row) -> tuple[int, ...]:
    """A training row's UTF-8 bytes: its query's and its longest passage's (a byte-level BPE or
    WordPiece never makes more tokens than bytes)."""
    passages = [p for key in ("pos", "neg") for p in row.get(key) or () if isinstance(p, str)]
    return len(str(row.get("query", "")).encode()), max((len(p.encode()) for p in passages), default=0)


def instruction_bytes(found: tuple[str, str] | None) -> int:
    """UTF-8 bytes an instruction (format, text) adds before each query or passage."""
    return 0 if found is None else len(found[0].replace("{}", "", 2).encode()) + len(found[1].encode())


@dataclass(frozen=True, kw_only=True)
class Job:
    """What the estimate needs of a FlagEmbedding train job."""

    module: str
    """FlagEmbedding's fine-tuning module (`embedder.encoder_only.base`, ...)."""
    batch: int
    """Queries per micro-batch (`per_device_train_batch_size`)."""
    group: int
    """Passages per query (`train_group_size`)."""
    max_lens: tuple[int, int]
    """`query_max_len`, `passage_max_len`."""
    longest: tuple[int, int]
    """UTF-8 bytes of the longest query and passage in the data, their instructions included."""
    args: dict[str, Any]
    """The native arguments (`use_lora`, `lora_rank`, `target_modules`, ...)."""
    half: bool
    """Whether it trains in bf16/fp16."""
    ds: DeepSpeedConfig
    """The DeepSpeed preset."""
    checkpointing: bool
    """Gradient checkpointing."""


def micro_batch_tokens(job: Job) -> Tokens:
    """An embedder encodes `batch` queries and `batch x group` passages, a reranker `batch x
    group` query-passage pairs; each padded to the longest, which the data bounds, at most the
    max lengths."""
    (q_max, p_max), (q_bytes, p_bytes) = job.max_lens, job.longest
    q_len, p_len = padded(q_bytes + SPECIAL_TOKENS, q_max), padded(p_bytes + SPECIAL_TOKENS, p_max)
    why = f"longest query {q_len}, passage {p_len} tokens at most (their UTF-8 bytes, query_max_len {q_max},"
    why += f" passage_max_len {p_max})"
    if job.module.startswith("reranker."):
        pair = padded(q_bytes + p_bytes + SPECIAL_TOKENS, q_max + p_max)
        return Tokens(sequences=job.batch * job.group, length=pair, why=f"query-passage pairs; {why}")
    sequences = job.batch * (1 + job.group)
    length = -(-(job.batch * q_len + job.batch * job.group * p_len) // sequences)
    return Tokens(sequences=sequences, length=length, why=f"queries and passages, mean length; {why}")


def estimate(cfg: HpcftConfig, job: Job) -> Fit:
    """Encoder-only modules train every parameter (BERT layers); decoder-only ones LoRA (rank
    64 on all projections) unless `use_lora=false`, their frozen weights counted in fp32 as
    FlagEmbedding loads them, and a reranker's logits over the vocabulary."""
    shape, tokens = model_shape(cfg.model), micro_batch_tokens(job)
    decoder, width = "decoder_only" in job.module, 2 if job.half else 4
    params = cfg.model.params_b * 1e9
    trainable = float(params)
    if decoder and job.args.get("use_lora", True):
        targets = job.args.get("target_modules")
        modules = frozenset(targets) if isinstance(targets, list) else None
        trainable = float(lora_params(shape, int(job.args.get("lora_rank", DECODER_LORA_RANK)), modules))
    vocab = width if decoder and job.module.startswith("reranker.") else 0
    act = activations(shape, tokens.total, width, job.checkpointing, decoder, vocab)
    t = Trained(params=params, trainable=trainable, frozen_bytes=4.0)
    gpus = cfg.cluster.nodes * cfg.cluster.gpus_per_node
    return Fit(memory=estimate_memory(t, job.ds, gpus, act), tokens=tokens, shape=shape)


def alternatives(cfg: HpcftConfig, job: Job) -> list[tuple[str, Job]]:
    """Cheapest change first: gradient checkpointing, a smaller micro-batch with more
    accumulation (fewer in-batch negatives), a ZeRO stage or offload."""
    out = []
    if not job.checkpointing:
        hint = f"{'' if 'gradient_checkpointing' in job.args else '+'}framework.args.gradient_checkpointing=true"
        out.append((hint, dataclasses.replace(job, checkpointing=True)))
    out += [(hint, dataclasses.replace(job, batch=batch)) for hint, batch in smaller_micro_batches(cfg)]
    out += [(f"deepspeed={ds.name}", dataclasses.replace(job, ds=ds)) for ds in more_sharding(job.ds)]
    return out


def planned_fit(cfg: HpcftConfig, job: Job) -> tuple[Fit, bool]:
    """The estimate of the job as it will run, and whether hpcft turns gradient checkpointing
    on for it: when `gradient_checkpointing` is not given and the job fits only with it.
    Refuses a job that does not fit either way, naming the numbers and what would."""
    c = cfg.cluster
    mine = estimate(cfg, job)
    if mine.memory.total_gb <= c.gpu_mem_gb:
        return mine, False
    if "gradient_checkpointing" not in job.args and not job.checkpointing:
        job = dataclasses.replace(job, checkpointing=True)  # kept under the changes suggested
        mine = estimate(cfg, job)
        if mine.memory.total_gb <= c.gpu_mem_gb:
            return mine, True
    fits = ((hint, estimate(cfg, other).memory.total_gb) for hint, other in alternatives(cfg, job))
    found = next(((hint, gb) for hint, gb in fits if gb <= c.gpu_mem_gb), None)
    suggestion = f"; try {found[0]} (~{found[1]:.0f} GiB)" if found else "; use more GPUs"
    raise ConfigError(
        "cluster.gpu_mem_gb",
        f"{cfg.model.name} ({cfg.model.params_b}B, {job.module}, deepspeed={job.ds.name},"
        f" gradient checkpointing {'on' if job.checkpointing else 'off'}) needs"
        f" {mine.describe(c.gpu_mem_gb)} over {c.nodes * c.gpus_per_node} GPUs, more than a GPU has{suggestion}",
    )


def fit_notes(cfg: HpcftConfig, fit: Fit, checkpointing_on: bool) -> list[str]:
    """The dry run's lines: gradient checkpointing when hpcft turned it on, and the estimate."""
    gpu = cfg.cluster.gpu_mem_gb
    notes = [
        f"train: gradient checkpointing on: without it the job would need more than the {gpu:g} GB a GPU has;"
        " off with +framework.args.gradient_checkpointing=false"
    ]
    return [*notes[:checkpointing_on], f"train: {fit.describe(gpu)}"]
