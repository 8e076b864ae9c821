"""`hydra/launcher=hpcft`: a multirun becomes Slurm job arrays, and the command returns.

Hydra's launcher contract: each job gets its overrides, `hydra.job.num` and its own output
folder (`${hydra.sweep.dir}/${hydra.sweep.subdir}`), which here is the point's run directory.
Every point is composed, typed and validated before anything is submitted; then
`hpcft.sweep` submits one array per stage and resource shape. With `cluster=local` the
points run one after another on this machine instead.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering
# them in sys.modules, and dataclasses cannot resolve string annotations there.
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict


@dataclass
class HpcftLauncherConf:
    _target_: str = "hydra_plugins.hpcft_launcher.hpcft_launcher.HpcftLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="hpcft", node=HpcftLauncherConf, provider="hpcft")


class HpcftLauncher(Launcher):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # The task function is not called: each point's work is its pipeline of jobs.
        self.config = config
        self.hydra_context = hydra_context

    def _point_config(self, overrides: Sequence[str], num: int) -> tuple[Any, Path]:
        from hpcft.config.compose import to_typed

        assert self.config is not None and self.hydra_context is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.num = num
            sweep_config.hydra.job.id = str(num)
        out_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        with open_dict(sweep_config):
            sweep_config.pop("hydra")
        return to_typed(sweep_config), out_dir

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
