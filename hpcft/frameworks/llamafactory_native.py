"""A user's own LLaMA-Factory YAML (`framework.native_config=`), read into the typed settings.

What the YAML says about the method (`stage`, `finetuning_type`, `quantization_bit`,
`lora_rank`, `cutoff_len`, the batch and precision settings, ...) lands in the same typed
fields `framework.<key>=` sets, once, when the config becomes typed; so the data checks, the
memory estimate, the export/deploy plan and the printed notes all describe what will run.
Its `deepspeed:` file becomes the run's DeepSpeed config, used as given. Precedence: the
YAML over hpcft's defaults, `framework.args` over the YAML; a typed field set on the command
line (not left at its default) that disagrees with the YAML is refused, naming both.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from hpcft.config.schema import DeepSpeedConfig, HpcftConfig
from hpcft.errors import ConfigError
from hpcft.frameworks.base import native_argument_names, read_native_yaml
from hpcft.frameworks.llamafactory_config import lf_settings

OFFLOADS = ("offload_optimizer", "offload_param")
NOT_FROM_YAML = frozenset({"name", "args", "native_config", "dataset", "dataset_format", "global_batch_size"})
"""Typed fields a YAML does not set: hpcft's own, and the data (hpcft writes the registry)."""


@lru_cache(maxsize=64)
def _read(path: str, mtime_ns: int) -> dict[str, Any]:
    return read_native_yaml(path, native_argument_names("llamafactory"))


def native_yaml_values(path: str) -> dict[str, Any]:
    """The YAML's values (read once per file state; errors name `file:line`)."""
    try:
        mtime = Path(path).expanduser().stat().st_mtime_ns
    except OSError:
        mtime = 0  # read_native_yaml reports the missing file
    return dict(_read(path, mtime))


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
    return deepspeed_config_file(str(found.absolute()), "framework.native_config")


def deepspeed_config_file(path: str, key: str) -> DeepSpeedConfig:
    """A DeepSpeed JSON of the user's, read for its ZeRO settings (the file is used as is)."""
    try:
        data = json.loads(Path(path).expanduser().read_text())
        zero = data.get("zero_optimization", {})
        stage = int(zero.get("stage", 0))
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise ConfigError(key, f"{path}: not a DeepSpeed JSON config ({e})") from None
    offloaded = {
        k: (zero.get(k) or {}).get("device", "none") not in ("none", None)
        for k in ("offload_optimizer", "offload_param")
    }
    return DeepSpeedConfig(name="custom", zero_stage=stage, config=str(Path(path).expanduser().absolute()), **offloaded)


def read_native_config(cfg: HpcftConfig) -> HpcftConfig:
    """The config with its native YAML (and a `deepspeed.config` file) read into typed settings."""
    fw, ds = lf_settings(cfg), cfg.deepspeed
    if ds.config and ds.zero_stage is None:
        ds = deepspeed_config_file(ds.config, "deepspeed.config")
    if not fw.native_config:
        return dataclasses.replace(cfg, deepspeed=ds) if ds is not cfg.deepspeed else cfg
    values = native_yaml_values(fw.native_config)
    if values.get("deepspeed"):
        if cfg.deepspeed.zero_stage is not None or cfg.deepspeed.config:
            raise ConfigError(
                "deepspeed",
                f"{fw.native_config} sets deepspeed: {values['deepspeed']}, and deepspeed={cfg.deepspeed.name} is"
                " chosen too; keep one",
            )
        ds = deepspeed_from(str(values["deepspeed"]), fw.native_config)
    return dataclasses.replace(cfg, framework=typed_settings(fw, values), deepspeed=ds)


VLM_KEYS = frozenset(
    {"image_max_pixels", "image_min_pixels", "video_max_pixels", "video_min_pixels", "video_fps", "video_maxlen",
     "freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model"}
)  # fmt: skip
"""LLaMA-Factory arguments that only mean something for vision-language models."""


def check_recipe(given: dict[str, Any], native_config: str | None, model: str) -> None:
    """What a native YAML or `args` ask for that this run cannot be: a vision-language recipe
    on hpcft's text-only path, or a tokenize-only run."""
    key = "framework.native_config" if native_config else "framework.args"
    where = native_config or "framework.args"
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
