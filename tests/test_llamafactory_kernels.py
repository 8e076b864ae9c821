"""Kernels a practitioner turns on where the job's environment has them (issue 33; docs/memory.md):
Liger (`enable_liger_kernel`) and FlashAttention-2 (`flash_attn: fa2`) on GPU clusters, known
from `cluster.train.modules` or the train job's interpreter; never on CPU; the user's value wins."""

from __future__ import annotations

import re
import venv
from pathlib import Path

import yaml

from hpcft.cli import main
from hpcft.configure import load_config
from hpcft.frameworks.llamafactory_memory import configured, estimate
from tests.test_memory import long_rows

GPU = ["model=qwen2_5_7b", "cluster=8gpu"]
HAS_LIGER = "+cluster.train.modules.liger_kernel=true"
HAS_FA = "+cluster.train.modules.flash_attn=true"
LACKS = ["+cluster.train.modules.liger_kernel=false", "+cluster.train.modules.flash_attn=false"]


def dry_run(tmp_path: Path, capsys, *overrides: str) -> tuple[dict[str, object], str]:
    """A real dry run: the train.yaml it wrote and what it printed."""
    root = tmp_path / f"runs{len(list(tmp_path.glob('runs*')))}"
    assert main([*overrides, "dry_run=true", f"run_root={root}"]) == 0, capsys.readouterr().err
    (run,) = root.iterdir()
    return yaml.safe_load((run / "native" / "train.yaml").read_text()), capsys.readouterr().out


def test_a_gpu_cluster_whose_job_environment_has_liger_and_flash_attn_gets_both_said_with_off_switches(
    tmp_path, capsys
):
    values, out = dry_run(tmp_path, capsys, *GPU, HAS_LIGER, HAS_FA)
    assert values["enable_liger_kernel"] is True and values["flash_attn"] == "fa2"
    assert "train: enable_liger_kernel on: liger_kernel is in the train job's environment" in out, out
    assert "off with +framework.args.enable_liger_kernel=false" in out
    assert "train: flash_attn=fa2: flash_attn is in the train job's environment" in out
    assert "off with +framework.args.flash_attn=sdpa" in out


def test_without_them_in_the_job_environment_nothing_is_planned_and_the_dry_run_says_why(tmp_path, capsys):
    values, out = dry_run(tmp_path, capsys, *GPU, *LACKS)
    assert "enable_liger_kernel" not in values and "flash_attn" not in values
    assert "enable_liger_kernel not planned: liger_kernel is not in the train job's environment" in out, out


def test_a_cpu_cluster_never_gets_them_even_when_the_environment_has_them(tmp_path, capsys):
    values, out = dry_run(tmp_path, capsys, "model=tiny_llama", "cluster=slurmlab", HAS_LIGER, HAS_FA)
    assert "enable_liger_kernel" not in values and "flash_attn" not in values
    # fa2 as a word: a run folder's random hex suffix may hold the letters (e.g. "12fa27").
    assert "liger" not in out.lower() and not re.search(r"\bfa2\b", out), out


def test_the_users_own_value_always_wins(tmp_path, capsys):
    off = ["+framework.args.enable_liger_kernel=false", "+framework.args.flash_attn=sdpa"]
    values, out = dry_run(tmp_path, capsys, *GPU, HAS_LIGER, HAS_FA, *off)
    assert values["enable_liger_kernel"] is False and values["flash_attn"] == "sdpa"
    assert "enable_liger_kernel on" not in out and "flash_attn=fa2" not in out and "flash_attn=sdpa" in out


def test_fa2_needs_bf16_gpus_and_transformers_own_model_code(tmp_path, capsys):
    values, _ = dry_run(tmp_path, capsys, *GPU, HAS_FA, "cluster.gpu_type=v100")  # no bf16: pre-Ampere
    assert "flash_attn" not in values
    values, _ = dry_run(tmp_path, capsys, "model=internlm2", "cluster=8gpu", HAS_FA, HAS_LIGER)  # remote code
    assert "flash_attn" not in values and "enable_liger_kernel" not in values  # nor a type Liger patches


def fake_environment(tmp_path: Path, *modules: str) -> Path:
    """A real interpreter (a venv of this Python) whose site-packages has `modules` (empty packages)."""
    env = tmp_path / "job-env"
    venv.create(env, with_pip=False, symlinks=True)
    (site,) = env.glob("lib/python*/site-packages")
    for module in modules:
        (site / module).mkdir()
        (site / module / "__init__.py").write_text("")
    return env / "bin" / "python"


def test_the_train_jobs_interpreter_is_asked_when_the_cluster_does_not_say(tmp_path, capsys):
    python = fake_environment(tmp_path, "liger_kernel")
    values, out = dry_run(tmp_path, capsys, *GPU, f"cluster.python=[{python}]")
    assert values["enable_liger_kernel"] is True and "flash_attn" not in values
    assert f"asked {python}, the train job's interpreter" in out, out
    wrapped = ["cluster.python=[apptainer,exec,img.sif,python]"]  # a container: cannot be asked from here
    values, out = dry_run(tmp_path, capsys, *GPU, *wrapped)
    assert "enable_liger_kernel" not in values
    assert "the check for liger_kernel was skipped" in out and "+cluster.train.modules.liger_kernel=true" in out
    values, _ = dry_run(tmp_path, capsys, *GPU, *wrapped, HAS_LIGER)  # the cluster setting decides
    assert values["enable_liger_kernel"] is True


def test_liger_removes_the_logits_from_the_estimate_so_the_7b_5120_x_6_fits(tmp_path, capsys):
    """The refused plan of issue 33 (~88 GiB, two thirds of it logits) fits once the loss is fused."""
    big = [*GPU, "framework.cutoff_len=5120", "framework.per_device_train_batch_size=6"]
    big += [f"trainset={long_rows(tmp_path / 'long.json', 16, 1200)}"]
    assert main([*big, "+cluster.train.modules.liger_kernel=false", "dry_run=true", f"run_root={tmp_path}/a"]) == 2
    capsys.readouterr()
    values, out = dry_run(tmp_path, capsys, *big, HAS_LIGER)
    assert values["enable_liger_kernel"] is True and "GiB less per GPU" in out
    plain = load_config([*big, "+cluster.train.modules.liger_kernel=false"])
    fused = load_config([*big, HAS_LIGER])
    with_logits, without = estimate(plain, None, configured(plain)), estimate(fused, None, configured(fused))
    assert with_logits.memory.logits_gb > 60 and without.memory.logits_gb < 1, without.memory.describe()
    assert without.memory.total_gb < 80 < with_logits.memory.total_gb


def test_liger_does_not_fuse_the_loss_of_stages_that_read_the_logits():
    cfg = load_config([*GPU, HAS_LIGER, "framework.stage=dpo", "framework.cutoff_len=2048"])
    assert not configured(cfg).fused  # LLaMA-Factory passes require_logits for dpo: its loss is the plain one
    assert configured(load_config([*GPU, HAS_LIGER])).fused
