"""`hydra/launcher=hpcft`: a multirun becomes Slurm job arrays, and the command returns.

Hydra's launcher contract: each job gets its overrides, `hydra.job.num` and its own output
folder (`${hydra.sweep.dir}/${hydra.sweep.subdir}`), which here is the point's run directory.
Every point is composed, typed and validated before anything is submitted; then
`hpcft.sweep` submits one array per stage and resource shape. With `cluster=local` the
points run one after another on this machine instead.

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

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import ConfigCompositionException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict


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
        """Skipped: hpcft's launcher composes and validates every point before submitting any."""


# Top-level config fields that hold values, not config groups (`trainset=...`).
VALUE_FIELDS = frozenset({"trainset", "evalset", "stages", "name", "run_root", "dry_run", "seed"})


def split_overrides(overrides: Sequence[str]) -> tuple[tuple[str, ...], list[Override]]:
    """Overrides that choose config groups (composed) and those that only set values (applied)."""
    groups, values = [], []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
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
        self._composed: dict[tuple[str, ...], DictConfig] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # The task function is not called: each point's work is its pipeline of jobs.
        self.config = config
        self.hydra_context = hydra_context

    def _point_config(self, overrides: Sequence[str], num: int) -> tuple[Any, Path]:
        """The point's typed config and its run directory, `<sweep dir>/<num>` (the
        `hydra.sweep.subdir=${hydra.job.num}` that `hpcft.cli.sweep` sets)."""
        from hpcft.config.compose import hydra_error, to_typed

        groups, values = split_overrides(overrides)
        point_config = copy.deepcopy(self._composition(groups))
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, point_config)
        except ConfigCompositionException as e:
            raise hydra_error(e) from None
        assert self.config is not None
        return to_typed(point_config), Path(str(self.config.hydra.sweep.dir)) / str(num)

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

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hpcft.cli.sweep import launch_points

        points = []
        for i, overrides in enumerate(job_overrides):
            num = initial_job_idx + i
            cfg, out_dir = self._point_config(overrides, num)
            points.append((num, tuple(filter_overrides(overrides)), cfg, out_dir))
        assert self.config is not None
        run_dirs = launch_points(points, Path(str(self.config.hydra.sweep.dir)))
        returns = []
        for (_, overrides, _, _), run_dir in zip(points, run_dirs, strict=True):
            ret = JobReturn(
                overrides=list(overrides), working_dir=str(run_dir), task_name="hpcft", status=JobStatus.COMPLETED
            )
            ret.return_value = str(run_dir)
            returns.append(ret)
        return returns
