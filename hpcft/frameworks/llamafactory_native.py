"""A user's own LLaMA-Factory YAML (`framework.native_config=`), read into the typed settings.

What the YAML says about the method (`stage`, `finetuning_type`, `quantization_bit`,
`lora_rank`, `cutoff_len`, the batch and precision settings, ...) lands in the same typed
fields `framework.<key>=` sets, once, when the config becomes typed; so the data checks, the
memory estimate, the export/deploy plan and the printed notes all describe what will run.
Its `deepspeed:` file becomes the run's DeepSpeed config, used as given. Precedence: the
YAML over hpcft's defaults, `framework.args` over the YAML; a typed field set on the command
line (not left at its default) that disagrees with the YAML is refused, naming both, except
the precision (`framework.bf16`), which the command line decides.
"""

from __future__ import annotations

import dataclasses
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from hpcft import jobenv
from hpcft.config.compose import is_demo_data
from hpcft.config.schema import DeepSpeedConfig, HpcftConfig
from hpcft.deepspeed import user_deepspeed_config
from hpcft.errors import ConfigError, unknown_name
from hpcft.frameworks.base import native_argument_names, read_native_yaml
from hpcft.frameworks.llamafactory_config import lf_settings
from hpcft.once import file_state, once
from hpcft.target import DeviceKind, Target

OFFLOADS = ("offload_optimizer", "offload_param")
COMMAND_LINE_WINS = frozenset({"bf16"})
"""Typed fields the command line may set against the YAML: the precision, because a YAML's
`bf16: true` cannot run on a CPU cluster and the user's file should not need editing."""
NOT_FROM_YAML = frozenset({"name", "args", "native_config", "dataset", "dataset_format", "global_batch_size"})
"""Typed fields a YAML does not set: hpcft's own, and the data (hpcft writes the registry)."""


def native_yaml_values(path: str) -> dict[str, Any]:
    """The YAML's values (read once per file state in a command; errors name `file:line`)."""

    def read() -> dict[str, Any]:
        return read_native_yaml(path, native_argument_names("llamafactory"))

    state = file_state(path)  # None: read_native_yaml reports the missing file
    return dict(read() if state is None else once(("llamafactory yaml", state), read))


def _defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def typed_settings(fw: Any, values: dict[str, Any]) -> Any:
    """The framework config with the YAML's values in its typed fields."""
    defaults, updates = _defaults(type(fw)), {}
    for field in dataclasses.fields(fw):
        key = field.name
        if key in NOT_FROM_YAML or key not in values:
            continue
        mine, theirs = getattr(fw, key), values[key]
        if key in COMMAND_LINE_WINS and mine != defaults.get(key):
            continue  # e.g. framework.bf16=false where the YAML's bf16 cannot run (a CPU cluster)
        if mine != defaults.get(key) and mine != theirs:
            raise ConfigError(
                f"framework.{key}",
                f"is {mine!r} here, but {fw.native_config} sets {key}: {theirs!r}; set it in one place",
            )
        updates[key] = theirs
    return dataclasses.replace(fw, **updates)


def deepspeed_from(path: str, yaml_path: str) -> DeepSpeedConfig:
    """The YAML's `deepspeed:` JSON (relative to the YAML's folder, else to here), as the run's
    DeepSpeed config; its ZeRO stage and offloads drive the memory estimate."""
    candidates = [Path(yaml_path).expanduser().parent / path, Path(path).expanduser()]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ConfigError(
            "framework.native_config",
            f"{yaml_path} sets deepspeed: {path}, which exists neither beside it nor here;"
            " give its path, or drop it and choose a preset (deepspeed=zero2|zero3|zero3_offload)",
        )
    return user_deepspeed_config(str(found.absolute()), "framework.native_config")


def read_native_config(cfg: HpcftConfig) -> HpcftConfig:
    """The config with its native YAML read into typed settings (a `deepspeed.config` file
    was read for every framework before: `hpcft.frameworks.resolved`)."""
    fw, ds = lf_settings(cfg), cfg.deepspeed
    if not fw.native_config:
        return cfg
    values = native_yaml_values(fw.native_config)
    if values.get("deepspeed"):
        if cfg.deepspeed.zero_stage is not None or cfg.deepspeed.config:
            raise ConfigError(
                "deepspeed",
                f"{fw.native_config} sets deepspeed: {values['deepspeed']}, and deepspeed={cfg.deepspeed.name} is"
                " chosen too; keep one",
            )
        ds = deepspeed_from(str(values["deepspeed"]), fw.native_config)
    typed = dataclasses.replace(typed_settings(fw, values), dataset=yaml_datasets(cfg, values))
    return dataclasses.replace(cfg, framework=typed, deepspeed=ds)


def yaml_datasets(cfg: HpcftConfig, values: dict[str, Any]) -> list[str]:
    """The datasets to train on: `framework.dataset`, else the YAML's `dataset:` names when
    `trainset` is their dataset_dir (a registry), as LLaMA-Factory would resolve them. A YAML
    that names datasets with no `trainset` given is refused: it would train on hpcft's demo rows."""
    fw, named = lf_settings(cfg), values.get("dataset")
    if fw.dataset or not named:
        return fw.dataset
    names = [n.strip() for n in (named.split(",") if isinstance(named, str) else map(str, named)) if n.strip()]
    trainset = Path(cfg.trainset).expanduser()
    if trainset.is_dir() or trainset.name == "dataset_info.json":
        return names
    if is_demo_data(cfg.trainset):
        raise ConfigError(
            "trainset",
            f"{fw.native_config} trains on dataset {','.join(names)}, registered in a dataset_info.json, and no"
            " trainset is given: set trainset=<that dataset_dir> (LLaMA-Factory's data/), or trainset=<your file>",
        )
    return fw.dataset  # a data file given as trainset replaces the YAML's datasets (the notes say so)


