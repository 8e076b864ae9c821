"""Adaptive sweeps (`python -m hpcft -m hydra/sweeper=optuna ...`): the study runs in a small
CPU job on the cluster, the controller (`hpcft.sweep.controller`), not on the login node.

Here, on the login node: check the user's overrides and the sweeper's settings, give the
study its storage (Optuna's RDB storage, SQLite in the sweep folder, so a restarted
controller resumes the study), write `controller.json` and submit the controller; return.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.types import Glob, IntervalSweep, Override
from omegaconf import DictConfig, OmegaConf

from hpcft.config.overrides import hydra_value
from hpcft.config.placement import refuse_in_sweep
from hpcft.config.schema import Executor, HpcftConfig, ModelKind, StageName
from hpcft.config.secrets import check_secret
from hpcft.configure import compose_config, typed_config, validate_config
from hpcft.errors import ConfigError, SubmissionError, UserError
from hpcft.rundir import run_umask, umask_line
from hpcft.study import ControllerRecord, Objective
from hpcft.study_space import Space, check_sampler_choice, check_settings, parse, search_space
from hpcft.sweep.derive import VALUE_FIELDS, PointBase
from hpcft.sweep.multirun import sweep_settings

SUPPORTED = {"optuna": "hydra_plugins.hydra_optuna_sweeper"}
"""Sweepers the controller drives: name -> the package whose study it resumes."""
NOT_YET = ("ax", "nevergrad")


def default_objective(cfg: HpcftConfig) -> str:
    if StageName.eval not in cfg.stages:
        return "train.train_loss"
    return "eval.rouge-l" if cfg.model.kind is ModelKind.llm else "eval.ndcg@10"


def objective_of(cfg: HpcftConfig, direction: str | None) -> Objective:
    """`sweep.objective` checked against the run's stages; the direction the sweeper was
    given, else minimize for a loss and maximize for a score."""
    text = cfg.sweep.objective or default_objective(cfg)
    stage, _, metric = text.partition(".")
    if stage not in ("train", "eval") or not metric:
        raise ConfigError("sweep.objective", f"{text!r} is not <stage>.<metric> (eval.rouge-l, train.train_loss)")
    if stage not in cfg.stages:
        raise ConfigError("sweep.objective", f"{text}: this sweep has stages {', '.join(cfg.stages)}")
    chosen = direction or ("minimize" if "loss" in metric else "maximize")
    if chosen not in ("minimize", "maximize"):
        raise ConfigError("hydra.sweeper.direction", f"{direction!r}: one of minimize, maximize")
    return Objective(stage=stage, metric=metric, direction=chosen)  # type: ignore[arg-type]


def sweeper_name(overrides: Sequence[str]) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra/sweeper=")), None)


def is_adaptive(overrides: Sequence[str]) -> bool:
    name = sweeper_name(overrides)
    if name in NOT_YET:
        raise UserError(
            f"hydra/sweeper={name}: hpcft's controller job drives Optuna's sweeper so far"
            " (hydra/sweeper=optuna); use it, or the basic sweeper (key=a,b)"
        )
    return name in SUPPORTED


def search_values(override: Override) -> list[str]:
    """The values to check a swept key with: each choice, a range's values, an interval's ends."""
    value = override.value()
    if isinstance(value, IntervalSweep):
        return [str(value.start), str(value.end)]
    if isinstance(value, Glob):  # the command line's are expanded first (hpcft.cli.sweep)
        raise UserError(f"{override.input_line}: glob() is read on the command line only; list the options here")
    return [str(v) for v in override.sweep_string_iterator()]


def check_trials(
    overrides: Sequence[str], sweeper: Mapping[str, Any], config_dirs: Sequence[str], trials: Trials
) -> HpcftConfig:
    """The sweeper's settings, and every value a searched key can take (each choice, a range's
    ends, an interval's ends and a value inside, as Optuna's distributions yield them): each
    composes, types and validates in full (data files included) with the other keys at their
    first values, before anything is submitted. Returns the first trial's config."""
    params = sweeper.get("params") or {}
    fixed, spaces = search_space(overrides, params, sweeper.get("search_space"))
    check_settings(sweeper, spaces)
    trials.fixed = fixed
    if trials.base is not None:  # the command's composition: only the fixed values it lacks are applied
        trials.extra = [line for line in fixed if line not in overrides]
        if not trials.derivable(trials.extra):  # a fixed config group of the sweeper's: the first trial's instead
            trials.base, trials.extra = None, []
    first = {space.key: space.values()[0] for space in spaces}
    cfg = trial_config(trials, first, config_dirs, spaces)
    for space in spaces:
        for value in space.values()[1:]:
            trial_config(trials, {**first, space.key: value}, config_dirs, [space])
    refuse_in_sweep(cfg)
    return cfg


