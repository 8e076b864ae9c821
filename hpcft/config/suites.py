"""Standard LLM suites (`eval.suites`) on the login node: the checks, and the job's record.

Compute nodes are offline, so a suite's data must be where lm-eval finds it without a
network: local files named by a task YAML in `eval.suite_tasks_dir` (`dataset_path: json`
with `dataset_kwargs.data_files`, relative to that folder), or the cluster's HF datasets
cache. What can be told from here is checked before anything is submitted: a local task's
files, and a hub dataset's presence in a datasets cache this node sees. lm-eval itself is
not imported (the login node stays light): task YAMLs are read as data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import yaml

from hpcft.config.checks import check_positive
from hpcft.config.schema import HpcftConfig, ModelKind
from hpcft.errors import ConfigError
from hpcft.jobs.spec import SuiteJob

KEY = "eval.suites"
FILE_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow"})
"""`dataset_path` values that are the datasets library's file loaders: data from `data_files`."""


class _TaskLoader(yaml.SafeLoader):
    """Task YAMLs carry lm-eval's `!function module.name` tags: read as plain text, never run."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def task_yaml(path: Path) -> dict[str, Any]:
    """A task YAML as data, its `include:` (a base YAML beside it) merged under it."""
    try:
        data = yaml.load(path.read_text(), Loader=_TaskLoader)  # a SafeLoader: data only
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(KEY, f"cannot read the task file {path}: {e}") from None
    if not isinstance(data, dict):
        return {}
    if isinstance(base := data.get("include"), str) and (path.parent / base).is_file():
        return {**task_yaml(path.parent / base), **data}
    return data


def task_names(data: dict[str, Any]) -> Iterator[str]:
    """The names a task YAML defines: its task, or its group of tasks."""
    if isinstance(data.get("task"), str):
        yield data["task"]
    elif isinstance(data.get("group"), str):
        yield data["group"]


def local_tasks(folder: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The tasks a folder of task YAMLs defines: name -> (file, its content)."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
        data = task_yaml(path)
        found.update((name, (path, data)) for name in task_names(data))
    return found


def data_files(value: Any) -> list[str]:
    """The file names in a `data_files` value: a string, a list, or a split -> either."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, dict):
        return [f for v in value.values() for f in data_files(v)]
    return []


