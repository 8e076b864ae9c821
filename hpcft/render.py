"""What gets submitted, rendered by pure functions.

`slurm_parameters` maps a stage onto submitit's SlurmExecutor parameters (the one
signature sbatch flags come from); `render_sbatch` turns them into the exact script text
with submitit's own renderer, which quotes every value. Dry runs and the golden-file test
use the same functions as real submissions.
"""

from __future__ import annotations

import shlex
from typing import Any

from submitit.slurm.slurm import _make_sbatch_string

from hpcft.config.schema import ClusterConfig, GpuRequest
from hpcft.plan import Pipeline, Stage
from hpcft.rundir import umask_line
from hpcft.stage_site import Resources


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


def setup_lines(cluster: ClusterConfig, resources: Resources) -> list[str]:
    """The run's umask (so every file the job writes follows `cluster.umask`), the site's
    setup lines (shell by design), then the exports of hpcft's and the site's variables,
    each value quoted."""
    env = {**job_env(cluster), **dict(resources.env)}
    exports = [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    if "OMP_NUM_THREADS" not in env:  # the job's CPUs per process, unless its environment says otherwise
        exports.insert(0, f'export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-{int(resources.threads)}}}"')
    return [umask_line(cluster.umask), *resources.setup, *exports]


def dependency_string(stage: Stage, job_ids: dict[str, str]) -> str | None:
    """`afterok:<id>,after:<id>` (all must hold) from the ids of the stages already submitted."""
    if not stage.after:
        return None
    return ",".join(f"{d.kind}:{job_ids[d.stage]}" for d in stage.after)


SITE_PARAMETERS = ("teardown", "exclude", "nodelist", "mail_type", "mail_user")
"""Cluster settings passed to submitit unchanged: they have submitit's own parameter names
(the per-stage ones come resolved in `Resources`)."""


def gpu_parameters(cluster: ClusterConfig, gpus: int) -> dict[str, Any]:
    """`--gpus-per-node=[type:]N`, or `--gres=gpu:[type:]N` where the site wants that form."""
    if not gpus:
        return {}
    typed = f"{cluster.gpu_type}:{gpus}" if cluster.gpu_type else gpus
    if cluster.gpu_request is GpuRequest.gres:
        return {"gres": f"gpu:{typed}"}
    return {"gpus_per_node": typed}


def site_parameters(cluster: ClusterConfig, r: Resources) -> dict[str, Any]:
    """The site's scheduling settings for one stage, as submitit parameters."""
    params: dict[str, Any] = {k: getattr(cluster, k) for k in SITE_PARAMETERS if getattr(cluster, k)}
    params["srun_args"] = list(r.srun_args)
    for key, value in (
        ("partition", r.partition),
        ("account", r.account),
        ("qos", r.qos),
        ("mem", r.mem),
        ("constraint", r.constraint),
    ):
        if value:
            params[key] = value
    if r.exclusive:
        params["exclusive"] = True
    extra = dict(cluster.additional_parameters)
    if cluster.reservation:
        extra["reservation"] = cluster.reservation
    if extra:
        params["additional_parameters"] = extra
    return params


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
        "setup": setup_lines(cluster, r),
        **gpu_parameters(cluster, r.gpus_per_node),
        **site_parameters(cluster, r),
    }
    with_dependency(params, dependency_string(stage, job_ids))
    return params


def with_dependency(params: dict[str, Any], dependency: str | None) -> None:
    """Set (or drop) a job's dependency. Without `kill-on-invalid-dep` a failed upstream job
    leaves its dependents pending forever."""
    extra = {k: v for k, v in params.pop("additional_parameters", {}).items() if k != "kill-on-invalid-dep"}
    params.pop("dependency", None)
    if dependency:
        params["dependency"] = dependency
        extra["kill-on-invalid-dep"] = "yes"
    if extra:
        params["additional_parameters"] = extra


def submitit_command(folder: str, python: str) -> str:
    """The command submitit puts in every script (the same text SlurmExecutor builds from its
    `python`)."""
    return " ".join([python, "-u -m submitit.core._submit", shlex.quote(folder)])


def render_sbatch(pipeline: Pipeline, stage: Stage, cluster: ClusterConfig, job_ids: dict[str, str]) -> str:
    params = slurm_parameters(pipeline, stage, cluster, job_ids)
    folder = str(pipeline.layout.slurm)
    command = submitit_command(folder, stage.resources.python_command)
    return _make_sbatch_string(command=command, folder=folder, **params)


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
