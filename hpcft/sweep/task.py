"""What hpcft's launcher plugin is told by the app that runs the multirun: a typed object,
so a misspelt setting is an error, not a silent default. Light (no Hydra, no hpcft config):
Hydra imports the plugin, and with it this module, in every app that scans its plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpcft.errors import ForeignAppError

if TYPE_CHECKING:
    from hpcft.study import Objective


@dataclass(frozen=True, kw_only=True)
class LauncherSettings:
    """How the launcher treats the multirun's points."""

    implied_keys: tuple[str, ...] = ()
    """Keys hpcft added to the user's overrides (the launcher keeps them out of
    `${hydra.job.override_dirname}`)."""
    objective: Objective | None = None
    """Set in an adaptive sweep's controller: the launcher waits for each point's pipeline
    and returns this metric to the sweeper."""
    first_num: int = 0
    """The `hydra.job.num` of this multirun's first point: a restarted controller numbers its
    trials after those run before."""
    first_batch: int = 0
    """The sweep's batches launched before this multirun (a restarted controller's)."""
    before_batch: Callable[[], object] | None = None
    """Called before each batch is launched (the controller records the study so far)."""


class PipelineTask:
    """The task function Hydra is given. Hydra's launchers call it per job; hpcft's launcher
    submits each point's pipeline instead, configured by `settings`."""

    def __init__(self, settings: LauncherSettings | None = None) -> None:
        self.settings = settings or LauncherSettings()
        """What the launcher plugin reads."""

    def __call__(self, cfg: object) -> None:
        raise AssertionError("hpcft's launcher submits pipelines; it does not call the task function")


def launcher_settings(task_function: object) -> LauncherSettings:
    """The settings of hpcft's own task; another app's task function is refused."""
    if not isinstance(task_function, PipelineTask):
        raise ForeignAppError(
            "hydra/launcher=hpcft submits hpcft's own fine-tuning pipelines (python -m hpcft -m ...);"
            " it cannot run another app's task function: use another launcher for this app"
        )
    return task_function.settings
