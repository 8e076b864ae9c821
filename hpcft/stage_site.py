"""What one stage's job asks the site for: the cluster's settings, then the stage's own.

`stage_resources` resolves, once and in the plan, everything that differs between stages
(partition, account, CPUs, memory, interpreter, srun flags, environment), so rendering,
sweep grouping and submission all read one frozen `Resources`.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass

from hpcft.config.schema import ClusterConfig, StageSite


@dataclass(frozen=True, kw_only=True)
class Resources:
    nodes: int = 1
    tasks_per_node: int = 1
    """Slurm tasks per node: one per node; the stage's own launcher starts the processes."""
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    threads: int = 1
    """CPU threads each of the job's processes may use (`OMP_NUM_THREADS`, which torch reads):
    `cpus_per_task` shared by the processes one task starts. Unset, torch gives every process
    a thread per core of the machine, and threads that outnumber their cores spin-wait."""
    time: str = "01:00:00"
    mem: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclusive: bool = False
    python: tuple[str, ...] = ()
    """The interpreter or wrapper command of this stage's job; empty: the submitting one."""
    srun_args: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    """The site's shell lines (cluster's, then the stage's)."""
    env: tuple[tuple[str, str], ...] = ()
    """The site's variables for this stage (cluster's, overridden by the stage's)."""

    @property
    def python_command(self) -> str:
        """The shell words that start Python in the script (submitit's `python`), quoted."""
        return shlex.join(self.python) if self.python else shlex.quote(sys.executable)


_MEM = re.compile(r"^([0-9]+)([KMGTkmgt]?)$")
_MB_PER = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def node_share(c: ClusterConfig, gpus: int) -> tuple[int, str | None]:
    """CPUs and memory for a job using `gpus` of a node's `node_gpus`: that share of the node
    (1 of 8 GPUs gets 1/8), so a 1-GPU server leaves the other GPUs usable; a whole node, or a
    job on a cluster without GPUs, gets all of `cpus_per_node` and `mem`."""
    if not gpus or not c.node_gpus or gpus >= c.node_gpus:
        return c.cpus_per_node, c.mem
    cpus = max(1, c.cpus_per_node * gpus // c.node_gpus)
    match = _MEM.match(c.mem or "")
    if not match:
        return cpus, c.mem
    mb = int(match.group(1)) * _MB_PER[(match.group(2) or "m").lower()]
    return cpus, f"{max(1, int(mb * gpus // c.node_gpus))}M"


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v is not None), None)


def stage_resources(
    c: ClusterConfig,
    site: StageSite,
    *,
    gpus: int,
    cpus: int,
    mem: str | None,
    time: str,
    nodes: int = 1,
    partition: str | None = None,
    exclusive: bool = False,
    processes: int = 1,
) -> Resources:
    """A stage's resources: the plan's defaults for it (`cpus`, `mem`, `partition`), the
    cluster-wide site settings, and the stage's own (`site`) over both. `processes`: how many
    processes each task starts (the train stage's launcher: one per GPU or `procs_per_node`)."""
    python = site.python if site.python is not None else c.python
    srun_args = site.srun_args if site.srun_args is not None else c.srun_args
    return Resources(
        nodes=nodes,
        gpus_per_node=gpus,
        cpus_per_task=site.cpus or cpus,
        threads=max(1, (site.cpus or cpus) // max(1, processes)),
        time=time,
        mem=site.mem or mem,
        partition=_first(site.partition, partition, c.partition),
        account=_first(site.account, c.account),
        qos=_first(site.qos, c.qos),
        constraint=_first(site.constraint, c.constraint) or None,
        exclusive=exclusive,
        python=tuple(python),
        srun_args=tuple(srun_args),
        setup=(*c.setup, *site.setup),
        env=tuple({**c.env, **site.env}.items()),
    )
