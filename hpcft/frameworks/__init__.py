"""Framework adapters, one module each: `Config` (its schema) and `Adapter` (files, commands).

Modules are found by name and registered with composition (`hpcft.config.registry`) when
this package is imported, so adding a framework touches one module here, its argument list
and one YAML in `conf/framework/` (docs/frameworks.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType

from hpcft.config.registry import RegisteredFramework, default_framework, register_framework
from hpcft.config.schema import HpcftConfig
from hpcft.deepspeed import with_user_deepspeed
from hpcft.frameworks.base import FrameworkAdapter

__all__ = ["adapter_for", "default_framework", "framework_modules", "resolved"]


@cache
def framework_modules() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "Adapter") and hasattr(module, "Config"):
            found[module.Adapter.name] = module
            register_framework(
                RegisteredFramework(
                    name=module.Adapter.name, schema=module.Config, kinds=frozenset(module.Adapter.kinds)
                )
            )
    return found


def adapter_for(cfg: HpcftConfig) -> FrameworkAdapter:
    adapter: FrameworkAdapter = framework_modules()[cfg.framework.name].Adapter(cfg)
    return adapter


def resolved(cfg: HpcftConfig) -> HpcftConfig:
    """The typed config after what is read once: a user's DeepSpeed JSON (every framework),
    then what the framework reads (LLaMA-Factory: a native YAML's settings into the typed fields)."""
    cfg = with_user_deepspeed(cfg)
    module = framework_modules()[cfg.framework.name]
    resolve = getattr(module, "resolve", None)
    return resolve(cfg) if resolve else cfg


framework_modules()  # registered on import: composition needs every schema
