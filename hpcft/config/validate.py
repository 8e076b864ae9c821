"""Checks on a typed config, run on the login node before anything is submitted.

Every problem is a `ConfigError` naming the dotted key and the allowed range, so that
`python -m hpcft` exits with status 2 and one clear line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hpcft.checkpoints import checkpoint_every
from hpcft.config.checks import (
    check_choice,
    check_mem,
    check_name,
    check_positive,
    check_range,
    check_safe_text,
    check_time,
)
from hpcft.config.placement import validate_placement
from hpcft.config.registry import default_framework, registered_frameworks
from hpcft.config.schema import ClusterConfig, Executor, HpcftConfig, ModelKind, StageName
from hpcft.config.secrets import check_secret, environment_secrets
from hpcft.config.suites import validate_suites
from hpcft.config.validate_site import validate_site
from hpcft.errors import ConfigError
from hpcft.once import once

STAGE_ORDER = tuple(StageName)
ENCODE = ("endpoint", "local")
"""`eval.encode`'s values."""
MAX_SEED = 2**32 - 1
"""NumPy's and torch's seeds are 32-bit unsigned."""


def validate_cluster(c: ClusterConfig) -> None:
    for name in ("nodes", "procs_per_node", "cpus_per_node", "max_nodes", "max_array_size", "array_parallelism"):
        check_positive(f"cluster.{name}", getattr(c, name))
    for name in ("gpus_per_node", "node_gpus", "signal_delay_s", "max_requeues"):
        check_positive(f"cluster.{name}", getattr(c, name), allow_zero=True)
    if c.nodes > c.max_nodes:
        raise ConfigError("cluster.nodes", f"{c.nodes} nodes exceed the {c.max_nodes} of cluster '{c.name}'")
    if c.gpus_per_node > c.node_gpus:
        raise ConfigError(
            "cluster.gpus_per_node",
            f"{c.gpus_per_node} GPUs per node exceed the {c.node_gpus} a node of cluster '{c.name}' has",
        )
    check_time("cluster.time", c.time)
    check_positive("cluster.gpu_mem_gb", c.gpu_mem_gb)
    check_mem("cluster.mem", c.mem)
    check_name("cluster.name", c.name)
    for name in ("name", "partition", "cpu_partition", "account", "qos", "gpu_type", "mem"):
        check_safe_text(f"cluster.{name}", getattr(c, name))
    if c.executor is Executor.local and c.nodes != 1:
        raise ConfigError("cluster.nodes", "the local executor runs on this machine only: nodes must be 1")


def validate_stages(cfg: HpcftConfig) -> None:
    if list(cfg.stages) != list(STAGE_ORDER[: len(cfg.stages)]) or not cfg.stages:
        raise ConfigError(
            "stages", f"must be a non-empty prefix of [{', '.join(STAGE_ORDER)}] (got [{', '.join(cfg.stages)}])"
        )
    if "eval" in cfg.stages and not cfg.evalset:
        raise ConfigError(
            "evalset", "the eval stage needs an eval set (evalset=<file>), or drop it: stages=[train,deploy]"
        )


def validate_model(cfg: HpcftConfig) -> None:
    m = cfg.model
    check_positive("model.params_b", m.params_b)
    check_name("model.name", m.name)
    if m.kind not in registered_frameworks()[cfg.framework.name].kinds:
        raise ConfigError(
            "framework",
            f"{cfg.framework.name} does not fit model '{m.name}' of kind {m.kind.value}; "
            f"use framework={default_framework(m.kind)}",
        )
    looks_local = m.path.startswith(("/", "./", "../", "~")) or m.path.count("/") != 1
    if looks_local and not Path(m.path).expanduser().is_dir():
        raise ConfigError("model.path", f"no model folder at {m.path}")


def validate_deploy_eval(cfg: HpcftConfig) -> None:
    d, e = cfg.deploy, cfg.eval
    check_positive("deploy.max_model_len", d.max_model_len)
    check_positive("deploy.gpus", d.gpus, allow_zero=True)
    if d.gpus is not None and d.gpus > cfg.cluster.node_gpus:
        raise ConfigError("deploy.gpus", f"{d.gpus} exceed the {cfg.cluster.node_gpus} GPUs of a node")
    check_range("deploy.port", d.port, 0, 65535, high_open=False)
    for key, value in (("deploy.time", d.time), ("eval.time", e.time)):
        check_time(key, value)
    check_positive("deploy.ready_timeout_s", d.ready_timeout_s)
    for name in ("max_new_tokens", "request_timeout_s", "endpoint_timeout_s", "concurrency"):
        check_positive(f"eval.{name}", getattr(e, name))
    check_positive("eval.retries", e.retries, allow_zero=True)
    check_range("eval.max_refused_fraction", e.max_refused_fraction, 0, 1, high_open=False)
    if d.max_model_len is not None and "eval" in cfg.stages and e.max_new_tokens >= d.max_model_len:
        raise ConfigError(
            "eval.max_new_tokens",
            f"{e.max_new_tokens} leaves no room for a prompt in deploy.max_model_len={d.max_model_len}: the server"
            " refuses a request whose prompt and answer exceed the context; lower it or raise deploy.max_model_len",
        )


