"""The launcher's side of each point: its composition, typed config, Hydra job fields, folder
and `.hydra/` records, as Hydra's basic launcher makes them, at a fraction of the cost.

Hydra's launcher composes every point from scratch (`load_sweep_config`, ~0.1 s). Here the
points that choose the same config groups share one composition (`hpcft.sweep.derive`), an
override is parsed once however many points carry it (a number, the usual swept value,
without the grammar), and the records re-dump only what a point changes. Each point is still
typed and checked on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra.core.config_loader import ConfigLoader
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.core.utils import filter_overrides
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hpcft.rundir import yaml_text
from hpcft.sweep.derive import VALUE_FIELDS, Derived, PointBase, node_at, overlaps
from hpcft.sweep.launch import PointConfig
from hpcft.sweep.parse import LineParser
from hpcft.sweep.yamlchunks import TypedYaml

OnStart = Callable[[DictConfig], None]
"""Called with a point's whole config (callbacks' `on_job_start`)."""


def scalar_change(override: Override) -> bool:
    """A value override that can be set in place on a composition (`key=<scalar>`)."""
    return (
        override.type is OverrideType.CHANGE
        and override.value_type is ValueType.ELEMENT
        and not isinstance(override.value(), list | dict)
    )


def composed_in(groups: tuple[str, ...], values: list[Override]) -> tuple[tuple[str, ...], list[Override]]:
    """The value overrides that cannot be set in place (a list, `+key=`, `~key`) go into the
    composition with the group choices, so that a sweep whose every point carries the same
    `stages=[train]` composes it once; where one of them touches a key a scalar override sets,
    all stay values (Hydra applies them in order, and the order would change)."""
    others = [o for o in values if not scalar_change(o)]
    scalars = [o for o in values if scalar_change(o)]
    keys = {o.key_or_group for o in scalars}
    if not others or overlaps(frozenset(o.key_or_group for o in others), keys):
        return groups, values
    return (*groups, *(str(o.input_line) for o in others)), scalars


def split_overrides(parsed: Sequence[Override]) -> tuple[tuple[str, ...], list[Override]]:
    """Overrides that choose config groups (composed) and those that only set values (applied)."""
    groups, values = [], []
    for override in parsed:
        key = override.key_or_group
        if override.package is None and not key.startswith("hydra") and ("." in key or key in VALUE_FIELDS):
            values.append(override)
        else:
            groups.append(str(override.input_line))
    return tuple(groups), values


class PointMaker:
    """Makes the launcher's points for one multirun."""

    def __init__(self, master: DictConfig, loader: ConfigLoader, implied_keys: Sequence[str]) -> None:
        self.master = master
        """The sweep's config, as Hydra's multirun composed it."""
        self.loader = loader
        self.implied = frozenset(implied_keys)
        """Keys hpcft added to the user's overrides, kept out of `override_dirname`."""
        self.parser = LineParser()
        """Each override line parsed once (the same lines recur in every point)."""
        self.bases: dict[tuple[str, ...], PointBase] = {}
        """One composition per choice of config groups."""
        self.typed_yaml = TypedYaml()
        """The points' `config.yaml`, dumped entry by entry."""
        self.dirname: dict[str, Any] | None = None
        """`hydra.job.config.override_dirname`'s settings, once read."""

    def base(self, groups: tuple[str, ...]) -> PointBase:
        if groups not in self.bases:
            self.bases[groups] = PointBase(self.loader.load_sweep_config(self.master, list(groups)))
        return self.bases[groups]

    def make(self, overrides: Sequence[str], num: int, on_start: OnStart | None = None) -> PointConfig:
        """The point: typed, its folder, its `.hydra/` records and its `config.yaml`."""
        parsed = self.parser.parse(overrides)
        groups, values = composed_in(*split_overrides(parsed))
        with self.base(groups).point(values) as derived:
            changes = self._job_fields(derived, parsed, num, on_start is not None)
            sweep_dir = Path(derived.folder("hydra.sweep.dir")).expanduser().absolute()
            run_dir = sweep_dir / derived.folder("hydra.sweep.subdir")
            changes[("hydra", "runtime", "output_dir")] = str(run_dir)
            self._output_dir(derived, str(run_dir))
            cfg = derived.typed()
            files = self._records(derived, changes)
            if on_start is not None:
                on_start(derived.config)
        return PointConfig(
            num=num,
            overrides=tuple(filter_overrides(overrides)),
            cfg=cfg,
            run_dir=run_dir,
            hydra_files=files,
            config_yaml=self.typed_yaml.text(cfg),
        )

    def _job_fields(self, derived: Derived, parsed: Sequence[Override], num: int, on_start: bool) -> dict[Any, Any]:
        """`hydra.job` and `hydra.overrides` set for the point, as Hydra's own launchers set
        them; the same values for `hydra.yaml`. The nodes take the values in place (assigning
        through the config costs several times more, on every point); the override list,
        the dearest, only where something reads it."""
        hydra = derived.hydra
        app = [o for o in parsed if not o.is_hydra_override()]
        task = [str(o.input_line) for o in app]
        dirname = get_overrides_dirname(
            overrides=[o for o in app if o.key_or_group not in self.implied], **self._dirname_settings(hydra)
        )
        job = {"num": num, "id": num, "override_dirname": dirname}  # id: Slurm's ids are in manifest.json
        for key, value in job.items():
            set_value(hydra, f"job.{key}", value)
        if on_start or derived.reads("hydra.overrides.task"):
            set_value(hydra, "overrides.task", task)
        return {
            ("hydra", "job", "num"): num,
            ("hydra", "job", "id"): str(num),
            ("hydra", "job", "override_dirname"): dirname,
            ("hydra", "overrides", "task"): task,
        }

    def _dirname_settings(self, hydra: DictConfig) -> dict[str, Any]:
        """`hydra.job.config.override_dirname`, read once: every point of a sweep has the same."""
        if self.dirname is None:
            d = hydra.job.config.override_dirname
            self.dirname = {"exclude_keys": list(d.exclude_keys), "item_sep": d.item_sep, "kv_sep": d.kv_sep}
        return self.dirname

    @staticmethod
    def _output_dir(derived: Derived, run_dir: str) -> None:
        """`hydra.runtime.output_dir`, as Hydra's `run_job` sets it; made current where the
        app's config reads Hydra's node (`${hydra:...}`)."""
        set_value(derived.hydra, "runtime.output_dir", run_dir)
        if derived.base.hydra_resolver:
            HydraConfig.instance().set_config(derived.config)

    @staticmethod
    def _records(derived: Derived, changes: dict[Any, Any]) -> dict[str, str]:
        """Hydra's `.hydra/` files of the point: run-dir path -> text."""
        sub = derived.hydra.output_subdir
        if sub is None:
            return {}
        return {
            f"{sub}/config.yaml": derived.app_yaml(),
            f"{sub}/hydra.yaml": derived.base.hydra_yaml.text(changes),
            f"{sub}/overrides.yaml": yaml_text(changes[("hydra", "overrides", "task")]),
        }


def set_value(node: DictConfig, key: str, value: Any) -> None:
    """A value into an existing node of Hydra's config (its own node's `_set_value`, as an
    assignment through the config would end in), that node made writable for the moment (a
    flag's change walks every node below: Hydra's whole node would cost more than the value);
    a key not there is added."""
    target = node_at(node, key)
    if target is not None:
        with read_write(target):
            target._set_value(value)
        return
    with read_write(node), open_dict(node):
        OmegaConf.update(node, key, value, merge=False, force_add=True)
