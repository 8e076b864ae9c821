"""Seed-style parameters (`finetune.llamafactory`, `launchers.slurm(ngpus=8)`) as Hydra overrides.

Nothing here submits or validates values: it maps names onto hpcft's config keys and refuses
names it does not know, listing the valid ones. The values are then composed and validated
by the same code as the command line's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from hpcft.config.overrides import hydra_value
from hpcft.config.run_schema import DeployConfig
from hpcft.config.schema import ClusterConfig
from hpcft.errors import UserError, unknown_name
from hpcft.frameworks import framework_modules
from hpcft.frameworks.base import native_argument_names


def override(key: str, value: Any) -> str:
    """`key=value` for Hydra; keys under a free-form mapping (`framework.args`) are added (`+`)."""
    return f"{'+' if key.startswith('framework.args.') else ''}{key}={hydra_value(value)}"


@dataclass(frozen=True)
class Framework:
    """A fine-tuning framework as the API names it (`finetune.llamafactory`)."""

    name: str

    def first_class(self) -> list[str]:
        """The framework's own config fields (`framework.<name>`), `args` and `name` aside."""
        schema = framework_modules()[self.name].Config
        return sorted(f.name for f in fields(schema) if f.name not in ("name", "args"))

    def settings(self, params: dict[str, Any]) -> dict[str, Any]:
        """`framework.<key>` for hpcft's fields, `framework.args.<key>` for the framework's own
        arguments; anything else is refused with the valid names."""
        first_class, native = self.first_class(), native_argument_names(self.name)
        out = {}
        for key, value in params.items():
            if key in first_class:
                out[f"framework.{key}"] = value
            elif key in native:
                out[f"framework.args.{key}"] = value
            else:
                hint = unknown_name(f"{self.name} parameter", key, [*first_class, "launcher"])
                if "did you mean" not in hint:
                    listed = f"hpcft/frameworks/{self.name}_args*"
                    hint += f"; or any of {self.name}'s own {len(native)} arguments ({listed})"
                raise UserError(hint)
        return out


class finetune:
    """The frameworks `TrainableModel.finetune_method` takes."""

    llamafactory = Framework("llamafactory")
    flagembedding = Framework("flagembedding")


_CLUSTER_KEYS = sorted(f.name for f in fields(ClusterConfig) if f.name not in ("name", "executor"))
LAUNCHER_KEYS = ["cluster", "nnode", "nproc", "ngpus", "sync", *_CLUSTER_KEYS]


@dataclass(frozen=True)
class Launcher:
    """Where the jobs run: a cluster config (`cluster/<name>.yaml`) and what to change in it."""

    cluster: str
    settings: dict[str, Any] = field(default_factory=dict)
    sync: bool = False
    """Whether `update()` waits for the pipeline to end (the seed's `sync`); default: no."""

    def cluster_settings(self) -> dict[str, Any]:
        """`cluster.<field>` values, with the seed's `nnode`, `ngpus`, `nproc` mapped."""
        settings = dict(self.settings)
        nnode, nproc, ngpus = (settings.pop(k, None) for k in ("nnode", "nproc", "ngpus"))
        out = {f"cluster.{key}": value for key, value in settings.items()}
        if nnode is not None:
            out["cluster.nodes"] = nnode
        if ngpus is not None:
            out["cluster.gpus_per_node"] = ngpus
        if nproc is not None:
            out.update(_processes(nproc, ngpus))
        return out


def _processes(nproc: Any, ngpus: Any) -> dict[str, Any]:
    """`nproc`: processes per node. With GPUs torchrun starts one per GPU, so it must be 1
    (the seed's default: one launcher per node) or equal `ngpus`; without, it sets
    `cluster.procs_per_node` (CPU processes over gloo)."""
    if ngpus:
        if nproc not in (1, ngpus):
            raise UserError(
                f"launcher nproc={nproc} with ngpus={ngpus}: hpcft runs one process per GPU; "
                "use nproc=1 (or nproc=ngpus)"
            )
        return {}
    return {"cluster.procs_per_node": nproc}


def _check_keys(kind: str, given: dict[str, Any], valid: list[str]) -> None:
    for key in given:
        if key not in valid:
            raise UserError(unknown_name(f"{kind} parameter", key, valid))


def slurm_launcher(cluster: str | None = None, *, sync: bool = False, **settings: Any) -> Launcher:
    """Jobs on a Slurm cluster: `cluster` names its config (default: $HPCFT_CLUSTER); `nnode`,
    `ngpus` (per node), `nproc` (per node) and any `cluster.*` field (partition, time, ...)."""
    _check_keys("launcher", settings, LAUNCHER_KEYS)
    name = cluster or os.environ.get("HPCFT_CLUSTER")
    if not name:
        raise UserError("launchers.slurm(cluster=...): name your cluster config (or set HPCFT_CLUSTER)")
    return Launcher(name, settings, sync)


def local_launcher(**settings: Any) -> Launcher:
    """The stages run one after another on this machine (no Slurm); `update()` returns when done."""
    _check_keys("launcher", settings, LAUNCHER_KEYS)
    return Launcher("local", settings, sync=True)


class launchers:
    """Launchers `finetune_method` takes as its `launcher` parameter."""

    slurm = staticmethod(slurm_launcher)
    remote = staticmethod(slurm_launcher)
    sco = staticmethod(slurm_launcher)
    local = staticmethod(local_launcher)
    empty = staticmethod(local_launcher)


DEPLOY_KEYS = sorted(f.name for f in fields(DeployConfig))
