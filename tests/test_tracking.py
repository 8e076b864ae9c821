"""W&B settings reach jobs through their environment; `report_to` is always explicit."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from hpcft.configure import CheckedRun, check, load_config
from hpcft.plan import build_pipeline
from hpcft.rundir import RunLayout

LAYOUT = RunLayout(Path("/runs/r1"))


def check_config(overrides: list[str]) -> CheckedRun:
    return check(load_config(overrides))


def train_yaml(overrides: list[str]) -> dict:
    pipeline = build_pipeline(check_config(["model=internlm2", *overrides]), LAYOUT)
    return yaml.safe_load(pipeline.files["native/train.yaml"])


def test_report_to_is_none_unless_enabled():
    assert train_yaml([])["report_to"] == "none"
    assert train_yaml(["wandb.enabled=true"])["report_to"] == "wandb"


def test_offline_mode_follows_the_cluster_and_jobs_are_grouped(monkeypatch):
    pipeline = build_pipeline(check_config(["model=internlm2", "cluster=8gpu", "wandb.enabled=true"]), LAYOUT)
    train_env, eval_env = pipeline.stage("train").job.env, pipeline.stage("eval").job.env
    assert train_env["WANDB_MODE"] == "offline"  # cluster 8gpu: internet false
    assert train_env["WANDB_RUN_GROUP"] == eval_env["WANDB_RUN_GROUP"] == "r1"
    assert (train_env["WANDB_JOB_TYPE"], eval_env["WANDB_JOB_TYPE"]) == ("train", "eval")
    assert train_env["WANDB_DIR"] == "/runs/r1"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # online W&B is checked for a key before submit
    online = build_pipeline(
        check_config(["model=internlm2", "cluster=8gpu", "cluster.internet=true", "wandb.enabled=true"]), LAYOUT
    )
    assert online.stage("train").job.env["WANDB_MODE"] == "online"


def test_no_secret_in_anything_the_plan_writes(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "planted-secret-123")
    monkeypatch.setenv("HF_TOKEN", "hf_planted456")
    pipeline = build_pipeline(check_config(["model=internlm2", "wandb.enabled=true"]), LAYOUT)
    written = "".join(pipeline.files.values()) + repr(pipeline.stages)
    assert "planted-secret-123" not in written and "hf_planted456" not in written


def online(*extra: str) -> list[str]:
    return ["model=internlm2", "cluster=8gpu", "cluster.internet=true", "wandb.enabled=true", "dry_run=true", *extra]


def test_wandb_online_needs_a_key_the_jobs_can_read(tmp_path, monkeypatch, capsys):
    from hpcft.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main([*online(f"run_root={tmp_path}/runs")]) == 2
    assert (
        "wandb.enabled: W&B online needs a key: export WANDB_API_KEY, or run `wandb login`" in capsys.readouterr().err
    )
    monkeypatch.setenv("WANDB_API_KEY", "fake-key")
    assert main([*online(f"run_root={tmp_path}/runs")]) == 0
    # Keys withheld from jobs: only the credential file counts.
    assert main([*online(f"run_root={tmp_path}/runs", "cluster.export_secrets=false")]) == 2
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password fake-key\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert main([*online(f"run_root={tmp_path}/runs", "cluster.export_secrets=false")]) == 0


def test_withheld_secrets_never_reach_sbatch(tmp_path, monkeypatch):
    from hpcft.cli import main

    bin_dir, seen = tmp_path / "bin", tmp_path / "sbatch-env.txt"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nenv > "{seen}"\nexit 1\n')  # records, then refuses
    (bin_dir / "sbatch").chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks it exists; never run here
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("WANDB_API_KEY", "fake-wandb-key-1234")
    monkeypatch.setenv("HF_TOKEN", "hf_fake5678")
    args = ["model=tiny_llama", "cluster=slurmlab", f"run_root={tmp_path}/runs"]
    assert main([*args, "cluster.export_secrets=false"]) == 1  # the stub refused the job
    assert "fake-wandb-key-1234" not in seen.read_text() and "hf_fake5678" not in seen.read_text()
    assert os.environ["WANDB_API_KEY"] == "fake-wandb-key-1234"  # restored for the user's shell
    assert main(args) == 1
    assert "fake-wandb-key-1234" in seen.read_text()  # the default: sbatch's --export=ALL passes it
