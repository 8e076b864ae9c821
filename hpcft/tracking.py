"""Experiment tracking (W&B) settings, passed to jobs through their environment only.

hpcft writes no secret anywhere: `WANDB_API_KEY` and `HF_TOKEN` reach a job the way every
variable of the submitting shell does (sbatch's default `--export=ALL`, or the local
executor's inherited environment), never through a script, a manifest or a native config.
"""

from __future__ import annotations

from hpcft.config.schema import HpcftConfig
from hpcft.rundir import RunLayout


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
