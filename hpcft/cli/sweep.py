"""`python -m hpcft -m key=a,b other=range(1,4) ...`: a Hydra multirun, submitted as job arrays.

Hydra expands the sweep (its basic sweeper: lists, `range()`, `choice()`, `glob()`), and
hpcft's launcher plugin (`hydra/launcher=hpcft`) has `hpcft.launch` validate every point,
give each its own run directory (`${hydra.sweep.dir}/${hydra.sweep.subdir}`, Hydra's
settings, with hpcft's sweep folder under `run_root` where none is given) and submit one
array per stage and resource shape.

Examples:
  python -m hpcft -m model=tiny_llama cluster=slurmlab framework.learning_rate=1e-3,1e-4 \\
      framework.lora_rank=4,8,16
  python -m hpcft -m model=qwen2_5_7b,qwen2_5_72b cluster=2x8gpu deepspeed=zero3 dry_run=true
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# Private, because Hydra has no public API to run a multirun without `@hydra.main` reading
# `sys.argv`: `Hydra.create_main_hydra2(...).multirun(...)` is what `@hydra.main` itself
# calls. hydra-core is pinned to 1.3.x, and tests/test_hydra_api.py fails if it changes.
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from hpcft.config.compose import conf_dir
from hpcft.config.overrides import hydra_value
from hpcft.config.schema import HpcftConfig, ModelKind
from hpcft.configure import compose_config, hydra_error, typed_config
from hpcft.errors import UserError
from hpcft.frameworks import default_framework
from hpcft.plan import run_base_name
from hpcft.rundir import new_run_name

ADAPTIVE_SWEEPERS = ("optuna", "ax", "nevergrad")


class PipelineTask:
    """The task function Hydra is given: never called, since the launcher submits each point's
    pipeline instead. `hpcft_pipeline` is how the launcher tells it from a foreign app's."""

    hpcft_pipeline = True

    def __init__(self, implied_keys: Sequence[str] = ()) -> None:
        self.implied_keys = tuple(implied_keys)
        """Keys hpcft added to the user's overrides (the launcher keeps them out of
        `${hydra.job.override_dirname}`)."""

    def __call__(self, cfg: object) -> None:
        raise AssertionError("hpcft's launcher submits pipelines; it does not call the task function")


def first_values(overrides: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The overrides with each sweep reduced to its first value, and every swept key's values."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        where = getattr(e, "override", None)
        raise UserError(f"{where}: {hydra_error(e)}" if where else str(hydra_error(e))) from None
    single, swept = [], {}
    for o in parsed:
        if o.is_hydra_override() and o.is_sweep_override():
            continue
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            swept[o.get_key_element()] = values
            single.append(f"{o.get_key_element()}={values[0]}")
        else:
            single.append(str(o.input_line))
    return single, swept


def chosen_framework(overrides: Sequence[str], config_dirs: Sequence[str]) -> tuple[HpcftConfig, str | None]:
    """A representative config, and the framework to add when the user named none (it follows
    the model kind, which must then be the same for every swept model)."""
    single, swept = first_values([o for o in overrides if not o.startswith(("hydra.", "hydra/"))])
    cfg = typed_config(compose_config(single, config_dirs))
    if given(overrides, "framework"):
        return cfg, None
    kinds = {
        typed_config(compose_config([*single, f"model={m}"], config_dirs)).model.kind for m in swept.get("model", [])
    }
    if len(kinds | {cfg.model.kind}) > 1:
        raise UserError("framework: the swept models are of different kinds; sweep them separately")
    return cfg, default_framework(ModelKind(cfg.model.kind))


def given(overrides: Sequence[str], key: str) -> str | None:
    """The value the user gave `key` (a config group or a dotted key), if any."""
    for o in overrides:
        name, _, value = o.lstrip("+~").partition("=")
        if name == key:
            return value
    return None


def hydra_overrides(overrides: Sequence[str], cfg: HpcftConfig, config_dirs: Sequence[str]) -> list[str]:
    """hpcft's launcher, and hpcft's defaults for what the user left to Hydra: the sweep folder
    under `run_root`, named after `hydra.job.name` or the run, and quiet logging."""
    extra = ["hydra/launcher=hpcft"]
    if given(overrides, "hydra/sweeper") is None:
        extra.append("hydra/sweeper=hpcft")
    if given(overrides, "hydra.sweep.dir") is None:
        name = given(overrides, "hydra.job.name") or run_base_name(cfg)
        sweep_dir = Path(cfg.run_root).expanduser().resolve() / new_run_name(f"{name}-sweep")
        extra.append(f"hydra.sweep.dir={hydra_value(str(sweep_dir))}")
    for group in ("hydra/job_logging", "hydra/hydra_logging"):
        if given(overrides, group) is None:
            extra.append(f"{group}=none")
    if config_dirs:
        extra.append("hydra.searchpath=" + hydra_value([f"file://{Path(d).resolve()}" for d in config_dirs]))
    return [*overrides, *extra]


def check_sweeper(overrides: Sequence[str]) -> None:
    sweeper = given(overrides, "hydra/sweeper")
    if sweeper in ADAPTIVE_SWEEPERS:
        raise UserError(
            f"hydra/sweeper={sweeper}: adaptive sweepers need each trial's result, and hpcft submits"
            " and returns without waiting; use the basic sweeper (key=a,b, range(), choice())"
        )


def main(overrides: Sequence[str], config_dirs: Sequence[str]) -> int:
    check_sweeper(overrides)
    cfg, framework = chosen_framework(overrides, config_dirs)
    chosen = [*overrides, f"framework={framework}"] if framework else list(overrides)
    argv = hydra_overrides(chosen, cfg, config_dirs)
    GlobalHydra.instance().clear()
    try:
        app = Hydra.create_main_hydra2(task_name="hpcft", config_search_path=create_config_search_path(str(conf_dir())))
        task = PipelineTask(["framework"] if framework else [])
        app.multirun(config_name="hpcft", task_function=task, overrides=argv)
    except (HydraException, OmegaConfBaseException) as e:
        raise hydra_error(e) from None
    finally:
        GlobalHydra.instance().clear()
    return 0
