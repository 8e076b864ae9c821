"""Compose the Hydra config from `conf/` (plus the user's folders) and type it.

With `hpcft.configure` (which adds the frameworks' part), the only place that sees a
DictConfig: everything downstream works on the `HpcftConfig` dataclass tree.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from hpcft.config.hydra_messages import keyed_cause, sweep_without_multirun, under_null, yaml_error
from hpcft.config.overrides import hydra_value
from hpcft.config.registry import default_framework, registered_frameworks
from hpcft.config.run_schema import DeployConfig, EvalConfig, WandbConfig
from hpcft.config.schema import SCHEMAS, HpcftConfig, ModelKind, SweepConfig, register_schemas
from hpcft.errors import ConfigError, UserError, unknown_name
from hpcft.rundir import new_run_name
from hpcft.yamlload import check_yaml_tree, read_yaml

GROUPS = ("model", "framework", "cluster", "deepspeed")
_SCHEMA_BY_GROUP: dict[str, type] = {
    **SCHEMAS,
    "deploy": DeployConfig,
    "eval": EvalConfig,
    "wandb": WandbConfig,
    "sweep": SweepConfig,
}
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def conf_dir() -> Path:
    """The shipped `conf/`: inside the installed package, or beside it in a checkout."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf"):
        if (candidate / "hpcft.yaml").is_file():
            return candidate
    raise RuntimeError(f"hpcft's conf/ folder is missing (looked beside {PACKAGE_DIR})")


def hpcft_home() -> str:
    """Where test models and caches live: $HPCFT_HOME or ~/.cache/hpcft."""
    return os.environ.get("HPCFT_HOME") or str(Path.home() / ".cache" / "hpcft")


def is_demo_data(path: str) -> bool:
    """Whether `path` is one of the shipped demo sets (`trainset`/`evalset` when not given)."""
    return Path(path).parent == PACKAGE_DIR / "assets" / "demo"


def _demo_data(framework: str, split: str) -> str:
    """The small demo data set shipped with hpcft for a framework (`train`, `eval`, or
    `general`: a FlagEmbedding evaluation folder of general-knowledge passages)."""
    folder = PACKAGE_DIR / "assets" / "demo"
    found = sorted(folder.glob(f"{framework}_{split}.*")) or sorted(folder.glob(f"{framework}_{split}"))
    return str(found[0]) if found else f"<no demo {split} set for {framework}; set {split}set=<file>>"


def _package_data(module: str) -> str:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return f"<package {module} is not installed>"
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def _job_name(name: str | None, model: str, framework: str) -> str:
    """`hydra.job.name`'s default (conf/hpcft.yaml): the run's name, else `<model>-<framework>`."""
    return name or f"{model}-{framework}"


def _new_folder(base: str) -> str:
    """`<base>-<YYYYmmdd-HHMMSS>-<6 hex>` (`hydra.run.dir`'s and `hydra.sweep.dir`'s default
    name): cached per config, as Hydra's `${now:...}`, so a sweep's every reading agrees."""
    return new_run_name(base)


def _register_resolvers() -> None:
    for name, fn, cached in (
        ("hpcft_home", hpcft_home, False),
        ("hpcft_demo", _demo_data, False),
        ("hpcft_package_data", _package_data, False),
        ("hpcft_job_name", _job_name, False),
        ("hpcft_new_folder", _new_folder, True),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cached)


def _chosen_group(overrides: Sequence[str], group: str) -> bool:
    return any(o.lstrip("+~").split("=", 1)[0] == group for o in overrides)


def _search_path_override(config_dirs: Sequence[str]) -> list[str]:
    if not config_dirs:
        return []
    for d in config_dirs:
        if not Path(d).is_dir():
            raise UserError(f"--config-dir {d}: no such folder")
        check_yaml_tree(d)  # Hydra reads these files with no bound on aliases and no file:line
    return ["hydra.searchpath=" + hydra_value([f"file://{Path(d).resolve()}" for d in config_dirs])]


