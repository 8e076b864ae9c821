"""Site settings of the cluster schema: each one is a submitit parameter, reaches the script
as that parameter's flag, can differ per stage, and stays data whatever its value."""

from __future__ import annotations

import inspect
import shlex
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

from hpcft.cli import main
from hpcft.config.schema import ClusterConfig, StageSite
from hpcft.configure import check, load_config
from hpcft.plan import build_pipeline
from hpcft.render import placeholder_ids, render_sbatch
from hpcft.rundir import RunLayout
from hpcft.sweep.arrays import SweepPoint, group_points

SUBMITIT_PARAMETER = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "time": "time",
    "nodes": "nodes",
    "gpus_per_node": "gpus_per_node",
    "gpu_type": "gpus_per_node",
    "gpu_request": "gres",
    "cpus_per_node": "cpus_per_task",
    "cpus": "cpus_per_task",
    "mem": "mem",
    "setup": "setup",
    "teardown": "teardown",
    "env": "setup",
    "umask": "setup",
    "python": "python",
    "srun_args": "srun_args",
    "constraint": "constraint",
    "reservation": "additional_parameters",
    "exclusive": "exclusive",
    "exclude": "exclude",
    "nodelist": "nodelist",
    "mail_type": "mail_type",
    "mail_user": "mail_user",
    "additional_parameters": "additional_parameters",
    "signal_delay_s": "signal_delay_s",
    "max_requeues": "max_num_timeout",
    "array_parallelism": "array_parallelism",
}
"""Every cluster setting that reaches Slurm, and the submitit parameter it becomes."""
HPCFT_ONLY = {
    "name", "executor", "max_nodes", "node_gpus", "gpu_mem_gb", "internet", "export_secrets",
    "max_array_size", "cpu_partition", "procs_per_node", "train", "deploy", "eval", "modules",
}  # fmt: skip
"""Settings hpcft uses itself (checks, planning), and the per-stage groups."""


def test_every_site_setting_is_a_real_submitit_parameter():
    known = set(inspect.signature(_make_sbatch_string).parameters) | set(
        inspect.signature(SlurmExecutor.__init__).parameters
    )
    names = {f.name for f in fields(ClusterConfig)} | {f.name for f in fields(StageSite)}
    assert names <= set(SUBMITIT_PARAMETER) | HPCFT_ONLY, names - set(SUBMITIT_PARAMETER) - HPCFT_ONLY
    assert set(SUBMITIT_PARAMETER.values()) <= known, set(SUBMITIT_PARAMETER.values()) - known


def scripts(*overrides: str) -> dict[str, str]:
    cfg = load_config(["model=internlm2", "cluster=8gpu", *overrides])
    pipeline = build_pipeline(check(cfg), RunLayout(Path("/runs/r")))
    ids = placeholder_ids(pipeline)
    return {s.name: render_sbatch(pipeline, s, cfg.cluster, ids) for s in pipeline.stages}


EVERY_SETTING = [
    "cluster.teardown=['echo bye']",
    "cluster.python=[/usr/bin/env,'PYTHONNOUSERSITE=1',python3]",
    "cluster.srun_args=['--cpu-bind=none','--mpi=pmix']",
    "+cluster.env.NCCL_DEBUG=INFO",
    "cluster.gpu_request=gres",
    "cluster.gpu_type=h100",
    "cluster.constraint='a100&ib'",
    "cluster.reservation=big",
    "cluster.exclusive=true",
    "cluster.exclude=node7",
    "cluster.nodelist='node[1-2]'",
    "cluster.mail_type='END,FAIL'",
    "cluster.mail_user=me@example.org",
    "+cluster.additional_parameters.licenses='scratch:1'",
]


def test_every_site_setting_reaches_the_script_as_its_flag():
    train = scripts(*EVERY_SETTING)["train"]
    for line in [
        "#SBATCH --gres=gpu:h100:8",
        "#SBATCH --constraint='a100&ib'",
        "#SBATCH --reservation=big",
        "#SBATCH --exclusive",
        "#SBATCH --exclude=node7",
        "#SBATCH --nodelist='node[1-2]'",
        "#SBATCH --mail-type=END,FAIL",
        "#SBATCH --mail-user=me@example.org",
        "#SBATCH --licenses=scratch:1",
        "export NCCL_DEBUG=INFO",
        "echo bye",
        "--cpu-bind=none --mpi=pmix /usr/bin/env PYTHONNOUSERSITE=1 python3 -u -m submitit.core._submit /runs/r/slurm",
    ]:
        assert line in train, line
    assert "--gpus-per-node" not in train