VLM_KEYS = frozenset(
    {"image_max_pixels", "image_min_pixels", "video_max_pixels", "video_min_pixels", "video_fps", "video_maxlen",
     "freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model"}
)  # fmt: skip
"""LLaMA-Factory arguments that only mean something for vision-language models."""


def check_is_training(native_config: str) -> None:
    """A native YAML that is not for training (`do_train: false`, or no `do_train: true` beside
    `export_dir`, `do_predict` or `infer_backend`): a merge, inference or predict-only recipe,
    refused with what to use instead."""
    raw = native_yaml_values(native_config)
    if raw.get("do_train") or not ({"export_dir", "do_predict", "infer_backend"} & raw.keys() or "do_train" in raw):
        return  # a training recipe, or settings hpcft completes into one (it sets do_train itself)
    if raw.get("export_dir"):
        what = "a merge/export recipe (llamafactory-cli export): hpcft merges and serves the trained model itself"
    elif raw.get("do_predict"):
        what = (
            "a predict-only recipe: hpcft trains, then scores through the served model; give its eval data as"
            " evalset=<file> with a training recipe, or run it with llamafactory-cli train"
        )
    else:
        what = "an inference recipe (llamafactory-cli chat/api): hpcft serves a trained model in its deploy stage"
    raise ConfigError("framework.native_config", f"{native_config} does not train (no do_train: true); it is {what}")


def check_recipe(given: dict[str, Any], native_config: str | None, model: str) -> None:
    """What a native YAML or `args` ask for that this run cannot be: a vision-language recipe
    on hpcft's text-only path, or a tokenize-only run."""
    key = "framework.native_config" if native_config else "framework.args"
    where = native_config or "framework.args"
    if native_config:
        check_is_training(native_config)
    if vlm := sorted(VLM_KEYS & given.keys()):
        raise ConfigError(
            key,
            f"{where} is a vision-language recipe ({', '.join(vlm)}), and hpcft fine-tunes text models ({model}):"
            " drop those keys, or run it with llamafactory-cli",
        )
    tokenized = given.get("tokenized_path")
    if tokenized and not Path(str(tokenized)).expanduser().exists():
        raise ConfigError(
            key,
            f"{where} sets tokenized_path: {tokenized}, which does not exist: LLaMA-Factory would only tokenize the"
            " data into it and exit without training; tokenize first with llamafactory-cli, or drop tokenized_path",
        )


NEEDS_PACKAGE = {
    "use_badam": ("badam", "badam"),
    "use_galore": ("galore_torch", "galore-torch"),
    "use_apollo": ("apollo_torch", "apollo-torch"),
    "use_adam_mini": ("adam_mini", "adam-mini"),
    "mixture_of_depths": ("MoD", "mixture-of-depth"),
    "use_unsloth": ("unsloth", "unsloth"),
    "enable_liger_kernel": ("liger_kernel", "liger-kernel"),
}
"""Recipe keys -> (module, pip name) LLaMA-Factory imports for them at start (its parser's
`check_version(..., mandatory=True)`), missing from its own requirements."""

GPU_ONLY = {
    "fp8": "FP8 training needs GPUs with FP8 support",
    "use_unsloth": "Unsloth's kernels need GPUs",
    "enable_liger_kernel": "Liger's Triton kernels need GPUs",
}
"""Recipe keys that cannot run on a CPU cluster, and why."""


def template_names() -> frozenset[str]:
    """LLaMA-Factory's chat templates, from the list made in the training environment
    (scripts/gen_native_args.py; a test fails when it no longer matches the installed version).
    Read once a command: every point of a sweep asks."""

    def read() -> frozenset[str]:
        text = resources.files("hpcft.frameworks").joinpath("llamafactory_templates.txt").read_text()
        return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))

    return once(("llamafactory chat templates",), read)


def check_job_fit(given: dict[str, Any], native_config: str | None, cfg: HpcftConfig, target: Target) -> None:
    """What a recipe needs where the job runs: a GPU for GPU-only features and bitsandbytes'
    optimizers, and the packages LLaMA-Factory imports for optional methods in the train
    stage's interpreter (hpcft.jobenv): checked against the train job's `target`. Refused
    before submit, naming the key and the fix."""
    templates = template_names()
    if cfg.model.template and cfg.model.template not in templates:  # LLaMA-Factory checks it only at start
        raise ConfigError("model.template", unknown_name("LLaMA-Factory chat template", cfg.model.template, templates))
    key = "framework.native_config" if native_config else "framework.args"
    where = native_config or "framework.args"
    on_cpu = target.device.kind is DeviceKind.cpu
    optim = str(given.get("optim") or "")
    if on_cpu and ("8bit" in optim or optim.startswith("paged_")):
        raise ConfigError(key, f"{where} sets optim: {optim}, a bitsandbytes optimizer that needs GPUs; this"
                          " cluster has none: drop it (AdamW) or train on a GPU cluster")  # fmt: skip
    for name, why in GPU_ONLY.items():
        if on_cpu and given.get(name):
            raise ConfigError(key, f"{where} sets {name}: {why}, and this cluster has none; drop {name}")
    wanted = {name: NEEDS_PACKAGE[name] for name in NEEDS_PACKAGE if given.get(name)}
    python = target.python
    missing = jobenv.missing_modules(python, [module for module, _ in wanted.values()]) or []
    for name, (module, package) in wanted.items():
        if module in missing:
            interpreter = " ".join(python) or sys.executable
            raise ConfigError(key, f"{where} sets {name}, which needs the package {package} in the train job's"
                              f" environment ({interpreter}); it is not installed there: pip install {package}"
                              f" there, or drop {name}")  # fmt: skip