def group_options(group: str, overrides: Sequence[str] = ()) -> list[str]:
    """Options of a config group (shipped, and the user folders of a `hydra.searchpath` among
    the overrides), schemas excluded."""
    loader = GlobalHydra.instance().config_loader()
    options = loader.get_group_options(group, config_name="hpcft", overrides=list(overrides))
    return [o for o in options if not o.startswith("base_")]


def register_all_schemas() -> None:
    """Every schema in Hydra's ConfigStore, and hpcft's resolvers: what any composition of
    hpcft's config needs first (Hydra's own multirun included)."""
    register_schemas({name: f.schema for name, f in registered_frameworks().items()})
    _register_resolvers()


def available_options(group: str, config_dirs: Sequence[str] = ()) -> list[str]:
    """Options of a config group, shipped and in the given folders (outside a composition)."""
    register_all_schemas()
    overrides = _search_path_override(config_dirs)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return group_options(group, overrides)


def _compose(overrides: list[str], config_name: str = "hpcft") -> DictConfig:
    """The composition with Hydra's node (`hydra.run.dir`, `hydra.mode`, the sweeper's choice)."""
    try:
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:
        raise _explain_missing(e, overrides) from None
    except OverrideParseException as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{first}\n  quote values with special characters: key='a value; with $(chars)'") from None
    except (ConfigCompositionException, OmegaConfBaseException) as e:
        raise UserError(_hydra_message(e)) from None
    except yaml.YAMLError as e:  # a config file Hydra read (--config-dir's are read first, see check_yaml_tree)
        raise yaml_error(e) from None
    except AssertionError as e:  # OmegaConf's, for a key set under a null node (Hydra itself shows a traceback)
        raise UserError(under_null(overrides, e)) from None


def hydra_error(e: Exception) -> UserError:
    """Hydra's composition error as one line naming the key."""
    return UserError(_hydra_message(e))


def _explain_missing(e: MissingConfigException, overrides: list[str]) -> UserError:
    searched = [o for o in overrides if o.startswith("hydra.searchpath=")]
    for group in GROUPS:
        for o in overrides:
            key, _, value = o.lstrip("+").partition("=")
            if key == group and value not in (options := group_options(group, searched)):
                return ConfigError(group, unknown_name(f"{group} option", value, options))
    return UserError(_hydra_message(e))


def _hydra_message(e: Exception) -> str:
    message = str(e).strip()
    if message.startswith(("Ambiguous value for argument", "Sweep parameters")):
        return sweep_without_multirun(message)
    if "You must specify" in message:
        for group in GROUPS:
            if f"'{group}'" in message:
                return f"{group}: no {group} chosen; pick one of: {', '.join(group_options(group))}"
    cause = keyed_cause(e)
    full_key = getattr(cause, "full_key", None)
    if not full_key:
        return message.splitlines()[0]
    first = str(cause).strip().splitlines()[0]
    if "not in struct" in first or "not in '" in first:
        parent, _, leaf = str(full_key).rpartition(".")
        known = _schema_fields(parent)
        if not known:  # a free-form mapping (framework.args, cluster.env): Hydra's `+` adds a key
            return f"{full_key}: a new key of {parent}; add it with +{full_key}=<value>"
        if owners := _owners(f"{parent}.", leaf):  # the union of the frameworks' fields has it
            return f"{full_key}: a setting of framework={'|'.join(owners)}, not of this run's framework"
        return f"{full_key}: " + unknown_name("key", leaf, known)
    return f"{full_key}: {first}"


def _schema_fields(path: str) -> list[str]:
    """Field names of the schema at a dotted path (the union over frameworks for `framework`)."""
    if not path:
        schemas: list[type] = [HpcftConfig]
    elif path == "framework":
        schemas = [f.schema for f in registered_frameworks().values()]
    else:
        schemas = [_SCHEMA_BY_GROUP.get(path, object)]
    return sorted({f.name for s in schemas if is_dataclass(s) for f in fields(s)})


