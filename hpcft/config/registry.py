"""The frameworks composition knows: each one's schema and the model kinds it trains.

`hpcft.frameworks` registers its adapters here when it is imported (as Hydra's ConfigStore
is filled by whoever has schemas), so `hpcft.config` needs no import of any framework and
adding one touches only `hpcft/frameworks/`. `hpcft.configure`, the entry point, imports
both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hpcft.config.schema import FrameworkConfig, ModelKind


@dataclass(frozen=True, kw_only=True)
class RegisteredFramework:
    name: str
    """The option of the `framework` group (`framework=<name>`)."""
    schema: type[FrameworkConfig]
    """The framework's config schema: `FrameworkConfig` plus its own fields."""
    kinds: frozenset[ModelKind]
    """The model kinds it fine-tunes."""


_REGISTERED: dict[str, RegisteredFramework] = {}


def register_framework(entry: RegisteredFramework) -> None:
    _REGISTERED[entry.name] = entry


def registered_frameworks() -> Mapping[str, RegisteredFramework]:
    if not _REGISTERED:
        raise RuntimeError("no framework is registered: import hpcft.configure (or hpcft.frameworks) first")
    return _REGISTERED


def default_framework(kind: ModelKind) -> str:
    """The framework a model of this kind uses when none is chosen."""
    return next(name for name, f in sorted(registered_frameworks().items()) if kind in f.kinds)
