"""`hydra/launcher=hpcft`: a multirun becomes Slurm job arrays, and the command returns.

Hydra's launcher contract, kept: each job gets its overrides, `hydra.job.num`/`id`/`name`
and its own output folder, `${hydra.sweep.dir}/${hydra.sweep.subdir}` resolved for the point
(`${hydra.job.override_dirname}` and the like included), which here is the point's run
directory, with Hydra's `.hydra/` record in it. Callbacks' `on_job_start`/`on_job_end` run
here as each batch is submitted. Every point is composed and typed, then `hpcft.sweep.launch`
validates, plans and submits them (one array per stage and resource shape). The task
function is never called: each point's work is its pipeline of jobs, so the launcher only
takes `python -m hpcft -m ...`, hpcft's own app.

Composition is what a sweep's submit time goes into (about 0.1 s per Hydra composition), so
points that differ only in values (`framework.learning_rate=...`) share one composition of
their config groups, and the values are applied by the function Hydra itself applies them
with at the end of a composition. `hydra/sweeper=hpcft` is Hydra's basic sweeper without
its own trial composition of every point, which this launcher does anyway before submitting.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering
# them in sys.modules, and dataclasses cannot resolve string annotations there.
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import ConfigCompositionException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hpcft.errors import UserError
from hpcft.sweep.task import LauncherSettings, launcher_settings


@dataclass
class HpcftLauncherConf:
    _target_: str = "hydra_plugins.hpcft_launcher.hpcft_launcher.HpcftLauncher"


@dataclass
class HpcftSweeperConf:
    _target_: str = "hydra_plugins.hpcft_launcher.hpcft_launcher.HpcftSweeper"
    max_batch_size: Any = None
    params: Any = None


ConfigStore.instance().store(group="hydra/launcher", name="hpcft", node=HpcftLauncherConf, provider="hpcft")
ConfigStore.instance().store(group="hydra/sweeper", name="hpcft", node=HpcftSweeperConf, provider="hpcft")


class HpcftSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """hpcft's launcher composes and validates every point of a batch before submitting
        any. A sweep in several batches (`max_batch_size`) is all or nothing too: before the
        first batch, the points of the later ones are checked the same way."""
        later = self.overrides[self.batch_index :] if self.overrides and self.batch_index == 1 else []
        assert isinstance(self.launcher, HpcftLauncher)
        for overrides in (o for b in later for o in b):
            self.launcher.check(overrides)


# Top-level config fields that hold values, not config groups (`trainset=...`).
VALUE_FIELDS = frozenset({"trainset", "evalset", "stages", "name", "run_root", "dry_run", "seed"})


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


class HpcftLauncher(Launcher):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.settings = LauncherSettings()
        self._composed: dict[tuple[str, ...], DictConfig] = {}
        self._hydra_plain: dict[str, Any] | None = None
        self._folders_use_hydra_resolver = False
        self._batches = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.settings = launcher_settings(task_function)
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        # `hydra.sweep.dir`/`subdir` as written: do they need the `${hydra:...}` resolver?
        self._folders_use_hydra_resolver = "${hydra:" in str(OmegaConf.to_container(config.hydra.sweep))

    def _typed(self, parsed: Sequence[Override]) -> tuple[Any, DictConfig]:
        """The point's typed config, and its composition (what `.hydra/config.yaml` holds)."""
        from hpcft.configure import hydra_error, typed_config

        groups, values = split_overrides(parsed)
        point_config = copy.deepcopy(self._composition(groups))
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, point_config)
        except ConfigCompositionException as e:
            raise hydra_error(e) from None
        return typed_config(point_config), point_config

    def _composition(self, groups: tuple[str, ...]) -> DictConfig:
        """The composition of these group overrides, without Hydra's own node (copying that
        for every point would cost more than the rest of the point)."""
        if groups not in self._composed:
            assert self.config is not None and self.hydra_context is not None
            composed = self.hydra_context.config_loader.load_sweep_config(self.config, list(groups))
            with open_dict(composed):
                composed.pop("hydra")
            self._composed[groups] = composed
        return self._composed[groups]

    def check(self, overrides: Sequence[str]) -> None:
        """Compose, type and validate a point without launching it (a later batch's)."""
        from hpcft.configure import validate_config

        validate_config(self._typed(OverridesParser.create().parse_overrides(list(overrides)))[0])

    def _job_node(self, parsed: Sequence[Override], num: int) -> DictConfig:
        """The sweep's config with its `hydra.job` and `hydra.overrides` set for this point, as
        Hydra's own launchers set them. One node is updated point after point (a copy per
        point would cost more than the point), and made current for `${hydra:...}` only where
        the sweep folders use that resolver (that costs a copy too)."""
        assert self.config is not None
        hydra = self.config.hydra
        app = [o for o in parsed if not o.is_hydra_override()]
        written = [o for o in app if o.key_or_group not in self.settings.implied_keys]
        dirname = hydra.job.config.override_dirname
        with read_write(hydra), open_dict(hydra):
            hydra.job.num = num
            hydra.job.id = num  # as Hydra's own launchers before submission; Slurm's ids are in manifest.json
            hydra.overrides.task = [o.input_line for o in app]
            hydra.job.override_dirname = get_overrides_dirname(
                overrides=written,
                exclude_keys=list(dirname.exclude_keys),
                item_sep=dirname.item_sep,
                kv_sep=dirname.kv_sep,
            )
        if self._folders_use_hydra_resolver:
            HydraConfig.instance().set_config(self.config)
        return self.config

    def _hydra_record(self, config: DictConfig, run_dir: Path) -> dict[str, Any]:
        """What `.hydra/hydra.yaml` holds: the sweep's Hydra node, converted once, with this
        point's job fields (it is written before the next point changes them)."""
        if self._hydra_plain is None:
            converted = OmegaConf.to_container(config.hydra, resolve=False, enum_to_str=True)
            assert isinstance(converted, dict)
            self._hydra_plain = {str(k): v for k, v in converted.items()}
        plain = self._hydra_plain
        assert plain is not None
        job = OmegaConf.to_container(config.hydra.job, resolve=False)  # as written: `${...}` stays
        assert isinstance(job, dict)
        plain["job"].update(num=job["num"], id=str(job["id"]), override_dirname=job["override_dirname"])
        plain["overrides"]["task"] = self._task_overrides(config)
        plain["runtime"]["output_dir"] = str(run_dir)
        return {"hydra": plain}

    @staticmethod
    def _task_overrides(config: DictConfig) -> list[str]:
        """The point's overrides as the user wrote them (iterating the node would resolve them)."""
        task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        assert isinstance(task, list)
        return [str(o) for o in task]

    def _point(self, overrides: Sequence[str], num: int) -> Any:
        from hpcft.rundir import yaml_text
        from hpcft.sweep.launch import PointConfig

        parsed = OverridesParser.create().parse_overrides(list(overrides))
        cfg, composed = self._typed(parsed)
        config = self._job_node(parsed, num)
        sweep_dir = Path(str(config.hydra.sweep.dir)).expanduser().absolute()
        run_dir = sweep_dir / str(OmegaConf.select(config, "hydra.sweep.subdir"))
        files = {}
        if config.hydra.output_subdir is not None:
            sub = str(config.hydra.output_subdir)
            files = {
                f"{sub}/config.yaml": yaml_text(OmegaConf.to_container(composed, resolve=False, enum_to_str=True)),
                f"{sub}/hydra.yaml": yaml_text(self._hydra_record(config, run_dir)),
                f"{sub}/overrides.yaml": yaml_text(self._task_overrides(config)),
            }
        self._job_started(composed)
        return PointConfig(
            num=num, overrides=tuple(filter_overrides(overrides)), cfg=cfg, run_dir=run_dir, hydra_files=files
        )

    def _job_started(self, composed: DictConfig) -> None:
        """Callbacks' `on_job_start`, with the point's config and Hydra node, where there are
        callbacks (building that config costs a copy of the Hydra node)."""
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        if self.config.hydra.callbacks:
            self.hydra_context.callbacks.on_job_start(
                config=self._with_hydra(composed), task_function=self.task_function
            )

    def _with_hydra(self, composed: DictConfig) -> DictConfig:
        assert self.config is not None
        full = copy.deepcopy(composed)
        with open_dict(full):
            full.hydra = copy.deepcopy(self.config.hydra)
        return full

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hpcft.sweep.launch import launch_sweep

        assert self.config is not None and self.hydra_context is not None
        first = self.settings.first_num + initial_job_idx
        if self.settings.before_batch is not None:
            self.settings.before_batch()
        points, refused = self._points(job_overrides, first)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).expanduser().absolute()
        run_dirs = launch_sweep(points, sweep_dir, batch=self.settings.first_batch + self._batches)
        self._batches += 1
        results = iter(zip(points, run_dirs, self._objectives(points, run_dirs), strict=True))
        returns = []
        for i, overrides in enumerate(job_overrides):
            # a study's trial whose config is refused has failed, and the study goes on
            ret = _job_return(overrides, "", refused[i]) if i in refused else _job_return(*next(results))
            if self.config.hydra.callbacks:
                self.hydra_context.callbacks.on_job_end(config=self.config, job_return=ret)
            returns.append(ret)
        return returns

    def _points(self, job_overrides: Sequence[Sequence[str]], first: int) -> tuple[list[Any], dict[int, Exception]]:
        """Each job's point. In an adaptive sweep's controller, a trial whose config is refused
        (values the login node could not check together) is no point but a failed trial."""
        from hpcft.configure import validate_config

        adaptive = self.settings.objective is not None
        points, refused = [], {}
        for i, overrides in enumerate(job_overrides):
            try:
                point = self._point(overrides, first + i)
                if adaptive:
                    validate_config(point.cfg)
                points.append(point)
            except UserError as e:
                if not adaptive:
                    raise
                print(f"controller: trial {first + i} refused before submitting: {e}", flush=True)
                refused[i] = _trial_failed(f"trial {first + i}: {e}")
        return points, refused

    def _objectives(self, points: Sequence[Any], run_dirs: Sequence[Path]) -> Sequence[Any]:
        """In an adaptive sweep's controller, each point's objective (or why it has none), once
        its pipeline has ended; else nothing to wait for: a basic sweep returns at once."""
        objective = self.settings.objective
        if objective is None or not points:
            return [None] * len(points)
        from hpcft.sweep.controller import await_objectives

        return await_objectives(run_dirs, objective, poll_s=points[0].cfg.sweep.poll_s)


def _job_return(point_or_overrides: Any, run_dir: Path | str, result: Any) -> JobReturn:
    """A job's return: its run directory, or (a study's trial) its objective value or why it
    has none; an exception is a failure the sweeper tells the study."""
    overrides = getattr(point_or_overrides, "overrides", point_or_overrides)
    ret = JobReturn(overrides=list(overrides), working_dir=str(run_dir), task_name="hpcft", status=JobStatus.COMPLETED)
    ret.return_value = str(run_dir) if result is None else result
    if isinstance(result, Exception):
        ret.status = JobStatus.FAILED
    return ret


def _trial_failed(why: str) -> Exception:
    from hpcft.sweep.controller import TrialFailed

    return TrialFailed(why)
