"""`deploy.placement`: what may run deploy and eval inside the train job's allocation.

`after_train` runs the three stages as one Slurm job (hpcft.jobs.allocation): the train
job's resources, setup lines and environment serve all three, its interpreter trains and
evaluates, and the server runs in the deploy stage's (`cluster.deploy.python`). What needs a job
of its own, or a setting that a job shared with training cannot honour, is refused here.
"""

from __future__ import annotations

from hpcft.config.checks import check_choice
from hpcft.config.schema import Executor, HpcftConfig, StageName
from hpcft.errors import ConfigError

PLACEMENTS = ("own_job", "after_train")
KEY = "deploy.placement"


def validate_placement(cfg: HpcftConfig) -> None:
    check_choice(KEY, cfg.deploy.placement, PLACEMENTS)
    if cfg.deploy.placement != "after_train":
        return
    refusal = placement_refusal(cfg) or stage_site_refusal(cfg)
    if refusal:
        raise ConfigError(KEY, f"after_train: {refusal}")


def placement_refusal(cfg: HpcftConfig) -> str | None:
    """Why the pipeline cannot run in the train job's allocation, or None."""
    c, d = cfg.cluster, cfg.deploy
    if c.executor is Executor.local:
        return "the local executor runs the stages one after another on this machine already; use own_job"
    if list(cfg.stages) != list(StageName):
        return "it runs deploy and eval in the train job; set stages=[train,deploy,eval]"
    if d.keep_serving:
        return "deploy.keep_serving would hold the whole train allocation until its time limit; drop one"
    if cfg.eval.encode == "local":
        return "eval.encode=local plans no server to place; drop one"
    if d.gpus is not None and d.gpus > c.gpus_per_node:
        return f"deploy.gpus={d.gpus} exceed the train job's {c.gpus_per_node} GPUs per node"
    return None


def stage_site_refusal(cfg: HpcftConfig) -> str | None:
    """A `cluster.deploy` / `cluster.eval` setting the train job cannot honour, or None."""
    c = cfg.cluster
    train_python = c.train.python if c.train.python is not None else c.python
    if c.eval.python is not None and c.eval.python != train_python:
        return "cluster.eval.python differs from the train job's interpreter, which runs the eval"
    for name, site in (("deploy", c.deploy), ("eval", c.eval)):
        for field in ("partition", "account", "qos", "constraint", "srun_args"):
            if getattr(site, field):
                return f"cluster.{name}.{field} applies to a job of its own; the train job's is used"
        if site.setup or site.env:
            return f"cluster.{name}.{'setup' if site.setup else 'env'} applies to a job of its own"
    return None


def refuse_in_sweep(cfg: HpcftConfig) -> None:
    """Sweeps and studies keep `own_job`: their points share a server, and their results and
    objectives are read from each point's eval job."""
    if cfg.deploy.placement == "after_train":
        raise ConfigError(KEY, "after_train runs one run's pipeline in its train job; sweeps and studies use own_job")