@dataclass(frozen=True)
class Primary:
    """The primary config: `conf/hpcft.yaml`, or the one `-cn NAME` names, looked for first in
    `-cp DIR` (Hydra's `--config-path`/`--config-name`); the shipped `conf/` stays searched
    after the user's folders, so its groups remain options."""

    name: str = "hpcft"
    path: str | None = None

    def folder(self) -> str:
        if self.path is None:
            return str(conf_dir())
        if not Path(self.path).is_dir():
            raise UserError(f"--config-path {self.path}: no such folder")
        return str(Path(self.path).resolve())

    def searched(self, config_dirs: Sequence[str]) -> list[str]:
        """The folders searched after the primary one: --config-dir's, then conf/ under -cp."""
        return [*config_dirs, *([str(conf_dir())] if self.path is not None else [])]


SHIPPED = Primary()
"""hpcft's own primary config, `conf/hpcft.yaml`."""


def compose_config(overrides: Sequence[str], config_dirs: Sequence[str] = (), primary: Primary = SHIPPED) -> DictConfig:
    """Compose `conf/hpcft.yaml` with the overrides; fill `framework` from the model kind."""
    return compose_with_hydra(overrides, config_dirs, primary)[0]


@dataclass(frozen=True, kw_only=True)
class HydraSettings:
    """What a command reads of Hydra's node, from the composition of the app's config."""

    multirun: bool
    """`hydra.mode=MULTIRUN` (in a config or on the command line): a sweep even without -m."""
    run_dir: str | None
    """`hydra.run.dir`, resolved: a single run's folder (None where it cannot be here: the
    run's checks then name what is missing)."""
    sweeper: str
    """The `hydra/sweeper` chosen (`basic`, Hydra's default, unless a config or the command line picks one)."""
    sweep_dir: str | None
    """`hydra.sweep.dir`, resolved once for the whole sweep (None where it cannot be here)."""
    composition: DictConfig | None = None
    """The whole composition, Hydra's node included (`hydra.sweep.dir` as resolved here), where
    `keep` asked for it: an Optuna study reads its sweeper's settings and derives its trials
    from it (`hpcft.sweep.adaptive`) instead of composing again."""


def compose_with_hydra(
    overrides: Sequence[str], config_dirs: Sequence[str] = (), primary: Primary = SHIPPED, keep: bool = False
) -> tuple[DictConfig, HydraSettings]:
    """The app's config and, from the same composition, Hydra's settings hpcft reads (with
    `keep`, a copy of the whole composition too)."""
    register_all_schemas()
    overrides = [*overrides, *_search_path_override(primary.searched(config_dirs))]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=primary.folder(), version_base="1.3"):
        _refuse_deleted_groups(overrides)
        cfg = _compose([*overrides, *implied_framework(overrides, config_dirs, primary)], primary.name)
    hydra = cfg.hydra
    try:
        settings = HydraSettings(
            multirun=hydra.mode == RunMode.MULTIRUN,
            run_dir=_resolved(hydra.run, "dir"),
            sweeper=str(hydra.runtime.choices.get("hydra/sweeper")),
            sweep_dir=_resolved(hydra.sweep, "dir"),
        )
    except OmegaConfBaseException as e:
        raise UserError(_hydra_message(e)) from None
    if keep:
        settings = replace(settings, composition=_kept(cfg, settings.sweep_dir))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, settings


def _kept(cfg: DictConfig, sweep_dir: str | None) -> DictConfig:
    """A copy of the composition, its sweep folder the one resolved for the command."""
    kept = copy.deepcopy(cfg)
    if sweep_dir is not None:
        with read_write(kept.hydra), open_dict(kept.hydra):
            kept.hydra.sweep.dir = sweep_dir
    return kept


def _resolved(node: DictConfig, key: str) -> str | None:
    try:
        return str(node[key])
    except OmegaConfBaseException:
        return None


def implied_framework(overrides: Sequence[str], config_dirs: Sequence[str], primary: Primary) -> list[str]:
    """`framework=<the model kind's>` where the overrides choose none (inside a composition's
    Hydra context). The kind is read from the model's YAML when that is plain, else by
    composing once without framework keys."""
    if _chosen_group(overrides, "framework"):
        return []
    kind = model_kind_from_file(overrides, config_dirs) if primary == SHIPPED else None
    if kind is None:
        without = [o for o in overrides if not o.lstrip("+~").startswith("framework.")]
        kind = ModelKind(_compose(without, primary.name).model.kind)
    return [f"framework={default_framework(kind)}"]


