"""The entry point's one step from overrides to a typed, checked config.

`hpcft.config` composes and types the config and checks what is framework-independent;
`hpcft.frameworks` knows the frameworks. This module joins the two (config imports no
framework), and is what the command line, the Python API and the Hydra launcher plugin call:
a DictConfig becomes typed objects here, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

import hpcft.frameworks  # noqa: F401  (registers every framework's schema with composition)
from hpcft.config.compose import available_options, compose_config, hydra_error, to_typed
from hpcft.config.schema import HpcftConfig, StageName
from hpcft.config.validate import validate_common, validate_model_reachable
from hpcft.frameworks import adapter_for, resolved
from hpcft.frameworks.base import FrameworkAdapter
from hpcft.target import Target

__all__ = [
    "CheckedRun",
    "available_options",
    "check",
    "compose_config",
    "hydra_error",
    "load_config",
    "typed_config",
    "validate_config",
]


def typed_config(cfg: DictConfig) -> HpcftConfig:
    """The composed config as dataclasses, after the framework read what it reads once
    (LLaMA-Factory: a native YAML's settings into the typed fields)."""
    return resolved(to_typed(cfg))


def load_config(overrides: Sequence[str], config_dirs: Sequence[str] = ()) -> HpcftConfig:
    """Compose and type the config; the single entry from CLI and API alike."""
    return typed_config(compose_config(overrides, config_dirs))


@dataclass(frozen=True, kw_only=True)
class CheckedRun:
    """A run that passed every check before submit: the one record planning consumes
    (`hpcft.plan.build_pipeline`), for a single run, each sweep point and the Python API
    alike. Only `check` makes one, so a plan cannot be made of an unchecked config."""

    cfg: HpcftConfig
    """The typed config, as the framework read it once (`typed_config`)."""
    adapter: FrameworkAdapter
    """The framework's adapter that ran the checks. Planning asks the same object: what the
    checks read (data files, the native YAML, the interpreter's modules) is read once in the
    command (`hpcft.once`), and the notes, native files and memory estimate come from it."""
    targets: Mapping[StageName, Target]
    """Where each configured stage's job runs (device, processes, interpreter)."""


def check(cfg: HpcftConfig) -> CheckedRun:
    """Raise a ConfigError for the first problem found, before anything is submitted: the
    common checks, the tracker's credentials, the framework's own (data files included),
    and last whether the weights are in reach (every other mistake is named first). A dry
    run and a submission both come through here: they refuse the same inputs."""
    from hpcft.tracking import check_credentials

    validate_common(cfg)
    check_credentials(cfg)
    adapter = adapter_for(cfg)
    adapter.validate()
    validate_model_reachable(cfg)
    return CheckedRun(cfg=cfg, adapter=adapter, targets=adapter.targets)


validate_config = check
"""The name the launcher plugin and older callers use; `check` returns the CheckedRun."""
