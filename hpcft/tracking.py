"""Experiment tracking (W&B) settings, passed to jobs through their environment only.

hpcft writes no secret anywhere: `WANDB_API_KEY` and `HF_TOKEN` reach a job the way every
variable of the submitting shell does (sbatch's default `--export=ALL`, or the local
executor's inherited environment), never through a script, a manifest or a native config.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpcft.config.schema import HpcftConfig
from hpcft.errors import ConfigError
from hpcft.rundir import RunLayout

SECRETS = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
"""Variables that hold credentials; see `ClusterConfig.export_secrets`."""


def report_to(cfg: HpcftConfig) -> str:
    """The frameworks' `report_to`, always explicit: an unset one may start an interactive login."""
    return "wandb" if cfg.wandb.enabled else "none"


def wandb_mode(cfg: HpcftConfig) -> str:
    return cfg.wandb.mode or ("online" if cfg.cluster.internet else "offline")


def wandb_env(cfg: HpcftConfig, layout: RunLayout, job_type: str) -> dict[str, str]:
    """Environment for a job's W&B run: project, group (the pipeline), name and job type."""
    if not cfg.wandb.enabled:
        return {"WANDB_DISABLED": "true", "WANDB_MODE": "disabled"}
    env = {
        "WANDB_PROJECT": cfg.wandb.project,
        "WANDB_RUN_GROUP": cfg.wandb.group or layout.root.name,
        "WANDB_NAME": f"{layout.root.name}.{job_type}",
        "WANDB_JOB_TYPE": job_type,
        "WANDB_DIR": str(layout.root),
        "WANDB_MODE": wandb_mode(cfg),
        "WANDB_CONSOLE": "off",
    }
    if cfg.wandb.entity:
        env["WANDB_ENTITY"] = cfg.wandb.entity
    return env


def wandb_logged_in(home: Path | None = None) -> bool:
    """Whether `wandb login` left a key in `~/.netrc` (the file W&B itself reads)."""
    path = (home or Path.home()) / ".netrc"
    try:
        hosts = netrc.netrc(str(path)).hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def check_credentials(cfg: HpcftConfig) -> None:
    """W&B online needs a key the jobs can read: in the environment they inherit, or in the
    credential file `wandb login` writes. Checked on the login node, not after hours in a queue."""
    if not cfg.wandb.enabled or wandb_mode(cfg) != "online":
        return
    in_env = cfg.cluster.export_secrets and bool(os.environ.get("WANDB_API_KEY"))
    if not in_env and not wandb_logged_in():
        where = "export WANDB_API_KEY, or run" if cfg.cluster.export_secrets else "run"
        raise ConfigError("wandb.enabled", f"W&B online needs a key: {where} `wandb login` (writes ~/.netrc)")


@contextmanager
def secrets_withheld(cfg: HpcftConfig) -> Iterator[None]:
    """With `cluster.export_secrets=false`, `sbatch` (which passes its environment on to the
    job) runs without the credential variables; they are restored afterwards."""
    saved = {} if cfg.cluster.export_secrets else {k: os.environ.pop(k) for k in SECRETS if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
