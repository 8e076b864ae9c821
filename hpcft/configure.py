"""The entry point's one step from overrides to a typed, checked config.

`hpcft.config` composes and types the config and checks what is framework-independent;
`hpcft.frameworks` knows the frameworks. This module joins the two (config imports no
framework), and is what the command line, the Python API and the Hydra launcher plugin call:
a DictConfig becomes typed objects here, once.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

import hpcft.frameworks  # noqa: F401  (registers every framework's schema with composition)
from hpcft.config.compose import available_options, compose_config, hydra_error, to_typed
from hpcft.config.schema import HpcftConfig
from hpcft.config.validate import validate_common, validate_model_reachable
from hpcft.frameworks import adapter_for, resolved

__all__ = ["available_options", "compose_config", "hydra_error", "load_config", "typed_config", "validate_config"]


def typed_config(cfg: DictConfig) -> HpcftConfig:
    """The composed config as dataclasses, after the framework read what it reads once
    (LLaMA-Factory: a native YAML's settings into the typed fields)."""
    return resolved(to_typed(cfg))


def load_config(overrides: Sequence[str], config_dirs: Sequence[str] = ()) -> HpcftConfig:
    """Compose and type the config; the single entry from CLI and API alike."""
    return typed_config(compose_config(overrides, config_dirs))


def validate_config(cfg: HpcftConfig) -> None:
    """Raise a ConfigError for the first problem found, before anything is submitted: the
    common checks, the tracker's credentials, the framework's own (data files included),
    and last whether the weights are in reach (every other mistake is named first)."""
    from hpcft.tracking import check_credentials

    validate_common(cfg)
    check_credentials(cfg)
    adapter_for(cfg).validate()
    validate_model_reachable(cfg)