@dataclass(kw_only=True)
class Trials:
    """What the study's trials are made from: one composition, each trial derived from it where
    it only sets values (`hpcft.sweep.derive`: the config a composition gives, ~1 ms instead of
    ~0.1 s); a trial that chooses another config group is composed."""

    base: PointBase | None = None
    """The composition trials are derived from: the command's (its searched keys at their
    defaults) or, where there is none, the first trial's, once composed."""
    fixed: list[str] = field(default_factory=list)
    """The study's fixed overrides (`search_space`)."""
    extra: list[str] = field(default_factory=list)
    """The fixed overrides `base` lacks (the sweeper's fixed `params`)."""

    def derivable(self, lines: Sequence[str]) -> bool:
        keys = [line.split("=", 1)[0] for line in lines]
        return self.base is not None and all(
            not key.startswith(("+", "~", "hydra")) and ("." in key or key in VALUE_FIELDS) for key in keys
        )


def trial_config(
    trials: Trials, chosen: Mapping[str, Any], config_dirs: Sequence[str], spaces: Sequence[Space]
) -> HpcftConfig:
    """A trial's config, checked in full; its error says which searched value it comes from
    (the one varied, or the searched key the error names)."""
    try:
        cfg = trial_typed(trials, chosen, config_dirs)
        validate_config(cfg)
    except UserError as e:
        named = [s for s in spaces if len(spaces) == 1 or str(e).startswith(f"{s.key.lstrip('+')}:")]
        if not named:
            raise
        space, value = named[0], chosen[named[0].key]
        hint = ""
        if space.kind == "float" and space.step is None and "Integer" in str(e):
            hint = "; Optuna draws interval() as floats: search integers with range() (its end included) or choice()"
        raise UserError(f"{e}; a trial of the study may take {space.key}={value} ({space.line}){hint}") from None
    return cfg


def trial_typed(trials: Trials, chosen: Mapping[str, Any], config_dirs: Sequence[str]) -> HpcftConfig:
    """A trial's typed config: derived from `trials.base` where the trial only sets values,
    else composed (the first composed trial becomes the base where there was none)."""
    lines = [f"{key}={value}" for key, value in chosen.items()]
    applied = [*trials.extra, *lines]
    if trials.base is not None and trials.derivable(applied):
        with trials.base.point(parse(applied)) as derived:
            return derived.typed()
    composed = compose_config([*trials.fixed, *lines], config_dirs)
    if trials.base is None:
        trials.base = PointBase(composed)
        return trials.base.typed_config()
    return typed_config(composed)


def controller_parameters(cfg: HpcftConfig, sweep_name: str) -> dict[str, Any]:
    """The controller's job: one CPU, a little memory, the cluster's partition for CPU work.
    Slurm requeues it after a time limit or a preemption, and it resumes the study."""
    cluster = cfg.cluster
    params: dict[str, Any] = {
        "job_name": f"{sweep_name}.controller",
        "time": cluster.time,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": 1,
        "mem": "2GB",
        "signal_delay_s": cluster.signal_delay_s,
        "setup": [umask_line(cluster.umask), *cluster.setup],
    }
    for key in ("account", "qos"):
        if value := getattr(cluster, key):
            params[key] = value
    if partition := cluster.cpu_partition or cluster.partition:
        params["partition"] = partition
    return params


def submit_controller(record: ControllerRecord, cfg: HpcftConfig) -> ControllerRecord:
    """Submit the controller job (with the login node's interpreter: it needs what this
    command needs, Hydra and the sweeper, and no training stack) and record it."""
    import submitit

    from hpcft.render import time_to_minutes
    from hpcft.submit import log_paths
    from hpcft.sweep.arrays import scheduler_reason
    from hpcft.sweep.controller import ResumableController

    sweep_dir = Path(record.sweep_dir)
    params = controller_parameters(cfg, sweep_dir.name)
    params["time"] = time_to_minutes(params["time"])
    executor = submitit.SlurmExecutor(folder=sweep_dir / "slurm", max_num_timeout=1000, python=sys.executable)
    executor.update_parameters(**params)
    record.write()  # the job reads it
    try:
        job = executor.submit(ResumableController(), str(sweep_dir))  # type: ignore[no-untyped-call]
    except Exception as e:  # sbatch refused it: leave no half-made sweep behind
        shutil.rmtree(sweep_dir, ignore_errors=True)
        raise SubmissionError(
            f"submitting the controller job failed, nothing was submitted: {scheduler_reason(e)}"
        ) from None
    record.job_id, record.logs = job.job_id, log_paths(job)
    record.write()
    return record


