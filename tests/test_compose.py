"""Composition of the shipped configs, with no process and no Slurm (Hydra's compose API)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from hpcft.config.compose import conf_dir, is_demo_data
from hpcft.config.schema import Executor, HpcftConfig, ModelKind
from hpcft.configure import load_config, validate_config
from hpcft.errors import ConfigError, UserError

CONF = conf_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_and_validate(overrides: list[str]) -> HpcftConfig:
    cfg = load_config(overrides)
    validate_config(cfg)
    return cfg


@pytest.mark.parametrize(
    "model,framework,cluster",
    list(itertools.product(options("model"), options("framework"), options("cluster"))),
)
def test_every_shipped_combination_validates_or_is_refused_for_its_reason(model, framework, cluster, tmp_path):
    overrides = [f"model={model}", f"framework={framework}", f"cluster={cluster}", f"run_root={tmp_path}"]
    cfg = load_config(overrides)
    assert isinstance(cfg, HpcftConfig)
    expected_framework = "llamafactory" if cfg.model.kind is ModelKind.llm else "flagembedding"
    try:
        validate_config(cfg)
    except ConfigError as e:
        reasons = {
            "framework": framework != expected_framework,
            "model.path": not Path(cfg.model.path).exists(),
            # a 72B model's bf16 weights alone exceed one 80 GB GPU without ZeRO-3
            "cluster.gpu_mem_gb": cfg.model.params_b > 40 and cfg.deepspeed.zero_stage is None,
            # FlagEmbedding's 16 demo rows are fewer than one batch over a GPU node (it would train 0 steps)
            "trainset": is_demo_data(cfg.trainset)
            and cfg.model.kind is not ModelKind.llm
            and cfg.cluster.gpus_per_node > 1,
        }
        assert reasons.get(e.key), f"refused for an unexpected reason: {e}"
        return
    assert framework == expected_framework


def test_framework_follows_the_model_kind():
    assert load_config(["model=internlm2"]).framework.name == "llamafactory"
    assert load_config(["model=bge_large_zh_v1_5"]).framework.name == "flagembedding"
    assert load_config(["model=bge_reranker_large"]).framework.name == "flagembedding"


def test_framework_keys_can_be_overridden_without_naming_the_framework():
    cfg = load_config(["model=internlm2", "framework.learning_rate=5e-5", "+framework.args.lr_scheduler_type=linear"])
    assert cfg.framework.learning_rate == 5e-5
    assert cfg.framework.args == {"lr_scheduler_type": "linear"}


def test_default_cluster_is_local_and_typed():
    cfg = load_config(["model=internlm2"])
    assert cfg.cluster.executor is Executor.local
    assert cfg.model.template == "intern2"
    assert cfg.model.kind is ModelKind.llm


def test_8gpu_is_one_node_with_eight_gpus_per_node():
    c = load_config(["model=internlm2", "cluster=2x8gpu"]).cluster
    assert (c.nodes, c.gpus_per_node) == (2, 8)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=intern"], "model: unknown model option 'intern'; did you mean 'internlm2'?"),
        (["model=internlm2", "cluster=9gpu"], "cluster: unknown cluster option '9gpu'; did you mean '8gpu'"),
        (["model=internlm2", "framework=foo"], "valid: flagembedding, llamafactory"),
        ([], "model: no model chosen; pick one of:"),
        (["model=internlm2", "framework.learnin_rate=1"], "did you mean 'learning_rate'?"),
        (["model=internlm2", "cluster.nodes=abc"], "cluster.nodes: Value 'abc'"),
        (["model=internlm2", "bogus=1"], "bogus: unknown key 'bogus'"),
    ],
)
def test_bad_composition_names_the_key(overrides, message):
    with pytest.raises(UserError) as e:
        load_config(overrides)
    assert message in str(e.value)


def test_user_config_dir_adds_a_site_cluster(tmp_path):
    site = tmp_path / "site"
    (site / "cluster").mkdir(parents=True)
    (site / "cluster" / "mysite.yaml").write_text(
        "defaults: [base_cluster, _self_]\nname: mysite\npartition: a100\nnodes: 2\nmax_nodes: 8\n"
        "gpus_per_node: 4\nnode_gpus: 4\nsetup: ['module load cuda/12.4']\n"
    )
    cfg = load_config(["model=llama3_8b", "cluster=mysite"], config_dirs=[str(site)])
    assert cfg.cluster.partition == "a100"
    assert cfg.cluster.setup == ["module load cuda/12.4"]


def test_a_missing_user_config_dir_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_config(["model=internlm2"], config_dirs=[str(tmp_path / "nope")])