def _refuse_deleted_groups(overrides: Sequence[str]) -> None:
    """`~model` (Hydra's delete of a config group) leaves a run without a part every run needs."""
    for item in overrides:
        group = item[1:].partition("=")[0] if item.startswith("~") else None
        if group in GROUPS:
            searched = [o for o in overrides if o.startswith("hydra.searchpath=")]
            instead = (
                "framework follows the model's kind when left out"
                if group == "framework"
                else (f"choose one of: {', '.join(group_options(group, searched))}")
            )
            raise ConfigError(group, f"{item} deletes the {group} group, which every run needs; {instead}")


_TOP_VALUES = frozenset({"trainset", "evalset", "stages", "name", "run_root", "dry_run", "seed", "hydra.searchpath"})


def model_kind_from_file(overrides: Sequence[str], config_dirs: Sequence[str]) -> ModelKind | None:
    """The model's kind without composing (a composition costs ~0.1 s of the ~0.5 s a submission
    takes): from `model.kind=` or the chosen model's YAML. None whenever that is not certain
    (an experiment or other group that could change the model, a model file found twice or
    with no literal kind), and the caller composes instead."""
    kind, option = None, None
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key == "model":
            option = value
        elif key == "model.kind":
            kind = value
        elif key.startswith("hydra/") and not _own_hydra_options(overrides, config_dirs):
            continue  # Hydra's plugins' options (`hydra/sweeper=optuna`) set Hydra's node only
        elif "." not in key and key not in GROUPS and key not in _TOP_VALUES:
            return None
    if kind is None and option:
        found = [Path(d) / "model" / f"{option}.yaml" for d in [*config_dirs, str(conf_dir())]]
        files = [f for f in found if f.is_file()]
        if len(files) != 1:
            return None
        data = read_yaml(files[0])
        kind = data.get("kind") if isinstance(data, dict) else None
    return ModelKind(kind) if kind in {k.value for k in ModelKind} else None


def _own_hydra_options(overrides: Sequence[str], config_dirs: Sequence[str]) -> bool:
    """Whether a config folder may hold `hydra/<group>` options of its own (which could set
    any key with `@package _global_`); the plugins' options are stored in Hydra's node."""
    if any(o.startswith("hydra.searchpath=") for o in overrides):
        return True
    return any((Path(d) / "hydra").is_dir() for d in [*config_dirs, str(conf_dir())])


def to_typed(cfg: DictConfig) -> HpcftConfig:
    """Resolve interpolations and convert to the dataclass tree (missing values are errors)."""
    try:
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError(str(key), str(e).splitlines()[0]) from None
    assert isinstance(typed, HpcftConfig)
    refuse_unknown_keys(typed)
    return typed


def refuse_unknown_keys(node: Any, path: str = "") -> None:
    """Hydra's `+key=value` adds a key anywhere, and OmegaConf sets a key the schema lacks on
    the dataclass as a plain attribute: `+framework.lora_rnak=8` would be accepted and never
    read. Every key of a typed section must be one of its fields (free-form mappings such as
    `framework.args` and `cluster.env` are dicts, not dataclasses, and take any key)."""
    known = {f.name for f in fields(node)}
    for key, value in vars(node).items():
        where = f"{path}{key}"
        if key not in known:
            owners = _owners(path, key)
            said = f"a setting of framework={'|'.join(owners)}, not of this run's framework" if owners else ""
            raise ConfigError(where, said or unknown_name("key", key, known))
        if is_dataclass(value) and not isinstance(value, type):
            refuse_unknown_keys(value, f"{where}.")


def _owners(path: str, key: str) -> list[str]:
    """The frameworks whose schema has `key`, where `path` is the framework section."""
    if path != "framework.":
        return []
    return sorted(name for name, f in registered_frameworks().items() if key in {x.name for x in fields(f.schema)})
