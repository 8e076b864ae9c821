"""Each point of a sweep from one composition of its config groups.

Hydra composes a config in two steps: the defaults (config groups), then the overrides that
set values (`ConfigLoaderImpl._apply_overrides_to_config`, its last step). Points that choose
the same groups differ only in that last step, so their composition is made and typed once
(`PointBase`), and each point is derived from it: its value overrides are applied in place by
that same Hydra function (the same type checks, the same errors), the typed config takes the
changed values and the interpolations that read them, `config.yaml` re-dumps only the changed
entries, and the composition is put back as it was. An override that adds or deletes a key,
or sets a list or a mapping, is applied to a copy instead. tests/test_sweep_derive.py
compares derived points with Hydra's own composition of the same overrides.

Resolvers are taken to be functions of their arguments (`oc.env`, hpcft's, Hydra's cached
`now`): an interpolation is resolved again for a point only if it reads a changed key.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from functools import cached_property
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.errors import ConfigCompositionException
from omegaconf import AnyNode, Container, DictConfig, OmegaConf, ValueNode
from omegaconf.base import Node
from omegaconf.errors import OmegaConfBaseException

from hpcft.config.compose import to_typed
from hpcft.config.schema import HpcftConfig
from hpcft.configure import hydra_error
from hpcft.errors import ConfigError
from hpcft.frameworks import resolved
from hpcft.rundir import yaml_text
from hpcft.sweep.yamlchunks import ChunkedYaml

_TOKEN = re.compile(r"\$\{")
_FOLDER_REF = re.compile(r"\$\{\s*(hydra:)?\s*([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)\s*\}")
VALUE_FIELDS = frozenset({"trainset", "evalset", "stages", "name", "run_root", "dry_run", "seed"})
"""Top-level config fields that hold values, not config groups (`trainset=...`)."""
POINT_FIELDS = frozenset(
    {"hydra.job.num", "hydra.job.id", "hydra.job.override_dirname", "hydra.overrides.task", "hydra.runtime.output_dir"}
)
"""What the launcher sets in Hydra's node for each point."""
_RESOLVER = re.compile(r"\$\{\s*[A-Za-z_][\w.]*:")


class NotDerivable(Exception):
    """A value the typed config cannot take in place (a list index, an init-less field)."""


