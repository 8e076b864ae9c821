"""Framework adapters, one module each: `Config` (its schema) and `Adapter` (files, commands).

Modules are found by name, so adding a framework touches one module here and one YAML in
`conf/framework/`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType

from hpcft.config.schema import HpcftConfig, ModelKind
from hpcft.frameworks.base import FrameworkAdapter


@cache
def framework_modules() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "Adapter") and hasattr(module, "Config"):
            found[module.Adapter.name] = module
    return found


def default_framework(kind: ModelKind) -> str:
    """The framework a model of this kind uses when none is chosen."""
    return next(name for name, m in sorted(framework_modules().items()) if kind in m.Adapter.kinds)


def adapter_for(cfg: HpcftConfig) -> FrameworkAdapter:
    adapter: FrameworkAdapter = framework_modules()[cfg.framework.name].Adapter(cfg)
    return adapter


def resolved(cfg: HpcftConfig) -> HpcftConfig:
    """The typed config after the framework read what it reads once (LLaMA-Factory: a native
    YAML's settings into the typed fields)."""
    module = framework_modules()[cfg.framework.name]
    resolve = getattr(module, "resolve", None)
    return resolve(cfg) if resolve else cfg