def test_each_stage_has_its_own_partition_account_resources_and_interpreter():
    out = scripts(
        "cluster.cpu_partition=cpu",
        "cluster.deploy.partition=inference",
        "cluster.deploy.python=[/envs/serve/bin/python]",
        "cluster.deploy.srun_args=['--container-image=serve.sqsh']",
        "cluster.eval.account=cpu-acct",
        "cluster.eval.cpus=4",
        "cluster.eval.mem=8G",
        "cluster.train.qos=long",
        "+cluster.deploy.env.VLLM_LOGGING_LEVEL=DEBUG",
        "cluster.train.setup=['module load cuda']",
    )
    assert "#SBATCH --partition=gpu" in out["train"] and "#SBATCH --qos=long" in out["train"]
    assert "module load cuda" in out["train"] and "module load cuda" not in out["deploy"]
    assert "#SBATCH --partition=inference" in out["deploy"]
    assert "--container-image=serve.sqsh /envs/serve/bin/python -u -m submitit" in out["deploy"]
    assert "export VLLM_LOGGING_LEVEL=DEBUG" in out["deploy"] and "VLLM_LOGGING_LEVEL" not in out["eval"]
    assert shlex.quote(sys.executable) + " -u -m submitit" in out["train"]
    assert "#SBATCH --partition=cpu" in out["eval"] and "#SBATCH --account=cpu-acct" in out["eval"]
    assert "#SBATCH --cpus-per-task=4" in out["eval"] and "#SBATCH --mem=8G" in out["eval"]
    assert "--qos" not in out["eval"]


def test_the_8gpu_server_asks_for_its_share_and_eval_for_the_cpu_partition():
    out = scripts("cluster.cpu_partition=cpu")
    deploy = out["deploy"]
    assert "#SBATCH --gpus-per-node=1" in deploy and "#SBATCH --cpus-per-task=8" in deploy
    assert "#SBATCH --mem=64000M" in deploy  # 1/8 of 500G
    assert "#SBATCH --partition=cpu" in out["eval"] and "--gpus" not in out["eval"]


def test_points_with_other_interpreters_get_arrays_of_their_own():
    points = []
    for num, python in enumerate(["[/envs/a/bin/python]", "[/envs/a/bin/python]", "[/envs/b/bin/python]"]):
        overrides = ("model=tiny_llama", "cluster=slurmlab", f"cluster.python={python}", "stages=[train]")
        cfg = load_config(list(overrides))
        points.append(SweepPoint(num, overrides, cfg, build_pipeline(check(cfg), RunLayout(Path(f"/runs/s/{num}")))))
    assert [[p.num for p in g.points] for g in group_points(points)] == [[0, 1], [2]]


@pytest.mark.parametrize(
    "override,expected",
    [
        ("+cluster.env.WANDB_API_KEY=abc", "cluster.env.WANDB_API_KEY: looks like a secret"),
        ("+cluster.env.MY_TOKEN=abc", "cluster.env.MY_TOKEN: looks like a secret"),
        ("+cluster.env.MY-VAR=a", "cluster.env.MY-VAR: is not a shell variable name"),
        ("+cluster.additional_parameters.time=5", "hpcft sets --time itself; use cluster.time"),
        ("+cluster.additional_parameters.job_name=x", "hpcft sets --job-name itself; use name"),
        ("+cluster.additional_parameters.export=NONE", "hpcft sets --export itself"),
        ("cluster.deploy.python=[]", "cluster.deploy.python: must name a command"),
        ("cluster.deploy.python=[/bin/no-such-python]", "/bin/no-such-python is not an executable file"),
        ("cluster.eval.cpus=0", "cluster.eval.cpus: must be > 0"),
        ("cluster.deploy.mem=lots", "cluster.deploy.mem: bad memory size"),
        ("cluster.gpu_request=gpus", "cluster.gpu_request"),
    ],
)
def test_bad_site_settings_are_refused_naming_the_key(override, expected, tmp_path, capsys):
    code = main(["model=tiny_llama", "cluster=slurmlab", "dry_run=true", f"run_root={tmp_path}", override])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") <= 2, err