def validate_checkpoints(cfg: HpcftConfig) -> None:
    """`eval.checkpoints`: a known value, in a run that evaluates, at steps checkpoints are
    saved at (whether the framework can serve them is its adapter's check)."""
    every = checkpoint_every(cfg.eval.checkpoints)
    if every == 0:
        return
    if StageName.eval not in cfg.stages:
        raise ConfigError("eval.checkpoints", f"{cfg.eval.checkpoints} scores checkpoints in the eval stage; add it")
    save = cfg.framework.save_steps
    if every > 1 and every % save:
        raise ConfigError(
            "eval.checkpoints",
            f"{cfg.eval.checkpoints}: {every} steps is not a multiple of framework.save_steps={save},"
            " so some chosen steps have no checkpoint",
        )


def validate_encode(cfg: HpcftConfig) -> None:
    """`eval.encode`: a known value; `local` for the models FlagEmbedding encodes only (whether
    the eval job's interpreter has FlagEmbedding is the adapter's check)."""
    check_choice("eval.encode", cfg.eval.encode, ENCODE)
    if cfg.eval.encode == "local" and cfg.model.kind is ModelKind.llm:
        raise ConfigError(
            "eval.encode",
            f"local encodes embedders and rerankers in the eval job; model {cfg.model.name} is an LLM,"
            " whose eval generates through the served model: use eval.encode=endpoint",
        )


def validate_run(cfg: HpcftConfig) -> None:
    check_name("name", cfg.name)
    check_range("seed", cfg.seed, 0, MAX_SEED, high_open=False)
    check_safe_text("run_root", cfg.run_root)
    if "%" in cfg.run_root:
        raise ConfigError("run_root", "'%' is a Slurm file-name pattern and cannot be in the run folder")
    root = Path(cfg.run_root).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise ConfigError("run_root", f"{cfg.run_root} exists and is not a folder")
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError("run_root", f"{cfg.run_root} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("run_root", f"{cfg.run_root} cannot be created: {existing} is not writable")
    if cfg.wandb.mode is not None:
        check_choice("wandb.mode", cfg.wandb.mode, ("online", "offline"))
    for name in ("project", "entity", "group"):
        check_safe_text(f"wandb.{name}", getattr(cfg.wandb, name))
    check_positive("sweep.poll_s", cfg.sweep.poll_s)
    if cfg.deepspeed.zero_stage is not None:
        check_range("deepspeed.zero_stage", cfg.deepspeed.zero_stage, 0, 3, high_open=False)


def hub_cache() -> Path:
    """Where Hugging Face keeps downloaded models (its own resolution order)."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache)
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def model_in_reach(path: str) -> bool:
    """A local model folder, or a hub id already in the Hugging Face cache."""
    local = Path(path).expanduser()
    if local.is_dir():
        return True
    folder = hub_cache() / f"models--{path.replace('/', '--')}" / "snapshots"
    return any(folder.glob("*/config.json"))


def validate_model_reachable(cfg: HpcftConfig) -> None:
    """Offline compute nodes (or this machine) cannot download weights: fail in a second on
    the login node, not after a minute of hub retries inside the train job. A dry run checks
    it too: it must refuse what the submission would."""
    path = cfg.model.path
    local = Path(path).expanduser()
    if local.is_dir() and not (local / "config.json").is_file():
        raise ConfigError(
            "model.path",
            f"{path} is a folder without config.json, not a model's weights folder: every framework would fail"
            " to load it; point model.path at the folder holding config.json and the weights",
        )
    if cfg.cluster.internet or model_in_reach(path):
        return
    raise ConfigError(
        "model.path",
        f"{path} is neither a local folder nor in the Hugging Face cache ({hub_cache()}), and compute nodes"
        f" are offline (cluster.internet=false): download it first (huggingface-cli download {path})"
        " or set model.path=<folder with the weights>",
    )


def text_values(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every text value of a typed config with its dotted key (`cluster.env.X`, `cluster.srun_args[0]`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from text_values(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from text_values(item, f"{key}.{name}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from text_values(item, f"{key}[{i}]")
    elif isinstance(value, str):
        yield key, value


def validate_secrets(cfg: HpcftConfig) -> None:
    """No value holds a secret (`hpcft.config.secrets`). Every value is looked at, not only
    those that reach a script, a job name, an sbatch option or a folder name: the whole config
    is written to the run's `config.yaml`, and framework arguments to its native files."""
    known = known_secrets()
    for f in dataclasses.fields(cfg):
        _check_part(f.name, getattr(cfg, f.name), known)


def known_secrets() -> dict[str, str]:
    """`environment_secrets()`, worked out once a command for the same environment (each
    variable's name is parsed: ~0.1 ms, every point of a sweep)."""
    environ = tuple(os.environ.items())
    return once(("environment secrets", environ), lambda: environment_secrets(dict(environ)))


def _check_part(name: str, value: Any, known: dict[str, str]) -> None:
    """One top-level part's text values. A part this command has checked already (the same
    object: a sweep's points share all but the parts their values change) is not walked again."""

    def check() -> Any:
        for key, text in text_values(value, name):
            check_secret(key, text, known)
        return value

    if once(("secrets checked", name, id(value), frozenset(known.items())), check) is not value:
        check()  # another object now has that id


def validate_common(cfg: HpcftConfig) -> None:
    """Raise a ConfigError for the first problem found in the framework-independent part of
    the config (`hpcft.configure.validate_config` adds the framework's checks). Secrets
    first: other checks may quote a bad value in their message."""
    validate_secrets(cfg)
    validate_cluster(cfg.cluster)
    validate_site(cfg.cluster)
    validate_stages(cfg)
    validate_model(cfg)
    validate_deploy_eval(cfg)
    validate_suites(cfg)
    validate_checkpoints(cfg)
    validate_encode(cfg)
    validate_placement(cfg)
    validate_run(cfg)
