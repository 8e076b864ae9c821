"""The typed schema of every config group.

One kw-only dataclass per group, registered in Hydra's ConfigStore as `base_<group>`;
the YAML files under `conf/<group>/` extend it (`defaults: [base_<group>, _self_]`), so a
misspelled key or a wrong type fails at composition. Each field's docstring is its
documentation. Range checks live in `hpcft.config.validate`, which names the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from hpcft.config.run_schema import DeployConfig, EvalConfig, WandbConfig


class ModelKind(str, Enum):
    llm = "llm"
    embedding = "embedding"
    rerank = "rerank"


class Executor(str, Enum):
    local = "local"
    """No Slurm: the stages run one after another on this machine (submitit's local executor)."""
    slurm = "slurm"
    """Each stage is a Slurm job, chained by dependencies; the command exits after submitting."""


class StageName(StrEnum):
    """A pipeline stage, in pipeline order. A `str` too, so it reads and prints as its name."""

    train = "train"
    deploy = "deploy"
    eval = "eval"

    def __repr__(self) -> str:  # messages say 'deploy', as they did when stages were strings
        return repr(self.value)


@dataclass(kw_only=True)
class ModelShape:
    """A model's architecture numbers, named as in its `config.json`, for the memory estimate
    (docs/memory.md) where the weights are not on the login node. Null: read from `config.json`
    when the model is a local folder or in the Hugging Face cache, else guessed from `params_b`."""

    hidden_size: int | None = None
    """Width of the hidden states."""
    num_hidden_layers: int | None = None
    """Transformer layers."""
    intermediate_size: int | None = None
    """Width of the MLP's inner layer."""
    num_attention_heads: int | None = None
    """Query heads."""
    num_key_value_heads: int | None = None
    """Key/value heads (grouped-query attention); null: as many as the query heads."""
    vocab_size: int | None = None
    """Tokens in the vocabulary: the width of the logits the loss is computed over."""
    model_type: str | None = None
    """Its `model_type` (`qwen2`, `llama`, ...): which fused kernels apply (Liger patches only
    the types it knows); null: read from `config.json`, else unknown (no Liger planned)."""


@dataclass(kw_only=True)
class ModelConfig:
    name: str = MISSING
    """Short name, used in job names and run directory names."""
    path: str = MISSING
    """Local folder with the base weights, or a Hugging Face hub id (resolved by the job)."""
    kind: ModelKind = MISSING
    """`llm` (chat / causal LM), `embedding` (bi-encoder) or `rerank` (cross-encoder)."""
    params_b: float = MISSING
    """Size in billions of parameters; used for memory estimates and resource checks."""
    template: str | None = None
    """LLaMA-Factory chat template (e.g. `intern2`, `qwen`, `llama3`); required for `llm`."""
    trust_remote_code: bool = False
    """Whether the model's own modelling code may run (InternLM2 needs it)."""
    pooling: str = "cls"
    """Embedding models: `cls` (BGE), `mean` (sentence-transformers models such as MiniLM) or
    `last_token` (decoder-only embedders, FlagEmbedding's `embedder.decoder_only.*`); training,
    serving and scoring all pool this way."""
    shape: ModelShape = field(default_factory=ModelShape)
    """Its architecture numbers, for the memory estimate when `config.json` is not at hand."""


@dataclass(kw_only=True)
class FrameworkConfig:
    """Parameters every framework shares, in the spelling users know from the seed tool."""

    name: str = MISSING
    """Framework adapter: `llamafactory` or `flagembedding`."""
    learning_rate: float = 1e-4
    """Peak learning rate; > 0."""
    per_device_train_batch_size: int | None = None
    """Samples per process (GPU) per step; >= 1. Null: hpcft chooses. LLaMA-Factory on GPU
    clusters: the largest micro-batch the memory estimate fits in 90 % of a GPU, among those
    that divide the rows a process takes per optimizer step (the accumulation steps at a
    micro-batch of 1, or `global_batch_size` / processes), with the accumulation steps adjusted
    so the global batch stays; the dry run says which. Elsewhere 1. A number is used as given
    (and a LLaMA-Factory plan that cannot fit is refused, naming one that does)."""
    gradient_accumulation_steps: int = 8
    """Steps accumulated before an optimizer update; >= 1. Ignored when `global_batch_size` is set."""
    global_batch_size: int | None = None
    """Samples per optimizer step over all processes. When set, the accumulation steps are derived
    as global / (nodes x processes per node x per-device batch), so the same hyper-parameters
    hold on a different cluster size; it must divide exactly."""
    num_train_epochs: float = 3.0
    """Passes over the training set; > 0."""
    logging_steps: int = 10
    """Log the loss every this many steps; >= 1."""
    save_steps: int = 500
    """Save a checkpoint every this many steps; >= 1."""
    args: dict[str, Any] = field(default_factory=dict)
    """Any other native argument of the framework, passed through unchanged after its name
    is checked against the framework's own argument definitions."""


class GpuRequest(str, Enum):
    gpus_per_node = "gpus_per_node"
    """`--gpus-per-node=[type:]N` (Slurm >= 19.05)."""
    gres = "gres"
    """`--gres=gpu:[type:]N`, for sites whose job submit plugin expects the generic-resource form."""


@dataclass(kw_only=True)
class StageSite:
    """How one stage's jobs differ from the rest of the cluster's (`cluster.train`,
    `cluster.deploy`, `cluster.eval`); null keeps the cluster-wide value. Time limits and GPUs
    are per stage already: `cluster.time` and `cluster.gpus_per_node` (train), `deploy.time`
    and `deploy.gpus`, `eval.time` (eval uses no GPU)."""

    partition: str | None = None
    """This stage's partition; null: `cluster.partition` (eval: `cluster.cpu_partition` first)."""
    account: str | None = None
    """This stage's account; null: `cluster.account`."""
    qos: str | None = None
    """This stage's quality of service; null: `cluster.qos`."""
    cpus: int | None = None
    """CPU cores per node; null: `cluster.cpus_per_node` (deploy: its GPUs' share; eval: 1); >= 1."""
    mem: str | None = None
    """Memory per node; null: `cluster.mem` (deploy: its GPUs' share; eval: the partition default)."""
    python: list[str] | None = None
    """This stage's interpreter or wrapper command (see `cluster.python`); null: `cluster.python`.
    The deploy stage usually names the serving environment (vLLM's pins differ from LLaMA-Factory's)."""
    srun_args: list[str] | None = None
    """This stage's srun flags (see `cluster.srun_args`), e.g. another container image; null: the cluster's."""
    modules: dict[str, bool] = field(default_factory=dict)
    """Optional Python modules this stage's environment is known to have (true) or lack (false),
    e.g. `{liger_kernel: true, flash_attn: false}`: what the plan's defaults rely on (Liger,
    FlashAttention-2) where the login node cannot ask the interpreter (a container). A module
    not named here is looked for in the stage's interpreter when it is visible from here."""
    constraint: str | None = None
    """This stage's node features; null: `cluster.constraint`; "" asks for none."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run after `cluster.setup`, for this stage only."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables exported for this stage only, over `cluster.env`."""


@dataclass(kw_only=True)
class ClusterConfig:
    name: str = MISSING
    """Short name of this cluster config."""
    executor: Executor = Executor.slurm
    """`slurm` submits jobs; `local` runs the stages on this machine without Slurm."""
    partition: str | None = None
    """Slurm partition (`--partition`); null for the cluster's default."""
    account: str | None = None
    """Slurm account (`--account`); null for the user's default."""
    qos: str | None = None
    """Slurm quality of service (`--qos`); null for the default."""
    time: str = "04:00:00"
    """Time limit of the train job: minutes, `HH:MM:SS` or `D-HH:MM:SS`."""
    nodes: int = 1
    """Nodes the train job uses; >= 1 and <= `max_nodes`."""
    gpus_per_node: int = 0
    """GPUs the job uses ON EACH NODE (not in total): 2 nodes x 8 is `nodes=2 gpus_per_node=8`."""
    gpu_type: str | None = None
    """GPU type for `--gpus-per-node=<type>:<n>` (e.g. `h100`); null for any."""
    procs_per_node: int = 1
    """Training processes per node where there are no GPUs (CPU, gloo backend); >= 1."""
    cpus_per_node: int = 8
    """CPU cores the job uses on each node; >= 1."""
    mem: str | None = None
    """Memory per node (`--mem`, e.g. `200G`); null for the partition default. A job that
    uses some of a node's GPUs (deploy) asks for that share of `cpus_per_node` and `mem`."""
    cpu_partition: str | None = None
    """A partition without GPUs for the eval job (it only sends requests); null: `partition`."""
    node_gpus: int = 0
    """GPUs one node of this cluster has: `gpus_per_node` may not exceed it."""
    gpu_mem_gb: float = 80.0
    """Memory of one GPU in GB, for the memory-fit check before submitting; > 0."""
    max_nodes: int = 1
    """Nodes one job may use on this cluster: `nodes` may not exceed it."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before each job (module load, conda activate, ...). These are shell
    by design and come from the cluster file; nothing else hpcft writes is."""
    teardown: list[str] = field(default_factory=list)
    """Shell lines run after each job's command (submitit's `teardown`), shell by design like `setup`."""
    python: list[str] = field(default_factory=list)
    """The command that runs each job's Python, one word per item: a training environment's
    interpreter (`[/shared/envs/train/bin/python]`), or a container runtime wrapping it
    (`[apptainer, exec, --nv, /images/train.sif, python]`). Empty: the interpreter that submits.
    submitit's `python`; every word is quoted, so values stay data."""
    srun_args: list[str] = field(default_factory=list)
    """Extra flags of the `srun` that starts each job's tasks (submitit's `srun_args`), e.g.
    `--cpu-bind=none`, `--mpi=pmix`, or pyxis's `--container-image=...`; each one quoted."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables every job exports (NCCL settings, proxies, `HF_HOME` on shared storage); each
    value quoted. Secrets (`WANDB_API_KEY`, `HF_TOKEN`, ...) are refused here: scripts are files."""
    gpu_request: GpuRequest = GpuRequest.gpus_per_node
    """How GPUs are asked for: `gpus_per_node` (`--gpus-per-node`) or `gres` (`--gres=gpu:...`)."""
    constraint: str | None = None
    """Node features (`--constraint`, e.g. `a100&ib`); null for none."""
    reservation: str | None = None
    """Slurm reservation (`--reservation`); null for none."""
    exclusive: bool = False
    """Whole nodes only (`--exclusive`): no other job shares the train job's nodes."""
    exclude: str | None = None
    """Nodes never to use (`--exclude`, e.g. `gpu[07-08]`); null for none."""
    nodelist: str | None = None
    """Nodes to use (`--nodelist`); null for any."""
    mail_type: str | None = None
    """When Slurm mails (`--mail-type`, e.g. `END,FAIL`); null for never."""
    mail_user: str | None = None
    """Who Slurm mails (`--mail-user`); null for the submitting user."""
    additional_parameters: dict[str, str] = field(default_factory=dict)
    """Any other sbatch option by its long name without dashes (`{licenses: "scratch:1"}`),
    submitit's `additional_parameters`; options hpcft sets itself are refused with the key to use."""
    train: StageSite = field(default_factory=StageSite)
    """The train job's own partition, account, interpreter, ... (see `StageSite`)."""
    deploy: StageSite = field(default_factory=StageSite)
    """The deploy job's own settings, e.g. the serving environment's `python`."""
    eval: StageSite = field(default_factory=StageSite)
    """The eval job's own settings; it only sends requests, so a CPU partition suits it."""
    umask: str = "077"
    """File-creation mask of every run, as three octal digits (quote it in YAML: `umask: "027"`):
    applied on the login node while hpcft creates the run folder and its files, and the first
    line of every job, so logs, checkpoints and merged weights follow it too. `077`: folders
    0700, files 0600, nothing readable by other users (many sites give every user one primary
    group, so `027` alone would still show a run to everyone). A project that shares runs with
    its group: `027` (the group reads) or `007` (the group also writes). The server's key and
    the eval's predictions stay 0600 whatever it is."""
    internet: bool = True
    """Whether compute nodes reach the internet (W&B online); false means offline mode."""
    export_secrets: bool = True
    """Whether `WANDB_API_KEY`, `HF_TOKEN` and the like in the submitting shell reach the jobs.
    Slurm's default `--export=ALL` passes them, and slurmctld keeps a job's environment in
    its records. false: they are removed from what `sbatch` sees, and jobs use the frameworks'
    credential files instead (`~/.netrc` from `wandb login`; the Hugging Face token file
    from `huggingface-cli login`), which hpcft checks on the login node."""
    signal_delay_s: int = 90
    """Seconds before the time limit at which Slurm signals the job to checkpoint; >= 0."""
    max_array_size: int = 1000
    """Largest job array the cluster accepts (Slurm's MaxArraySize - 1); longer sweeps are split."""
    array_parallelism: int = 256
    """How many tasks of one sweep array may run at once (sbatch `--array=...%N`); >= 1."""
    max_requeues: int = 3
    """Times a train job that hits its time limit is requeued to resume from its last
    checkpoint (preemptions are always requeued); >= 0."""


@dataclass(kw_only=True)
class DeepSpeedConfig:
    name: str = MISSING
    """Preset name: `none`, `zero2`, `zero3`, `zero3_offload`."""
    zero_stage: int | None = None
    """ZeRO stage 0-3; null disables DeepSpeed."""
    offload_optimizer: bool = False
    """Offload optimizer states to CPU memory (ZeRO-2/3)."""
    offload_param: bool = False
    """Offload parameters to CPU memory (ZeRO-3 only)."""
    config: str | None = None
    """A DeepSpeed JSON of your own (`deepspeed.config=ds_z3.json`, or a native YAML's
    `deepspeed:`), used as given, `"auto"` values left for the trainer to fill; its ZeRO
    stage and offloads are read for the memory estimate. null: the preset's JSON."""


@dataclass(kw_only=True)
class SweepConfig:
    """Settings of an adaptive sweep (`-m hydra/sweeper=optuna ...`); a basic sweep ignores them."""

    objective: str | None = None
    """What the sweeper optimises: `<stage>.<metric>`, a key of `eval/metrics.json`
    (`eval.rouge-l`, `eval.ndcg@10`) or of `train/all_results.json` (`train.train_loss`).
    null: `eval.rouge-l` for LLMs, `eval.ndcg@10` for embedders and rerankers, and
    `train.train_loss` without an eval stage."""
    poll_s: float = 30.0
    """How often the controller job looks at its trials' jobs, in seconds; > 0."""


@dataclass(kw_only=True)
class HpcftConfig:
    model: ModelConfig = MISSING
    """The base model (config group `model/`)."""
    framework: FrameworkConfig = MISSING
    """The training framework (group `framework/`, one schema per framework, each a subclass);
    follows the model kind when not given."""
    cluster: ClusterConfig = MISSING
    """Where jobs run (group `cluster/`); `local` needs no Slurm."""
    deepspeed: DeepSpeedConfig = MISSING
    """DeepSpeed preset (group `deepspeed/`)."""
    deploy: DeployConfig = field(default_factory=DeployConfig)
    """How the fine-tuned model is served."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """How the eval set is run through the served model."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases logging."""
    sweep: SweepConfig = field(default_factory=SweepConfig)
    """Adaptive sweeps: the objective and the controller's polling."""
    trainset: str = MISSING
    """Training data file (alpaca or sharegpt JSON / JSONL for LLMs)."""
    evalset: str | None = None
    """Eval data file (alpaca JSON with reference outputs); required for the eval stage."""
    stages: list[StageName] = field(default_factory=lambda: list(StageName))
    """Stages to run, in order: a prefix of `train, deploy, eval`."""
    name: str | None = None
    """Run name; null for `<model>-<framework>`. Used in job names and the run directory."""
    run_root: str = "runs"
    """Folder under which each submission gets a new run directory."""
    dry_run: bool = False
    """Write and print the sbatch scripts and the dependency graph; submit nothing."""
    seed: int = 42
    """Random seed passed to the framework."""


SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "cluster": ClusterConfig,
    "deepspeed": DeepSpeedConfig,
}


def register_schemas(frameworks: Mapping[str, type[FrameworkConfig]]) -> None:
    """Store every schema in Hydra's ConfigStore (idempotent); each framework brings its own."""
    _store(name="base_hpcft", schema=HpcftConfig)
    for group, schema in SCHEMAS.items():
        _store(group=group, name=f"base_{group}", schema=schema)
    for name, framework_schema in frameworks.items():
        _store(group="framework", name=f"base_{name}", schema=framework_schema)


def _store(*, name: str, schema: type, group: str | None = None) -> None:
    """Store one schema, unless the ConfigStore already holds it: building the node
    (`OmegaConf.structured`) was 13 % of a composition, and every check composes."""
    cs = ConfigStore.instance()
    folder: Any = cs.repo
    for part in group.split("/") if group else ():
        folder = folder.get(part, {})
    stored = folder.get(f"{name}.yaml")
    if stored is None or OmegaConf.get_type(stored.node) is not schema:
        cs.store(group=group, name=name, node=schema)
