"""`hydra/launcher=hpcft`: a multirun becomes Slurm job arrays, and the command returns.

Hydra's launcher contract, kept: each job gets its overrides, `hydra.job.num`/`id`/`name`
and its own output folder, `${hydra.sweep.dir}/${hydra.sweep.subdir}` resolved for the point
(`${hydra.job.override_dirname}` and the like included), which here is the point's run
directory, with Hydra's `.hydra/` record in it. Callbacks' `on_job_start`/`on_job_end` run
here as each batch is submitted. Every point is composed and typed, then `hpcft.sweep.launch`
validates, plans and submits them (one array per stage and resource shape). The task
function is never called: each point's work is its pipeline of jobs, so the launcher only
takes `python -m hpcft -m ...`, hpcft's own app.

Composition is what a sweep's submit time went into (about 0.1 s per Hydra composition), so
points that differ only in values (`framework.learning_rate=...`) are derived from one
composition of their config groups (`hpcft.sweep.points`, `hpcft.sweep.derive`): the values
applied by the function Hydra itself applies them with at the end of a composition, each
point typed and checked on its own. `hydra/sweeper=hpcft` is Hydra's basic sweeper without
its own trial composition of every point, which this launcher does anyway before submitting.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering
# them in sys.modules, and dataclasses cannot resolve string annotations there.
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

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
        first = self.launcher.settings.first_num + len(batch)
        for i, overrides in enumerate(o for b in later for o in b):
            self.launcher.check(overrides, first + i)


class HpcftLauncher(Launcher):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.settings = LauncherSettings()
        self._points_maker: Any = None
        self._batches = 0
        self._started: dict[int, DictConfig] = {}
        """Each point's whole config, as callbacks' `on_job_start` got it (`on_job_end` gets it too)."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.settings = launcher_settings(task_function)
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _maker(self) -> Any:
        """The points' maker, made once the sweep's config is known (it imports hpcft's config)."""
        if self._points_maker is None:
            from hpcft.sweep.points import PointMaker

            assert self.config is not None and self.hydra_context is not None
            self._points_maker = PointMaker(self.config, self.hydra_context.config_loader, self.settings.implied_keys)
        return self._points_maker

    def check(self, overrides: Sequence[str], num: int) -> None:
        """Compose, type and validate a point without launching it (a later batch's)."""
        from hpcft.configure import validate_config

        validate_config(self._maker().make(overrides, num).cfg)

    def _point(self, overrides: Sequence[str], num: int) -> Any:
        assert self.config is not None and self.hydra_context is not None
        on_start = None
        if self.config.hydra.callbacks:  # building their config costs a copy of the whole point
            hydra_context, task = self.hydra_context, self.task_function
            assert task is not None

            def on_start(config: DictConfig) -> None:
                self._started[num] = copy.deepcopy(config)
                hydra_context.callbacks.on_job_start(config=self._started[num], task_function=task)

        return self._maker().make(overrides, num, on_start)

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
            if self.config.hydra.callbacks:  # as Hydra's run_job: the point's config, and in its return
                config = self._started.pop(first + i, self.config)
                _with_configs(ret, config)
                self.hydra_context.callbacks.on_job_end(config=config, job_return=ret)
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


def _with_configs(ret: JobReturn, config: DictConfig) -> None:
    """`cfg` (the point's config without Hydra's node) and `hydra_cfg`, as Hydra's jobs return them."""
    task_cfg = copy.deepcopy(config)
    with open_dict(task_cfg):
        hydra = task_cfg.pop("hydra", None)
    ret.cfg = task_cfg
    ret.hydra_cfg = OmegaConf.create({"hydra": hydra})


def _trial_failed(why: str) -> Exception:
    from hpcft.sweep.controller import TrialFailed

    return TrialFailed(why)
