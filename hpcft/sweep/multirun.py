"""Running a Hydra multirun of hpcft's app without `@hydra.main`: on the login node for a
basic sweep (`python -m hpcft -m ...`), and inside the controller job of an adaptive one.

Private, because Hydra has no public API to run a multirun without `@hydra.main` reading
`sys.argv`: `Hydra.create_main_hydra2(...).multirun(...)` is what `@hydra.main` itself
calls, and `compose_config(..., RunMode.MULTIRUN)` is what it composes the sweep's config
with. hydra-core is pinned to 1.3.x, and tests/test_architecture.py fails if they change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from hpcft.config.compose import SHIPPED, Primary, register_all_schemas
from hpcft.configure import hydra_error
from hpcft.errors import UserError
from hpcft.sweep.task import PipelineTask


@contextmanager
def hydra_app(primary: Primary = SHIPPED) -> Iterator[Hydra]:
    """Hydra's app for hpcft's `conf/` (or `-cp`'s folder); its errors as one line."""
    register_all_schemas()
    GlobalHydra.instance().clear()
    try:
        yield Hydra.create_main_hydra2(
            task_name="hpcft", config_search_path=create_config_search_path(primary.folder())
        )
    except UserError:
        raise
    except (HydraException, OmegaConfBaseException) as e:
        raise hydra_error(e) from None
    finally:
        GlobalHydra.instance().clear()


def run_multirun(overrides: Sequence[str], task: PipelineTask, primary: Primary = SHIPPED) -> None:
    """The sweep, as `@hydra.main` with `-m` would run it: Hydra's sweeper, hpcft's launcher
    (the primary config `-cn` names, in `-cp`'s folder, where given)."""
    with hydra_app(primary) as app:
        app.multirun(config_name=primary.name, task_function=task, overrides=list(overrides))


def sweep_settings(overrides: Sequence[str]) -> DictConfig:
    """The sweep's `hydra` node as the multirun will compose it (the sweeper's settings)."""
    with hydra_app() as app:
        cfg = app.compose_config("hpcft", list(overrides), run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        hydra: DictConfig = cfg.hydra
        return hydra
