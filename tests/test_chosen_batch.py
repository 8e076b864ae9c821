"""The micro-batch hpcft chooses on GPU clusters when `framework.per_device_train_batch_size` is
null (LLaMA-Factory's default): the largest the memory estimate fits, the global batch kept
(issue 33; docs/memory.md); a number the user gives is used as given."""

from __future__ import annotations

from pathlib import Path

import yaml

from hpcft.cli import main
from tests.test_memory import long_rows

GPU = ["model=qwen2_5_7b", "cluster=8gpu", "+cluster.train.modules.liger_kernel=false"]


def dry_run(tmp_path: Path, capsys, *overrides: str) -> tuple[dict[str, object], str]:
    root = tmp_path / f"runs{len(list(tmp_path.glob('runs*')))}"
    assert main([*overrides, "dry_run=true", f"run_root={root}"]) == 0, capsys.readouterr().err
    (run,) = root.iterdir()
    return yaml.safe_load((run / "native" / "train.yaml").read_text()), capsys.readouterr().out


def layout(values: dict[str, object]) -> tuple[object, object]:
    return values["per_device_train_batch_size"], values["gradient_accumulation_steps"]


def test_short_rows_fill_the_gpu_with_the_whole_per_gpu_batch_and_keep_the_global_batch(tmp_path, capsys):
    values, out = dry_run(tmp_path, capsys, *GPU)  # 8 GPUs x (1 x 8 accumulation steps) requested: 64 rows a step
    assert layout(values) == (8, 1)
    assert "train: global batch 64 = 8 processes x 8 per device x 1 accumulation steps" in out, out
    assert "train: per_device_train_batch_size=8 chosen: the largest micro-batch dividing the 8 rows" in out
    assert "set framework.per_device_train_batch_size=N to fix it" in out
    values, out = dry_run(tmp_path, capsys, *GPU, "framework.global_batch_size=128")
    assert layout(values) == (16, 1) and "global batch 128 = 8 processes x 16 per device" in out


def test_long_rows_get_the_largest_micro_batch_that_fits_with_more_accumulation(tmp_path, capsys):
    """7B LoRA on rows reaching cutoff 5120: 8 rows a step do not fit at once (~112 GiB), 4 do (~63 GiB)."""
    long = [*GPU, "framework.cutoff_len=5120", f"trainset={long_rows(tmp_path / 'long.json', 64, 1200)}"]
    values, out = dry_run(tmp_path, capsys, *long)
    assert layout(values) == (4, 2), out
    assert "global batch 64 = 8 processes x 4 per device x 2 accumulation steps" in out
    values, _ = dry_run(tmp_path, capsys, *long, "cluster.gpu_mem_gb=141")  # an H200 takes all 8
    assert layout(values) == (8, 1)


def test_the_users_micro_batch_is_used_as_given(tmp_path, capsys):
    values, out = dry_run(tmp_path, capsys, *GPU, "framework.per_device_train_batch_size=2")
    assert layout(values) == (2, 8) and "chosen" not in out


def test_a_cpu_cluster_keeps_a_micro_batch_of_one(tmp_path, capsys):
    values, out = dry_run(tmp_path, capsys, "model=tiny_llama", "cluster=slurmlab")
    assert layout(values) == (1, 8) and "chosen" not in out


def test_when_not_even_one_row_fits_the_plan_is_refused_with_a_change_that_fits(run_root, capsys):
    assert main(["model=llama3_8b", "cluster=8gpu", "framework.finetuning_type=full", f"run_root={run_root}"]) == 2
    err = capsys.readouterr().err
    assert "micro-batch of 200 tokens = 1 x" in err and "; try deepspeed=zero2 (~" in err, err
