"""`python -m hpcft -m key=a,b other=range(1,4) ...`: a Hydra multirun, submitted as job arrays.

Hydra expands the sweep (its basic sweeper: lists, `range()`, `choice()`; a `glob()` is first
written out here as the group options it matches, --config-dir's included), and
hpcft's launcher plugin (`hydra/launcher=hpcft`) has `hpcft.sweep.launch` validate every point,
give each its own run directory (`${hydra.sweep.dir}/${hydra.sweep.subdir}`, Hydra's
settings, with hpcft's sweep folder under `run_root` where none is given) and submit one
array per stage and resource shape. With `hydra/sweeper=optuna` the study runs in a
controller job on the cluster (`hpcft.sweep.adaptive`), and the command returns with its job id.

Examples:
  python -m hpcft -m model=tiny_llama cluster=slurmlab framework.learning_rate=1e-3,1e-4 \\
      framework.lora_rank=4,8,16
  python -m hpcft -m model=qwen2_5_7b,qwen2_5_72b cluster=2x8gpu deepspeed=zero3 dry_run=true
  python -m hpcft -m hydra/sweeper=optuna hydra.sweeper.n_trials=6 model=tiny_llama cluster=slurmlab \
      'framework.learning_rate=interval(1e-4,1e-2)' 'framework.lora_rank=choice(4,8,16)'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra.core.override_parser.types import Glob, Override
from hydra.errors import HydraException

from hpcft.config.compose import SHIPPED, HydraSettings, Primary, compose_with_hydra
from hpcft.config.overrides import hydra_value
from hpcft.config.schema import ModelKind
from hpcft.configure import available_options, compose_config, hydra_error, typed_config
from hpcft.errors import UserError
from hpcft.frameworks import default_framework
from hpcft.study_space import check_sampler_choice
from hpcft.sweep.adaptive import is_adaptive, search_values, submit_study
from hpcft.sweep.launch import earlier_batches
from hpcft.sweep.multirun import run_multirun
from hpcft.sweep.parse import LineParser
from hpcft.sweep.task import LauncherSettings, PipelineTask


def parsed_overrides(overrides: Sequence[str], parser: LineParser) -> list[Override]:
    """The overrides as Hydra parses them (each line once in the command, numbers without the
    grammar: `hpcft.sweep.parse`); a line it cannot parse is a one-line error."""
    try:
        return parser.parse(overrides)
    except HydraException as e:
        where = getattr(e, "override", None)
        raise UserError(f"{where}: {hydra_error(e)}" if where else str(hydra_error(e))) from None


def lines_of(parsed: Sequence[Override]) -> list[str]:
    return [str(o.input_line) for o in parsed]


def app_overrides(parsed: Sequence[Override]) -> list[Override]:
    """The overrides of the app's config: the command line's without `hydra.` and `hydra/` ones."""
    return [o for o in parsed if not str(o.input_line).startswith(("hydra.", "hydra/"))]


def expanded_globs(parsed: Sequence[Override], config_dirs: Sequence[str], parser: LineParser) -> list[Override]:
    """Each `glob()` sweep written out as the group options it matches, as Hydra's sweeper
    expands it (its `Glob.filter`, sorted), over the shipped options and those of --config-dir
    (hpcft's schemas `base_*` are no options); Hydra's sweeper then gets a plain list."""
    out = list(parsed)
    for i, o in enumerate(parsed):
        glob = o.value()
        if o.is_hydra_override() or not isinstance(glob, Glob):
            continue
        options = available_options(o.key_or_group, config_dirs)
        chosen = glob.filter(options)
        if not chosen:
            known = f"its options: {', '.join(options)}" if options else f"no config group {o.key_or_group}"
            raise UserError(f"{o.input_line}: glob() matches no option ({known})")
        (out[i],) = parsed_overrides([f"{o.get_key_element()}={','.join(hydra_value(c) for c in chosen)}"], parser)
    return out


def first_values(parsed: Sequence[Override]) -> tuple[list[str], dict[str, list[str]]]:
    """The overrides with each sweep reduced to its first value, and every swept key's values."""
    single, swept = [], {}
    for o in parsed:
        if o.is_hydra_override() and o.is_sweep_override():
            continue
        if o.is_sweep_override():
            values = search_values(o)
            if not values:
                raise UserError(f"{o.input_line}: sweeps over no value")
            swept[o.get_key_element()] = values
            single.append(f"{o.get_key_element()}={values[0]}")
        else:
            single.append(str(o.input_line))
    return single, swept


def chosen_framework(
    parsed: Sequence[Override], config_dirs: Sequence[str], primary: Primary = SHIPPED, adaptive: bool = False
) -> tuple[str | None, HydraSettings]:
    """The framework to add when the user named none (it follows the model kind, which must
    then be the same for every swept model), and Hydra's settings as the configs and the
    command line choose them (the sweeper an experiment picks), from one composition with the
    first values: checked and typed, as each point will be. An Optuna study (`adaptive`) keeps
    that composition (`HydraSettings.composition`), its searched keys left at their defaults."""
    single, swept = first_values(app_overrides(parsed))
    if adaptive:  # a study's searched values are checked as Optuna draws them (hpcft.sweep.adaptive)
        single = [o for o in single if not ("." in (key := o.split("=", 1)[0]) and key in swept)]
        if swept_hydra := [o for o in parsed if o.is_hydra_override() and o.is_sweep_override()]:
            raise UserError(f"Sweeping over Hydra's configuration is not supported : '{swept_hydra[0].input_line}'")
    hydra = [  # `+hydra.x=...` is in `single` already
        line
        for o in parsed
        if o.is_hydra_override() and not o.is_sweep_override() and (line := str(o.input_line)) not in single
    ]
    app, settings = compose_with_hydra([*single, *hydra], config_dirs, primary, keep=adaptive)
    cfg = typed_config(app)
    if given(lines_of(parsed), "framework"):
        return None, settings
    kinds = swept_kinds(single, swept, config_dirs, primary)
    if len(kinds) > 1:
        said = "; ".join(f"{kind}: {', '.join(options)}" for kind, options in sorted(kinds.items()))
        raise UserError(
            f"framework: the swept options give models of different kinds ({said}); the framework follows the"
            " model's kind: sweep each kind separately"
        )
    return default_framework(ModelKind(cfg.model.kind)), settings


NO_MODEL = frozenset({"trainset", "evalset", "stages", "name", "run_root", "dry_run", "seed", "cluster", "deepspeed"})
"""Top-level keys that do not choose the model: values, and hpcft's groups other than `model`."""


def swept_kinds(
    single: Sequence[str], swept: dict[str, list[str]], config_dirs: Sequence[str], primary: Primary
) -> dict[str, list[str]]:
    """The model kind each option of each swept config group gives (`model=a,b`,
    `+experiment=x,y`), the other keys at their first values."""
    kinds: dict[str, list[str]] = {}
    for key, values in swept.items():
        if "." in key or key.lstrip("+~") in NO_MODEL:
            continue
        for value in values:
            point = [f"{key}={value}" if o.split("=", 1)[0] == key else o for o in single]
            kind = ModelKind(compose_config(point, config_dirs, primary).model.kind).value
            kinds.setdefault(kind, []).append(f"{key}={value}")
    return kinds


def given(overrides: Sequence[str], key: str) -> str | None:
    """The value the user gave `key` (a config group or a dotted key), if any."""
    for o in overrides:
        name, _, value = o.lstrip("+~").partition("=")
        if name == key:
            return value
    return None


def hydra_overrides(overrides: Sequence[str], settings: HydraSettings, config_dirs: Sequence[str]) -> list[str]:
    """hpcft's launcher, its basic sweeper where no config or override picks another, and quiet
    logging. The sweep folder is conf/hpcft.yaml's `hydra.sweep.dir` (under `run_root`, named
    after `hydra.job.name`) unless an experiment or the command line sets one."""
    extra = ["hydra/launcher=hpcft"]
    if given(overrides, "hydra/sweeper") is None and settings.sweeper == "basic":
        extra.append("hydra/sweeper=hpcft")
    if given(overrides, "hydra.sweep.dir") is None and settings.sweep_dir is not None:
        extra.append(f"hydra.sweep.dir={hydra_value(settings.sweep_dir)}")  # resolved once, as Hydra's sweeper does
    for group in ("hydra/job_logging", "hydra/hydra_logging"):
        if given(overrides, group) is None:
            extra.append(f"{group}=none")
    if config_dirs:
        extra.append("hydra.searchpath=" + hydra_value([f"file://{Path(d).resolve()}" for d in config_dirs]))
    return [*overrides, *extra]


def main(overrides: Sequence[str], config_dirs: Sequence[str], primary: Primary = SHIPPED) -> int:
    parser = LineParser()
    dirs = [*([primary.path] if primary.path else []), *config_dirs]
    parsed = expanded_globs(parsed_overrides(overrides, parser), dirs, parser)
    overrides = lines_of(parsed)
    check_sampler_choice(overrides)  # before Hydra composes it: its own error names no option
    adaptive = is_adaptive(overrides)
    framework, settings = chosen_framework(parsed, config_dirs, primary, adaptive)
    chosen = [*overrides, f"framework={framework}"] if framework else list(overrides)
    argv = hydra_overrides(chosen, settings, primary.searched(config_dirs))
    implied = ["framework"] if framework else []
    if adaptive or is_adaptive([*overrides, f"hydra/sweeper={settings.sweeper}"]):
        if primary != SHIPPED:
            raise UserError(
                "-cp/-cn: an Optuna study's controller composes conf/hpcft.yaml so far; use -cd and +experiment="
            )
        return submit_study(argv, implied, config_dirs, settings.composition)
    with no_leftover(settings.sweep_dir):
        run_multirun(argv, PipelineTask(LauncherSettings(implied_keys=tuple(implied))), primary)
    return 0


@contextmanager
def no_leftover(sweep_dir: str | None) -> Iterator[None]:
    """A sweep refused before any point is written leaves no folder behind, and an earlier
    sweep's folder is left as it was (Hydra's sweeper writes `multirun.yaml` before the
    launcher checks the points)."""
    folder = Path(sweep_dir).expanduser().absolute() if sweep_dir else None
    existed = folder is not None and folder.exists()
    if folder is not None:
        earlier_batches(folder, 0)  # an earlier sweep's folder is refused before Hydra writes into it
    try:
        yield
    except UserError:
        if folder is not None and folder.is_dir() and [p.name for p in folder.iterdir()] == ["multirun.yaml"]:
            (folder / "multirun.yaml").unlink()
            if not existed:
                folder.rmdir()
        raise
