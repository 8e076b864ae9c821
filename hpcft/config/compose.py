"""Compose the Hydra config from `conf/` (plus the user's folders) and type it.

With `hpcft.configure` (which adds the frameworks' part), the only place that sees a
DictConfig: everything downstream works on the `HpcftConfig` dataclass tree.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpcft.config.overrides import hydra_value
from hpcft.config.registry import default_framework, registered_frameworks
from hpcft.config.schema import (
    SCHEMAS,
    DeployConfig,
    EvalConfig,
    HpcftConfig,
    ModelKind,
    SweepConfig,
    WandbConfig,
    register_schemas,
)
from hpcft.errors import ConfigError, DataError, UserError, unknown_name
from hpcft.yamlload import check_yaml_tree, read_yaml, yaml_problem

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
    """The small demo data set shipped with hpcft for a framework (`train` or `eval`)."""
    folder = PACKAGE_DIR / "assets" / "demo"
    found = sorted(folder.glob(f"{framework}_{split}.*"))
    return str(found[0]) if found else f"<no demo {split} set for {framework}; set {split}set=<file>>"


def _package_data(module: str) -> str:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return f"<package {module} is not installed>"
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def _register_resolvers() -> None:
    for name, fn in (
        ("hpcft_home", hpcft_home),
        ("hpcft_demo", _demo_data),
        ("hpcft_package_data", _package_data),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


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


def _compose(overrides: list[str]) -> DictConfig:
    try:
        return compose(config_name="hpcft", overrides=overrides)
    except MissingConfigException as e:
        raise _explain_missing(e, overrides) from None
    except OverrideParseException as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{first}\n  quote values with special characters: key='a value; with $(chars)'") from None
    except (ConfigCompositionException, OmegaConfBaseException) as e:
        raise UserError(_hydra_message(e)) from None
    except yaml.YAMLError as e:  # a config file Hydra read (--config-dir's are read first, see check_yaml_tree)
        raise _yaml_error(e) from None


def _yaml_error(e: yaml.YAMLError) -> DataError:
    problem, line = yaml_problem(e)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return DataError(str(getattr(mark, "name", "a config file")), f"invalid YAML: {problem}", line)


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
        return _sweep_without_multirun(message)
    if "You must specify" in message:
        for group in GROUPS:
            if f"'{group}'" in message:
                return f"{group}: no {group} chosen; pick one of: {', '.join(group_options(group))}"
    cause = _keyed_cause(e)
    full_key = getattr(cause, "full_key", None)
    if not full_key:
        return message.splitlines()[0]
    first = str(cause).strip().splitlines()[0]
    if "not in struct" in first or "not in '" in first:
        parent, _, leaf = str(full_key).rpartition(".")
        known = _schema_fields(parent)
        if not known:  # a free-form mapping (framework.args, cluster.env): Hydra's `+` adds a key
            return f"{full_key}: a new key of {parent}; add it with +{full_key}=<value>"
        return f"{full_key}: " + unknown_name("key", leaf, known)
    return f"{full_key}: {first}"


def _sweep_without_multirun(message: str) -> str:
    """Hydra's refusal of a sweep in a single run, as one line in Hydra's words, its advice to
    add --multirun (-m) first: "Ambiguous value for argument 'seed=1,2': to sweep over it, ..."."""
    first, *advice = (line.strip() for line in message.splitlines() if line.strip())
    advice = [re.sub(r"^\d+\.\s*", "", line) for line in advice]
    advice = sorted(advice, key=lambda line: "--multirun" not in line)
    said = "; ".join(line[:1].lower() + line[1:] for line in advice).replace("--multirun", "--multirun (-m)")
    return f"{first}: {said}" if said else first.replace("--multirun", "--multirun (-m)")


def _keyed_cause(e: BaseException) -> BaseException:
    """The first error of the chain that names a config key (Hydra wraps the one from a
    group's YAML file in its own composition error, as context rather than cause)."""
    chain: BaseException | None = e
    while chain is not None:
        if getattr(chain, "full_key", None):
            return chain
        chain = chain.__cause__ or chain.__context__
    return e


def _schema_fields(path: str) -> list[str]:
    """Field names of the schema at a dotted path (the union over frameworks for `framework`)."""
    if not path:
        schemas: list[type] = [HpcftConfig]
    elif path == "framework":
        schemas = [f.schema for f in registered_frameworks().values()]
    else:
        schemas = [_SCHEMA_BY_GROUP.get(path, object)]
    return sorted({f.name for s in schemas if is_dataclass(s) for f in fields(s)})


def compose_config(overrides: Sequence[str], config_dirs: Sequence[str] = ()) -> DictConfig:
    """Compose `conf/hpcft.yaml` with the overrides; fill `framework` from the model kind."""
    register_all_schemas()
    overrides = [*overrides, *_search_path_override(config_dirs)]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        _refuse_deleted_groups(overrides)
        if _chosen_group(overrides, "framework"):
            return _compose(overrides)
        # The framework follows the model's kind: read from the model's YAML when that is
        # plain, else by composing once without framework keys.
        kind = model_kind_from_file(overrides, config_dirs)
        if kind is None:
            without = [o for o in overrides if not o.lstrip("+~").startswith("framework.")]
            kind = ModelKind(_compose(without).model.kind)
        cfg = _compose([*overrides, f"framework={default_framework(kind)}"])
    return cfg


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


def to_typed(cfg: DictConfig) -> HpcftConfig:
    """Resolve interpolations and convert to the dataclass tree (missing values are errors)."""
    try:
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError(str(key), str(e).splitlines()[0]) from None
    assert isinstance(typed, HpcftConfig)
    return typed
