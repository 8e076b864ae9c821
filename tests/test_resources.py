"""Batch layout and memory fit: derived on the login node, shown before submitting."""

from __future__ import annotations

import pytest

from hpcft.cli import main
from hpcft.configure import check, load_config
from hpcft.resources import batch_layout


def test_global_batch_size_derives_accumulation_for_any_cluster_size():
    for cluster, accumulation in (("8gpu", 8), ("2x8gpu", 4)):
        cfg = load_config(
            [
                "model=llama3_8b",
                f"cluster={cluster}",
                "framework.global_batch_size=128",
                "framework.per_device_train_batch_size=2",
            ]
        )
        layout = batch_layout(cfg)
        assert layout.accumulation == accumulation and layout.global_batch == 128


def test_without_global_batch_size_the_configured_accumulation_holds():
    cfg = load_config(["model=llama3_8b", "cluster=2x8gpu", "framework.gradient_accumulation_steps=3"])
    assert batch_layout(cfg).accumulation == 3 and batch_layout(cfg).global_batch == 48


def test_derived_accumulation_reaches_the_native_config_and_is_printed(run_root, capsys):
    args = [
        "model=llama3_8b",
        "cluster=2x8gpu",
        "framework.global_batch_size=64",
        "framework.per_device_train_batch_size=1",  # given: else hpcft fills the GPU (test_chosen_batch)
        "dry_run=true",
        f"run_root={run_root}",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "global batch 64 = 16 processes x 1 per device x 4 accumulation steps" in out
    (run,) = run_root.iterdir()
    assert "gradient_accumulation_steps: 4" in (run / "native" / "train.yaml").read_text()


@pytest.mark.parametrize(
    "overrides,hint",
    [
        (["framework.finetuning_type=full"], "try deepspeed=zero2"),
        (["cluster.gpu_mem_gb=12"], "try deepspeed=zero3"),
        (["framework.finetuning_type=full", "cluster.gpu_mem_gb=8"], "try deepspeed=zero3_offload"),
    ],
)
def test_a_job_that_cannot_fit_is_refused_with_what_would(overrides, hint, run_root, capsys):
    assert main(["model=llama3_8b", "cluster=8gpu", f"run_root={run_root}", *overrides]) == 2
    err = capsys.readouterr().err
    assert "cluster.gpu_mem_gb: llama3_8b (8.0B" in err and hint in err


def test_global_batch_size_that_does_not_divide(run_root, capsys):
    assert main(["model=llama3_8b", "cluster=8gpu", "framework.global_batch_size=100", f"run_root={run_root}"]) == 2
    assert "framework.global_batch_size: 100 is not a multiple of 8 processes" in capsys.readouterr().err


def test_a_one_gpu_server_asks_for_its_share_of_the_node_and_eval_for_the_cpu_partition():
    from pathlib import Path

    from hpcft.configure import load_config
    from hpcft.plan import build_pipeline
    from hpcft.rundir import RunLayout

    cfg = load_config(["model=internlm2", "cluster=8gpu", "cluster.cpu_partition=cpu"])
    stages = {s.name: s.resources for s in build_pipeline(check(cfg), RunLayout(Path("/runs/r"))).stages}
    assert (stages["deploy"].gpus_per_node, stages["deploy"].cpus_per_task, stages["deploy"].mem) == (1, 8, "64000M")
    assert (stages["train"].cpus_per_task, stages["train"].mem) == (64, "500G")  # the whole node
    assert stages["eval"].partition == "cpu" and stages["deploy"].partition == "gpu"


def test_node_share_of_memory_units():
    from hpcft.configure import load_config
    from hpcft.stage_site import node_share

    c = load_config(["model=internlm2", "cluster=8gpu", "cluster.mem=1T", "cluster.cpus_per_node=4"]).cluster
    assert node_share(c, 2) == (1, "262144M") and node_share(c, 8) == (4, "1T") and node_share(c, 0) == (4, "1T")


def test_the_headline_dry_run_shows_bf16_and_activations(tmp_path, capsys):
    from hpcft.cli import main

    assert main(["model=internlm2", "cluster=8gpu", "dry_run=true", f"run_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "logits/loss 2.1, CUDA 1; micro-batch of 1600 tokens = 8 x 200 (the longest row, at most 195 tokens" in out
    assert "train: per_device_train_batch_size=8 chosen" in out  # the micro-batch the estimate fits (issue 33)
    assert "model numbers from model.shape; docs/memory.md" in out and "bf16: true" in out
    assert "train: bf16, gradient checkpointing on, attention flash_attn=auto" in out


@pytest.mark.parametrize(
    "overrides, inherited, threads",
    [
        (["cluster=8gpu"], None, {"train": "8", "deploy": "8", "eval": "1"}),  # 64 CPUs over 8 GPUs
        (["cluster=slurmlab", "cluster.procs_per_node=2", "cluster.cpus_per_node=6"], None, {"train": "3"}),
        (["cluster=slurmlab", "cluster.procs_per_node=2"], None, {"train": "1"}),  # never 0
        (["cluster=8gpu"], "4", {"train": "4", "eval": "4"}),  # the job's environment says otherwise
        (["cluster=8gpu", "+cluster.env.OMP_NUM_THREADS=2"], "4", {"train": "2", "deploy": "2"}),
    ],
)
def test_each_job_runs_its_cpus_per_process_as_torch_threads(overrides, inherited, threads):
    """What bash makes of the job's setup lines: OMP_NUM_THREADS is the job's CPUs over its
    processes, unless set where the job runs (inherited, or the site's env)."""
    import os
    import subprocess
    from pathlib import Path

    from hpcft.plan import build_pipeline
    from hpcft.render import setup_lines
    from hpcft.rundir import RunLayout

    cfg = load_config(["model=internlm2", *overrides])
    env = {"PATH": os.environ["PATH"], **({"OMP_NUM_THREADS": inherited} if inherited else {})}
    for stage in build_pipeline(check(cfg), RunLayout(Path("/runs/r"))).stages:
        if stage.name in threads:
            script = "\n".join([*setup_lines(cfg.cluster, stage.resources), 'echo "$OMP_NUM_THREADS"'])
            out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True)
            assert out.stdout.strip() == threads[stage.name], stage.name