def node_at(cfg: Container, key: str) -> Node | None:
    """The node at a dotted key, without resolving it; None where there is none."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or node._is_missing() or node._is_none():
            return None
        try:
            node = node._get_node(part, validate_access=False)
        except OmegaConfBaseException:
            return None
        if node is None:
            return None
    assert isinstance(node, Node)
    return node


def leaf(override: Override, cfg: DictConfig) -> ValueNode | None:
    """The leaf a value override sets to a scalar, where it exists (then it is set in place:
    `OmegaConf.update`, which Hydra applies overrides with, sets such a node's value)."""
    if override.type is not OverrideType.CHANGE or override.value_type is not ValueType.ELEMENT:
        return None
    if override.package is not None or isinstance(override.value(), list | dict):
        return None
    node = node_at(cfg, override.key_or_group)
    if isinstance(node, ValueNode) and (node._has_ref_type() or isinstance(node, AnyNode)):
        return node
    return None


def set_leaf(node: ValueNode, override: Override, cfg: DictConfig) -> bool:
    """The override's value into its leaf (True); a value the leaf refuses goes through Hydra's
    own function, for Hydra's own words (False, where it took it after all)."""
    try:
        node._set_value(override.value())
    except OmegaConfBaseException:
        apply([override], cfg)
        return False
    return True


def put_back(cfg: DictConfig, key: str, old: Any, node: Node | None = None) -> None:
    """A leaf's value as it was: into `node`, the leaf a point's value went into in place,
    else into the node now at `key`."""
    node = node_at(cfg, key) if node is None else node
    try:
        assert isinstance(node, ValueNode)
        node._set_value(old)
    except (AssertionError, OmegaConfBaseException):
        OmegaConf.update(cfg, key, old, merge=False)


def apply(overrides: Sequence[Override], cfg: DictConfig) -> None:
    """Hydra's last step of a composition; its error as one line."""
    try:
        ConfigLoaderImpl._apply_overrides_to_config(list(overrides), cfg)
    except ConfigCompositionException as e:
        raise hydra_error(e) from None


def reads(text: str) -> frozenset[str] | None:
    """The keys an interpolation reads (`${hydra:x}` reads `hydra.x`); None where that is not
    certain (relative keys, a key made by another interpolation, escapes)."""
    if "\\${" in text:
        return None
    refs = _FOLDER_REF.findall(text)
    resolvers = len(_RESOLVER.findall(text)) - sum(1 for hydra, _ in refs if hydra)
    if len(refs) + resolvers != len(_TOKEN.findall(text)):
        return None
    return frozenset(f"hydra.{key}" if hydra else key for hydra, key in refs)


def overlaps(keys: frozenset[str], changed: set[str]) -> bool:
    return any(k == c or k.startswith(c + ".") or c.startswith(k + ".") for k in keys for c in changed)


def interpolations(node: Container, prefix: str = "") -> dict[str, str]:
    """Every interpolation below `node` (the app's config): dotted key -> its text."""
    found: dict[str, str] = {}
    if not isinstance(node, DictConfig) or node._is_missing() or node._is_none():
        return found
    for key in node:
        child = node._get_node(key)
        path = f"{prefix}{key!s}"
        if path == "hydra" or child is None:
            continue
        if child._is_interpolation():
            found[path] = str(child._value())
        elif isinstance(child, Container):
            found.update(interpolations(child, path + "."))
    return found


@contextmanager
def without_hydra(cfg: DictConfig) -> Iterator[DictConfig]:
    """The config without its `hydra` node for a moment (typing the app's part), no copy made."""
    content: dict[Any, Node] = cfg.__dict__["_content"]
    items = list(content.items())
    content.pop("hydra", None)
    try:
        yield cfg
    finally:
        content.clear()
        content.update(items)


def typed_now(cfg: DictConfig) -> HpcftConfig:
    """The app's part of a composition, typed (`hpcft.configure.typed_config` before `resolved`)."""
    with without_hydra(cfg):
        return to_typed(cfg)


def with_value(obj: Any, path: Sequence[str], value: Any) -> Any:
    """`obj` (dataclasses and dicts) with `value` at `path`; copies along the path only."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict) and head in obj:
        return {**obj, head: with_value(obj[head], rest, value)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and head in _init_fields(obj):
        return dataclasses.replace(obj, **{head: with_value(getattr(obj, head), rest, value)})
    raise NotDerivable(".".join(path))


def _init_fields(obj: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(obj) if f.init}


def selected(cfg: DictConfig, key: str) -> Any:
    """A key's value as `OmegaConf.to_object` gives it, its errors as `to_typed` words them:
    a leaf that holds a value (a point's own, set in place) is read off its node, as
    `OmegaConf.select` ends in; anything else is selected."""
    node = node_at(cfg, key)
    if isinstance(node, ValueNode) and not node._is_interpolation() and not node._is_missing():
        return node._value()
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise ConfigError(str(getattr(e, "full_key", None) or key), str(e).splitlines()[0]) from None
    if isinstance(value, Container):
        raise NotDerivable(key)
    return value


def raw_value(cfg: DictConfig, key: str) -> Any:
    """A leaf as written (an interpolation's text, `???`), to put it back after a point."""
    node = node_at(cfg, key)
    assert node is not None
    return node._value()


def written(cfg: DictConfig, key: str) -> Any:
    """A leaf as `OmegaConf.to_container(resolve=False, enum_to_str=True)` writes it."""
    value = raw_value(cfg, key)
    return value.name if isinstance(value, Enum) else value


class PointBase:
    """One composition of a sweep's config groups (Hydra's node included), typed and dumped
    once; the points that choose these groups are derived from it (`point`)."""

    def __init__(self, composed: DictConfig) -> None:
        self.config = composed
        """The composition; a point's values are in it only inside `point`."""
        texts = interpolations(composed)
        self.reads = {key: reads(text) for key, text in texts.items()}
        """The app's interpolations: key -> the keys it reads (None: not certain)."""
        self.leaf_keys: dict[str, frozenset[str] | None] = {}
        """`leaves`, once found."""
        self.folders: dict[str, str] = {}
        """Sweep folders that no point's values change, once resolved."""
        self.hydra_resolver = any("${hydra:" in text for text in texts.values())
        """Whether the app's config reads Hydra's node through `${hydra:...}` (then each
        point is typed whole, after the launcher made its Hydra node current)."""
        try:
            self.typed: HpcftConfig | None = typed_now(composed)
            """The composition typed (before `resolved`); None where a point must set a value."""
        except ConfigError:
            self.typed = None
        with without_hydra(composed):
            app = OmegaConf.to_container(composed, resolve=False, enum_to_str=True)
        assert isinstance(app, dict)
        self.app_yaml = ChunkedYaml({str(k): v for k, v in app.items()})
        """`.hydra/config.yaml` of the composition, in entries."""
        hydra = OmegaConf.to_container(composed.hydra, resolve=False, enum_to_str=True) if "hydra" in composed else {}
        self.hydra_yaml = ChunkedYaml({"hydra": hydra}, depth=3)
        """`.hydra/hydra.yaml` of the composition, in entries (a composition without Hydra's
        node, an Optuna trial's checked on the login node, has none)."""

    @contextmanager
    def point(self, values: Sequence[Override]) -> Iterator[Derived]:
        """The composition with a point's value overrides applied: in place, and put back on
        leaving, where each changes a leaf to a scalar; else on a copy."""
        leaves = [leaf(o, self.config) for o in values]
        if None in leaves:
            config = copy.deepcopy(self.config)
            apply(values, config)
            yield Derived(base=self, config=config, changed=None)
            return
        undo: list[tuple[str, Any, Node | None]] = []
        keys = [o.key_or_group for o in values]
        try:
            for override, node in zip(values, leaves, strict=True):
                assert node is not None
                key, old = override.key_or_group, node._value()
                undo.append((key, old, None))  # put back even if the value is refused
                if set_leaf(node, override, self.config) and keys.count(key) == 1:
                    undo[-1] = (key, old, node)  # a node set in place is the key's still
            yield Derived(base=self, config=self.config, changed=tuple(o.key_or_group for o in values))
        finally:
            for key, old, node in reversed(undo):
                put_back(self.config, key, old, node)

    def leaves(self, key: str, seen: frozenset[str] = frozenset()) -> frozenset[str] | None:
        """The keys an interpolation's value comes from, through the interpolations it reads
        (None: not certain); remembered per key."""
        if key not in self.leaf_keys:
            node = node_at(self.config, key)
            direct = reads(str(node._value())) if node is not None and node._is_interpolation() else frozenset()
            found: set[str] | None = set(direct) if direct is not None else None
            for ref in direct or ():
                sub = None if ref in seen else self.leaves(ref, seen | {key})
                found = None if sub is None or found is None else found | sub
            self.leaf_keys[key] = frozenset(found) if found is not None else None
        return self.leaf_keys[key]

    def typed_config(self) -> HpcftConfig:
        """The composition's own typed config (`hpcft.configure.typed_config` of it)."""
        return resolved(self.typed if self.typed is not None else typed_now(self.config))

    def dependents(self, changed: Sequence[str]) -> list[str]:
        """The interpolations that read a changed key, directly or through one another."""
        seen, found = set(changed), []
        grew = True
        while grew:
            grew = False
            for key, keys in self.reads.items():
                if key not in seen and (keys is None or overlaps(keys, seen)):
                    seen.add(key)
                    found.append(key)
                    grew = True
        return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class Derived:
    """A point's composition (valid inside `PointBase.point`) and what is made of it."""

    base: PointBase
    """The composition it comes from."""
    config: DictConfig
    """The point's whole composition, Hydra's node included."""
    changed: tuple[str, ...] | None
    """The keys its overrides set in place; None for a copy (nothing is shared)."""

    @cached_property
    def hydra(self) -> DictConfig:
        """The point's Hydra node, looked up once (an attribute of a config is resolved)."""
        node: DictConfig = self.config.hydra
        return node

    def typed(self) -> HpcftConfig:
        """What `hpcft.configure.typed_config` gives for the point's composition."""
        base = self.base.typed
        if self.changed is None or base is None or self.base.hydra_resolver:
            return resolved(typed_now(self.config))
        try:
            for key in (*self.changed, *self.base.dependents(self.changed)):
                base = with_value(base, key.split("."), selected(self.config, key))
        except NotDerivable:
            return resolved(typed_now(self.config))
        return resolved(base)

    def reads(self, key: str) -> bool:
        """Whether the sweep's folders may read `key` (of the point's Hydra node)."""
        for folder in ("hydra.sweep.dir", "hydra.sweep.subdir"):
            leaves = self.base.leaves(folder)
            if leaves is None or overlaps(leaves, {key}):
                return True
        return False

    def folder(self, key: str) -> str:
        """`hydra.sweep.dir` or `.subdir` as Hydra's `run_job` resolves it for the point:
        key references looked up without the grammar, a folder no point's values change
        resolved once (the sweep's own folder, usually)."""
        node = node_at(self.config, key)
        assert node is not None
        text = str(node._value())
        if not node._is_interpolation():
            return text
        fast = substituted(self.config, text)
        if fast is not None:
            return fast
        leaves = self.base.leaves(key)
        if self.changed is None or leaves is None or overlaps(leaves, {*self.changed, *POINT_FIELDS}):
            return resolve(self.config, key)
        if key not in self.base.folders:
            self.base.folders[key] = resolve(self.config, key)
        return self.base.folders[key]

    def app_yaml(self) -> str:
        """`.hydra/config.yaml`: the point's composition without Hydra's node, unresolved."""
        if self.changed is None:
            with without_hydra(self.config):
                return yaml_text(OmegaConf.to_container(self.config, resolve=False, enum_to_str=True))
        return self.base.app_yaml.text({tuple(k.split(".")): written(self.config, k) for k in self.changed})


def substituted(config: DictConfig, text: str) -> str | None:
    """A string of `${key}` / `${hydra:key}` references resolved by looking the keys up, as
    OmegaConf's string interpolation joins them (`str` of each); None for anything else."""
    refs = _FOLDER_REF.findall(text)
    if "\\${" in text or len(refs) != text.count("${"):
        return None
    values = {h + k: OmegaConf.select(config, f"hydra.{k}" if h else k, throw_on_missing=True) for h, k in refs}
    if any(isinstance(v, Container) for v in values.values()):
        return None
    return _FOLDER_REF.sub(lambda m: str(values[(m.group(1) or "") + m.group(2)]), text)


def resolve(config: DictConfig, key: str) -> str:
    """A key resolved by OmegaConf, with the config's Hydra node current for `${hydra:...}`."""
    node = node_at(config, key)
    if node is not None and "${hydra:" in str(node._value()):
        HydraConfig.instance().set_config(config)
    return str(OmegaConf.select(config, key))
