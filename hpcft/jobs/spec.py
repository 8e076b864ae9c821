"""What each stage's job runs: small picklable records made on the login node by the plan.

submitit pickles one of these with `hpcft.jobs.entry.run_stage`; the job unpickles it on the
compute node. Commands are argument lists, never shell strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROGRESS_ENV = "HPCFT_TRAIN_PROGRESS"
"""Set in a train job's environment, the file hpcft's own callback appends the Trainer's
progress to (hpcft.jobs.progress), for frameworks that write no `trainer_log.jsonl`."""

Instruction = tuple[str, str]
"""(format, instruction): a text is sent as `format.format(instruction, text)` (FlagEmbedding's
`query_instruction_format` and `query_instruction_for_retrieval`, and their passage twins)."""


@dataclass(frozen=True, kw_only=True)
class TrainJob:
    run_dir: str
    """The run directory (absolute)."""
    argv: list[str]
    """The training command, run once per node. When it starts with `torchrun`, the job adds
    the rendezvous flags (`--nnodes --node_rank --master_addr --master_port`)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the command (no secrets: those come from the job's environment)."""
    resume_from_dir: str | None = None
    """The framework's output folder, where a rerun finds `checkpoint-*` to resume from."""


@dataclass(frozen=True, kw_only=True)
class PublishedModel:
    """One of the models a shared server (a sweep's) serves, for one point of the sweep."""

    run_dir: str
    """The point's run directory: its endpoint.json, key file and eval's stop marker."""
    model_name: str
    """The name the point's eval asks for."""
    weights: str
    """What training left for it (an adapter folder); a point without it is not served."""
    args: tuple[str, ...]
    """Its part of the server's command, spliced in where `serve_argv` says `{models}`."""


@dataclass(frozen=True, kw_only=True)
class CheckpointServing:
    """Saved checkpoints served beside the final LoRA adapter (`eval.checkpoints`): the deploy
    job lists them when it starts (they exist only after training) and splices one
    `--lora-modules` entry each where `serve_argv` says `{checkpoints}`, with their count for
    `{loras}` and `{max_loras}`."""

    folder: str
    """The training output, whose `checkpoint-<step>` folders hold the adapters."""
    every: int
    """Serve the checkpoints at multiples of this many steps (1: all)."""
    model_name: str
    """The final adapter's served name; a checkpoint's is `<model_name>-step-<step>`."""
    max_in_batch: int = 16
    """Adapters one batch may mix (`--max-loras`); every one stays loaded (`--max-cpu-loras`)."""


@dataclass(frozen=True, kw_only=True)
class CheckpointEval:
    """The eval's part of `eval.checkpoints`: score every served checkpoint and pick the best."""

    folder: str
    """The training output (its `trainer_state.json` gives the final model's step)."""
    metric: str
    """The metric the best checkpoint is picked by (a key of the eval's metrics)."""
    direction: str
    """`maximize` or `minimize`."""


@dataclass(frozen=True, kw_only=True)
class DeployJob:
    run_dir: str
    serve_argv: list[str]
    """Command that starts the OpenAI-compatible server; `{host}` and `{port}` in an argument
    are filled in by the deploy job."""
    model_name: str
    """The model name clients send in requests."""
    env: dict[str, str] = field(default_factory=dict)
    """The servers' environment, in the server's own contract (the adapter's knowledge):
    `{host}`, `{port}`, `{model}` (the name that server serves) and `{api_key}` (the run's
    key, read from its 0600 file at run time, so it is never in a script or record) in a
    value are filled in by the deploy job for each server it starts."""
    port: int = 0
    ready_path: str = "/v1/models"
    ready_probe: dict[str, object] | None = None
    """A request body POSTed to `ready_path` to call the server ready (its `model` filled in);
    None: a GET that answers 200 is enough."""
    ready_timeout_s: int = 1800
    weights_ready: str | None = None
    """A file the (fine-tuned model's) server writes once it has prepared the weights it
    serves, e.g. merged a LoRA adapter in its own process; `ready_timeout_s` runs from then,
    since preparing them takes as long as the model is large. None: nothing to prepare."""
    keep_serving: bool = False
    endpoint_extra: dict[str, str] = field(default_factory=dict)
    """More to publish in endpoint.json (e.g. the name the base model is served under)."""
    baseline_argv: list[str] | None = None
    """A second server for the base model, so eval scores it beside the fine-tuned one; or None."""
    baseline_model_name: str = ""
    """The base model's name for eval: on the second server, or (without one) on the same server."""
    published: tuple[PublishedModel, ...] = ()
    """A server shared by a sweep's points (vLLM serving every point's LoRA adapter beside
    one base model): each point's model; empty: this run's own `model_name`."""
    checkpoints: CheckpointServing | None = None
    """Saved checkpoints served beside the final adapter (`eval.checkpoints`); None: none."""


@dataclass(frozen=True, kw_only=True)
class Conversation:
    """Where a generation eval row keeps its conversation, as the framework's data format lays
    it out (its adapter says). The eval sends the system message and every turn before the
    reference answer (hpcft.jobs.conversation), and scores the reply against that answer."""

    prompt: tuple[str, ...] = ()
    """Prompt rows (alpaca): the columns whose non-empty values, joined by a newline, are the
    last user message."""
    answer: str = ""
    """Prompt rows: the column of the reference answer."""
    history: str | None = None
    """Prompt rows: the column of the earlier `[user, assistant]` pairs."""
    turns: str | None = None
    """Turn rows (sharegpt, OpenAI messages): the column of the turns; the last one, an
    answer, is the reference. None: prompt rows."""
    system: str | None = None
    """The column of the system message (a leading system turn comes first)."""
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    system_tag: str = "system"
    """Turn rows: the keys of a turn's role and text, and the roles' names."""


@dataclass(frozen=True, kw_only=True)
class SuiteJob:
    """Standard LLM suites the eval job scores through the endpoint with lm-evaluation-harness
    (its `local-completions` model), for the fine-tuned model and its base (hpcft.jobs.suites)."""

    tasks: tuple[str, ...]
    """lm-eval task names, each scored (and resumed) on its own."""
    tokenizer: str
    """The served model's tokenizer (the base model's folder or hub id): lm-eval counts the
    tokens of each context with it and sends token ids."""
    num_fewshot: int | None = None
    """Few-shot examples per prompt; None: each task's own."""
    limit: int | None = None
    """Rows scored per task; None: all."""
    include_path: str | None = None
    """The user's task folder (`--include_path`); lm-eval runs in it, so relative
    `data_files` are read from there."""
    max_length: int | None = None
    """The served context (`deploy.max_model_len`): lm-eval cuts longer contexts from the left."""
    concurrency: int = 8
    """Requests in flight at once."""
    retries: int = 5
    """lm-eval's retries of a failed request."""
    request_timeout_s: int = 300
    """Timeout of one request."""
    offline: bool = True
    """Compute nodes reach no network: the HF libraries are told so (`HF_DATASETS_OFFLINE`),
    and read task data from files and the cache only."""


@dataclass(frozen=True, kw_only=True)
class LocalModels:
    """`eval.encode=local`: the models the retrieval eval loads itself with FlagEmbedding's
    classes, on the eval job's device, instead of asking a server (hpcft.jobs.local_encode)."""

    weights: str
    """The fine-tuned weights (what a server would load)."""
    base: str
    """The base model's folder or hub id."""
    pooling: str
    """`model.pooling`, as training pooled (embedders)."""
    model_name: str
    """The fine-tuned model's name in `metrics.json` (the served name it would have had)."""


@dataclass(frozen=True, kw_only=True)
class EvalJob:
    run_dir: str
    evalset: str
    """`generation`: chat rows laid out as `conversation` says. `embedding` / `rerank`: rows
    `{query, pos, neg}` or a FlagEmbedding folder (see hpcft.jobs.retrieval)."""
    task: str = "generation"
    """What is evaluated: `generation` (chat), `embedding` (retrieval) or `rerank`."""
    conversation: Conversation = field(default_factory=Conversation)
    """`generation`: where each row keeps its conversation and reference answer."""
    max_new_tokens: int = 128
    request_timeout_s: int = 300
    endpoint_timeout_s: int = 3600
    concurrency: int = 64
    """Requests in flight at once."""
    retries: int = 5
    """Retries of a request after a transient failure (5xx, timeout, dropped connection)."""
    retry_backoff_s: float = 1.0
    """First pause between retries; it doubles each time."""
    max_refused_fraction: float = 0.01
    """The share of rows the server may refuse (`answers.REFUSED_ROW`) before the eval fails."""
    chat_template: str | None = None
    """The chat template the server applies (recorded beside the metrics)."""
    truncation: tuple[int, int] | None = None
    """Retrieval: the (query, passage) tokens texts are cut to, as the model trained on them
    (a reranker's pair: their sum), at most the served context; None: the server's context."""
    instructions: tuple[Instruction | None, Instruction | None] = (None, None)
    """Retrieval: the instructions written before each query and each passage, as in training."""
    env: dict[str, str] = field(default_factory=dict)
    """W&B settings for logging the metrics (empty or WANDB_MODE=disabled: not logged)."""
    suites: SuiteJob | None = None
    """Standard LLM suites scored beside the eval set (`eval.suites`); None: none."""
    general_sets: tuple[str, ...] = ()
    """Retrieval: general sets (FlagEmbedding evaluation folders) scored beside the eval set,
    base and fine-tuned (`eval.general_sets`, hpcft.jobs.general)."""
    max_general_drop: float | None = None
    """Points a general set's headline metric may drop before the run is marked regressed."""
    checkpoints: CheckpointEval | None = None
    """Score the saved checkpoints the server publishes too, and pick the best (`eval.checkpoints`)."""
    local: LocalModels | None = None
    """Retrieval: encode with these models in the job itself (`eval.encode=local`); None: ask
    the served endpoint."""


@dataclass(frozen=True, kw_only=True)
class AllocationJob:
    """`deploy.placement=after_train`: the three stages in the train job's allocation. Every
    node trains; then the first serves in the background (in the deploy stage's interpreter)
    and evaluates against its own server (hpcft.jobs.allocation). A requeue resumes where it stopped: training from its
    last checkpoint, or, once it has finished (a marker says so), straight to serving and to
    the eval's kept answers."""

    train: TrainJob
    deploy: DeployJob
    eval: EvalJob
    deploy_python: tuple[str, ...] = ()
    """The deploy stage's interpreter command (`cluster.deploy.python`: vLLM's environment);
    empty: the train job's."""


StageJob = TrainJob | DeployJob | EvalJob | AllocationJob