def datasets_cache(cfg: HpcftConfig) -> Path:
    """The HF datasets cache the jobs read: the cluster's `HF_DATASETS_CACHE` / `HF_HOME`
    (`cluster.env`), else this node's."""
    env = {**os.environ, **cfg.cluster.env, **cfg.cluster.eval.env}
    if cache := env.get("HF_DATASETS_CACHE"):
        return Path(cache).expanduser()
    return Path(env.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser() / "datasets"


def in_cache(cache: Path, dataset: str) -> bool:
    """A hub dataset the datasets library has prepared (`org___name`) or downloaded."""
    prepared = cache / dataset.replace("/", "___")
    downloaded = cache.parent / "hub" / f"datasets--{dataset.replace('/', '--')}"
    return prepared.is_dir() or downloaded.is_dir() or (cache / dataset).is_dir()


def file_there(base: Path, name: str) -> bool:
    """A `data_files` entry (a path or a glob; relative: to `base`) names an existing file."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path.exists() or any(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
    return (base / path).exists() or any(base.glob(name))


def missing_data(cfg: HpcftConfig, name: str, path: Path, data: dict[str, Any], base: Path) -> str | None:
    """Why a task's data is out of the offline jobs' reach, or None when it is there (or
    this node cannot tell: the cluster's cache is not visible from here). Relative files are
    read from `base`, where lm-eval runs (`eval.suite_tasks_dir`)."""
    dataset = data.get("dataset_path")
    if not isinstance(dataset, str):
        return None  # a group: its tasks are checked where they are named
    if dataset in FILE_BUILDERS:
        kwargs = data.get("dataset_kwargs") or {}
        files = data_files(kwargs.get("data_files") if isinstance(kwargs, dict) else None)
        if not files:
            return f"task {name} ({path}) reads `dataset_path: {dataset}` but names no dataset_kwargs.data_files"
        gone = [f for f in files if not file_there(base, f)]
        return f"task {name} ({path}): data file {gone[0]} not found in {base}" if gone else None
    if (base / dataset).expanduser().exists():
        return None
    cache = datasets_cache(cfg)
    if cfg.cluster.internet or not cache.is_dir() or in_cache(cache, dataset):
        return None
    return f"task {name} needs the hub dataset {dataset}, which is not in the datasets cache {cache} (offline nodes)"


@cache
def builtin_tasks() -> dict[str, Path]:
    """lm-eval's own task YAMLs by file name, where lm-eval is installed here (found without
    importing it; one walk of its task folder); empty otherwise."""
    spec = find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return {}
    tasks = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    return {path.stem: path for path in sorted(tasks.rglob("*.yaml"), reverse=True)}


def builtin_task(name: str) -> Path | None:
    """lm-eval's own YAML of a built-in task named like its file; None otherwise."""
    return builtin_tasks().get(name)


def validate_suites(cfg: HpcftConfig) -> None:
    """The suites' settings, what serves them, and each task's data within offline reach."""
    e = cfg.eval
    if not e.suites:
        return
    check_positive("eval.suite_fewshot", e.suite_fewshot, allow_zero=True)
    check_positive("eval.suite_limit", e.suite_limit)
    if cfg.model.kind is not ModelKind.llm:
        raise ConfigError(KEY, f"standard LLM suites score LLMs; model {cfg.model.name} is a {cfg.model.kind.value}")
    if "eval" not in cfg.stages:
        raise ConfigError(KEY, "suites run in the eval stage: add it (stages=[train,deploy,eval]) or drop eval.suites")
    backend = cfg.deploy.backend or ("vllm" if cfg.cluster.gpus_per_node > 0 else "huggingface")
    if backend != "vllm":
        raise ConfigError(
            KEY,
            f"suites need vLLM's completions endpoint (log-likelihoods); deploy.backend={backend} serves chat only:"
            " set deploy.backend=vllm",
        )
    folder = Path(e.suite_tasks_dir).expanduser() if e.suite_tasks_dir else None
    if folder is not None and not folder.is_dir():
        raise ConfigError("eval.suite_tasks_dir", f"{e.suite_tasks_dir} is not a folder")
    local = local_tasks(folder) if folder else {}
    for name in e.suites:
        check_task(cfg, name, local, folder or Path.cwd())


def check_task(cfg: HpcftConfig, name: str, local: dict[str, tuple[Path, dict[str, Any]]], base: Path) -> None:
    if not name or "," in name or name != name.strip():
        raise ConfigError(KEY, f"{name!r} is not a task name (one name per list item)")
    if name in local:
        why = missing_data(cfg, name, *local[name], base)
    elif (builtin := builtin_task(name)) is not None:
        why = missing_data(cfg, name, builtin, task_yaml(builtin), base)
    else:
        why = None  # a built-in task named unlike its file, or lm-eval not on this node: the job tells
    if why:
        raise ConfigError(KEY, why)


def lora_served(cfg: HpcftConfig) -> bool:
    """vLLM serves an adapter beside its base (LLaMA-Factory's LoRA and QLoRA): its engine
    dies computing prompt log-probabilities for a batch (vllm-project/vllm#16668, 0.32 on
    CPU), so lm-eval sends one request at a time. Elsewhere it sends `eval.concurrency`, as
    the in-domain eval does: 16 held a 64-wide engine to 0.25 of its capacity
    (benchmarks/suites_speed.py)."""
    return getattr(cfg.framework, "finetuning_type", "full") not in ("full", "freeze")


def suite_job(cfg: HpcftConfig) -> SuiteJob | None:
    """The eval job's suites, or None without `eval.suites`."""
    e = cfg.eval
    if not e.suites:
        return None
    folder = str(Path(e.suite_tasks_dir).expanduser().absolute()) if e.suite_tasks_dir else None
    return SuiteJob(
        tasks=tuple(e.suites),
        tokenizer=cfg.model.path,
        num_fewshot=e.suite_fewshot,
        limit=e.suite_limit,
        include_path=folder,
        max_length=cfg.deploy.max_model_len,
        concurrency=1 if lora_served(cfg) else e.concurrency,
        retries=e.retries,
        request_timeout_s=e.request_timeout_s,
        offline=not cfg.cluster.internet,
    )