def given(overrides: Sequence[str], key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), None)


def study_overrides(
    overrides: Sequence[str], sweep_dir: Path, objective: Objective, storage: str, name: str
) -> list[str]:
    """The multirun's overrides with the sweep folder and the study pinned: the controller
    (and each restart of it) must find the same folder and the same stored study."""
    pinned = {
        "hydra.sweep.dir": hydra_value(str(sweep_dir)),
        "hydra.sweeper.direction": objective.direction,
        "hydra.sweeper.storage": hydra_value(storage),
        "hydra.sweeper.study_name": hydra_value(name),
        # A failed trial is told to the study as failed, and the study goes on.
        "hydra.sweeper.max_failure_rate": given(overrides, "hydra.sweeper.max_failure_rate") or "1.0",
    }
    kept = [o for o in overrides if o.split("=", 1)[0] not in pinned]
    return [*kept, *(f"{key}={value}" for key, value in pinned.items())]


def checked_settings(sweeper: DictConfig) -> dict[str, Any]:
    """The sweeper's settings `check_trials` reads: the numbers resolved, the search space and
    the sampler as written."""
    settings: dict[str, Any] = {key: sweeper[key] for key in ("n_trials", "n_jobs", "max_failure_rate")}
    for key in ("params", "search_space", "sampler"):
        node = sweeper.get(key)
        settings[key] = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    return settings


def study_record(
    overrides: Sequence[str], implied: Sequence[str], config_dirs: Sequence[str], composition: DictConfig | None = None
) -> tuple[ControllerRecord, HpcftConfig]:
    """Check the sweeper's settings and every searched value; the controller's record. The
    sweeper's settings are read from `composition` (the command's, Hydra's node included),
    else from a multirun composition of the overrides."""
    check_sampler_choice(overrides)
    hydra = composition.hydra if composition is not None else sweep_settings(overrides)
    sweeper = hydra.sweeper
    base = PointBase(composition) if composition is not None else None
    cfg = check_trials(overrides, checked_settings(sweeper), config_dirs, Trials(base=base))
    objective = objective_of(cfg, given(overrides, "hydra.sweeper.direction"))
    sweep_dir = Path(str(hydra.sweep.dir)).expanduser().absolute()
    check_secret("hydra.sweep.dir", str(sweep_dir))
    storage = str(sweeper.storage or f"sqlite:///{sweep_dir / 'optuna.db'}")
    name = str(sweeper.study_name or sweep_dir.name)
    record = ControllerRecord(
        sweep_dir=str(sweep_dir),
        overrides=study_overrides(overrides, sweep_dir, objective, storage, name),
        implied_keys=list(implied),
        objective=objective,
        n_trials=int(sweeper.n_trials),
        n_jobs=int(sweeper.n_jobs),
        storage=storage,
        study_name=name,
        poll_s=cfg.sweep.poll_s,
    )
    return record, cfg


def submit_study(
    overrides: Sequence[str],
    implied: Sequence[str],
    config_dirs: Sequence[str],
    composition: DictConfig | None = None,
    say: Any = print,
) -> int:
    """Check, then submit the controller job (or run it here for `cluster=local`); returns at once.
    The sweep folder and what the controller writes follow `cluster.umask`."""
    record, cfg = study_record(overrides, implied, config_dirs, composition)
    with run_umask(cfg.cluster.umask):
        return start_study(record, cfg, say)


def start_study(record: ControllerRecord, cfg: HpcftConfig, say: Any) -> int:
    sweep_dir = Path(record.sweep_dir)
    what = f"{record.n_trials} trials, {record.n_jobs} at a time, {record.objective.direction} {record.objective}"
    try:
        sweep_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise UserError(f"hydra.sweep.dir: {sweep_dir} exists; runs are never overwritten") from None
    if cfg.dry_run:
        record.write()
        say(f"Dry run: nothing submitted. The controller job would run the study ({what});")
        say(f"its record is {sweep_dir / 'controller.json'}")
        return 0
    if cfg.cluster.executor is Executor.local:
        from hpcft.sweep.controller import run_controller

        record.write()
        say(f"Running the study here ({what}); sweep directory {sweep_dir}")
        say(run_controller(str(sweep_dir)))
        return 0
    submit_controller(record, cfg)
    say(f"Submitted the study {record.study_name} as controller job {record.job_id}: {what}")
    folder = shlex.quote(str(sweep_dir))
    say(f"Sweep directory: {folder}\nFollow: python -m hpcft status {folder}")
    return 0
