"""W&B settings reach jobs through their environment; `report_to` is always explicit."""

from __future__ import annotations

from pathlib import Path

import yaml

from hpcft.config.compose import load_config
from hpcft.plan import build_pipeline
from hpcft.rundir import RunLayout

LAYOUT = RunLayout(Path("/runs/r1"))


def train_yaml(overrides: list[str]) -> dict:
    pipeline = build_pipeline(load_config(["model=internlm2", *overrides]), LAYOUT)
    return yaml.safe_load(pipeline.files["native/train.yaml"])


def test_report_to_is_none_unless_enabled():
    assert train_yaml([])["report_to"] == "none"
    assert train_yaml(["wandb.enabled=true"])["report_to"] == "wandb"


def test_offline_mode_follows_the_cluster_and_jobs_are_grouped():
    pipeline = build_pipeline(load_config(["model=internlm2", "cluster=8gpu", "wandb.enabled=true"]), LAYOUT)
    train_env, eval_env = pipeline.stage("train").job.env, pipeline.stage("eval").job.env
    assert train_env["WANDB_MODE"] == "offline"  # cluster 8gpu: internet false
    assert train_env["WANDB_RUN_GROUP"] == eval_env["WANDB_RUN_GROUP"] == "r1"
    assert (train_env["WANDB_JOB_TYPE"], eval_env["WANDB_JOB_TYPE"]) == ("train", "eval")
    assert train_env["WANDB_DIR"] == "/runs/r1"
    online = build_pipeline(
        load_config(["model=internlm2", "cluster=8gpu", "cluster.internet=true", "wandb.enabled=true"]), LAYOUT
    )
    assert online.stage("train").job.env["WANDB_MODE"] == "online"


def test_no_secret_in_anything_the_plan_writes(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "planted-secret-123")
    monkeypatch.setenv("HF_TOKEN", "hf_planted456")
    pipeline = build_pipeline(load_config(["model=internlm2", "wandb.enabled=true"]), LAYOUT)
    written = "".join(pipeline.files.values()) + repr(pipeline.stages)
    assert "planted-secret-123" not in written and "hf_planted456" not in written
