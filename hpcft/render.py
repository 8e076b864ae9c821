"""What gets submitted, rendered by pure functions.

`slurm_parameters` maps a stage onto submitit's SlurmExecutor parameters (the one
signature sbatch flags come from); `render_sbatch` turns them into the exact script text
with submitit's own renderer, which quotes every value. Dry runs and the golden-file test
use the same functions as real submissions.
"""

from __future__ import annotations

import re
import shlex
import sys
from typing import Any

from submitit.slurm.slurm import _make_sbatch_string

from hpcft.config.schema import ClusterConfig
from hpcft.plan import Pipeline, Stage

_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+)(?::(?P<s>\d+))?$")


def time_to_minutes(value: str) -> int:
    """Slurm time (`M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`) in whole minutes, rounded up."""
    value = str(value)
    if value.isdigit():
        return int(value)
    days, _, rest = value.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        h, m, s = [*parts, 0, 0][:3]
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts
    total_s = ((int(days or 0) * 24 + h) * 60 + m) * 60 + s
    return -(-total_s // 60)


def job_env(cluster: ClusterConfig) -> dict[str, str]:
    """Environment every job gets: offline modes where compute nodes have no internet."""
    env = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not cluster.internet:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def setup_lines(cluster: ClusterConfig) -> list[str]:
    """The cluster's own setup lines (shell by design), then hpcft's exports, each value quoted."""
    exports = [f"export {key}={shlex.quote(value)}" for key, value in job_env(cluster).items()]
    return [*cluster.setup, *exports]


def dependency_string(stage: Stage, job_ids: dict[str, str]) -> str | None:
    """`afterok:<id>,after:<id>` (all must hold) from the ids of the stages already submitted."""
    if not stage.after:
        return None
    return ",".join(f"{d.kind}:{job_ids[d.stage]}" for d in stage.after)


def slurm_parameters(
    pipeline: Pipeline, stage: Stage, cluster: ClusterConfig, job_ids: dict[str, str]
) -> dict[str, Any]:
    """SlurmExecutor parameters of one stage; `job_ids` holds the ids (or placeholders) of earlier stages."""
    r = stage.resources
    params: dict[str, Any] = {
        "job_name": f"{pipeline.run_name}.{stage.name}",
        "time": time_to_minutes(r.time),
        "nodes": r.nodes,
        "ntasks_per_node": r.tasks_per_node,
        "cpus_per_task": r.cpus_per_task,
        "signal_delay_s": cluster.signal_delay_s,
        "setup": setup_lines(cluster),
    }
    if r.gpus_per_node:
        params["gpus_per_node"] = f"{cluster.gpu_type}:{r.gpus_per_node}" if cluster.gpu_type else r.gpus_per_node
    for key, value in (
        ("partition", r.partition or cluster.partition),
        ("account", cluster.account),
        ("qos", cluster.qos),
        ("mem", r.mem),
    ):
        if value:
            params[key] = value
    dependency = dependency_string(stage, job_ids)
    if dependency:
        params["dependency"] = dependency
        # Without this a failed upstream job leaves dependents pending forever.
        params["additional_parameters"] = {"kill-on-invalid-dep": "yes"}
    return params


def submitit_command(folder: str) -> str:
    """The command submitit puts in every script (the same text SlurmExecutor builds)."""
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(folder)])


def render_sbatch(pipeline: Pipeline, stage: Stage, cluster: ClusterConfig, job_ids: dict[str, str]) -> str:
    params = slurm_parameters(pipeline, stage, cluster, job_ids)
    folder = str(pipeline.layout.slurm)
    return _make_sbatch_string(command=submitit_command(folder), folder=folder, **params)


def placeholder_ids(pipeline: Pipeline) -> dict[str, str]:
    """Stand-ins for job ids in a dry run: `<train>` etc."""
    return {s.name: f"<{s.name}>" for s in pipeline.stages}


def dependency_graph(pipeline: Pipeline) -> str:
    """One line per stage: `eval  <- afterok:train, after:deploy`."""
    lines = []
    for s in pipeline.stages:
        deps = ", ".join(f"{d.kind}:{d.stage}" for d in s.after) or "(none)"
        lines.append(f"{s.name:<7} <- {deps}")
    return "\n".join(lines)
