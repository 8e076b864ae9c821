"""What the dry run passes, the framework's own parser passes, where the job runs.

Every plan below is made by a real dry run (`launch` with `dry_run=true`): LLaMA-Factory
v0.9.5's own example recipes given unchanged through `framework.native_config` (with its own
demo datasets through its registry), hpcft's shipped configs and DeepSpeed presets. A plan
hpcft accepts must pass LLaMA-Factory's `get_train_args` in the job's interpreter with the
environment its launcher gives it; a recipe that cannot run here must be refused before
submit. The CPU test cluster (`cluster=slurmlab`) is the target: the one these tests can
prove by running the parser's own device checks.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpcft.config.schema import HpcftConfig
from hpcft.configure import check, load_config
from hpcft.errors import UserError
from hpcft.launch import launch
from hpcft.plan import build_pipeline
from hpcft.rundir import RunLayout
from tests.conftest import needs_training

pytestmark = [needs_training, pytest.mark.xdist_group("oracle")]  # one worker parses every plan once

EXAMPLES = Path(__file__).parent / "fixtures" / "llamafactory_examples"
LF_DATA = EXAMPLES / "data"
ORACLE = Path(__file__).parent / "oracles" / "lf_parse.py"
RECIPES = sorted(EXAMPLES.glob("*.yaml"))
SHIPPED = [
    ["model=tiny_llama"],
    ["model=tiny_llama", "deepspeed=zero2"],
    ["model=tiny_llama", "deepspeed=zero3"],
    ["model=tiny_llama", "deepspeed=zero3_offload"],
    ["model=tiny_llama", "deepspeed=zero2", "cluster.procs_per_node=2"],
    ["model=tiny_llama", "cluster.nodes=2"],
    ["model=tiny_llama", "framework.finetuning_type=full"],
    ["+experiment=quickstart"],
]
PACKED = ["model=tiny_llama", f"trainset={LF_DATA}", "framework.dataset=[alpaca_en_demo]", "framework.cutoff_len=4096"]
"""Rows far shorter than the cutoff: hpcft plans neat_packing (test_memory.py has the rule)."""
SHIPPED.append(PACKED)

GPU_PLAN = ["model=tiny_llama", "+cluster.train.modules.liger_kernel=true", "+cluster.train.modules.flash_attn=true"]
"""A GPU cluster's plan (`cluster=8gpu`) whose job environment has Liger and FlashAttention-2:
hpcft plans enable_liger_kernel, flash_attn: fa2 and the micro-batch it chooses
(test_llamafactory_kernels.py, test_chosen_batch.py have the rules)."""
ON_GPU_ONLY = ("bf16", "enable_liger_kernel")
"""What this CPU machine cannot honour: bf16 (no GPU) and Liger (liger-kernel is not installed
here, and LLaMA-Factory's parser requires it). The GPU plan is parsed without them, and once
with Liger kept, to show that the package is its only objection."""

REFUSED_HERE = {
    "extras_adam_mini_qwen2_full_sft.yaml": "pip install adam-mini",
    "extras_apollo_llama3_full_sft.yaml": "pip install apollo-torch",
    "extras_badam_llama3_full_sft.yaml": "pip install badam",
    "extras_galore_llama3_full_sft.yaml": "pip install galore-torch",
    "extras_mod_llama3_full_sft.yaml": "a bitsandbytes optimizer that needs GPUs",
    "extras_fp8_llama3_fp8_deepspeed_sft.yaml": "FP8 training needs GPUs",
    "extras_nlg_eval_llama3_lora_predict.yaml": "a predict-only recipe",
    "extras_asft_qwen2_full_asft.yaml": "math",  # a hub dataset; compute nodes are offline
    "qwen3_lora_sft_otfq.yaml": "QLoRA needs GPUs",
    "qwen3vl_lora_sft.yaml": "vision-language recipe",
    "qwen3_preprocess.yaml": "would only tokenize",
    "qwen3_lora_reward.yaml": "stage rm trains a reward model",  # with the default stages
}
"""Recipes this cluster (CPU, the suite's interpreter) cannot run, and the reason named."""


def dry_run(overrides: list[str], root: Path, cluster: str = "slurmlab") -> tuple[HpcftConfig, RunLayout] | str:
    """A real dry run; its config and layout, or the one-line refusal."""
    try:
        cfg = load_config([f"cluster={cluster}", f"run_root={root}", "dry_run=true", *overrides])
        layout = launch(cfg, say=lambda _line: None).layout
    except UserError as e:
        return str(e)
    return cfg, layout


def free_port() -> int:
    """A port no other process holds now (the suite may run beside another on this machine)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def oracle_plan(cfg: HpcftConfig, layout: RunLayout, port: int) -> dict[str, object]:
    """The train.yaml and the environment its process starts with (launcher's, job's)."""
    job = build_pipeline(check(cfg), layout).stage("train").job
    env = dict(job.env)  # type: ignore[union-attr]
    if job.argv[0] == "torchrun":  # type: ignore[union-attr]
        env |= {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
        env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    return {"yaml": str(layout.native / "train.yaml"), "env": env}


def recipe_overrides(recipe: Path) -> list[str]:
    return ["model=tiny_llama", f"framework.native_config={recipe}", f"trainset={LF_DATA}"]


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """Each case's outcome: `refused: <why>`, or the parser's verdict on the plan (None: accepted)."""
    root = tmp_path_factory.mktemp("oracle")
    cases = {r.name: recipe_overrides(r) for r in RECIPES} | {" ".join(s): s for s in SHIPPED}
    outcomes: dict[str, str | None] = {}
    plans: dict[str, dict[str, object]] = {}
    port = free_port()  # one for every plan: the parser process starts one (1-process) group
    for name, overrides in cases.items():
        made = dry_run(overrides, root)
        if isinstance(made, str):
            outcomes[name] = f"refused: {made}"
        else:
            plans[name] = oracle_plan(*made, port)
    gpu = dry_run(GPU_PLAN, root, cluster="8gpu")
    assert not isinstance(gpu, str), gpu
    plans["gpu"] = oracle_plan(*gpu, port) | {"drop": list(ON_GPU_ONLY)}
    plans["gpu, liger kept"] = oracle_plan(*gpu, port) | {"drop": ["bf16"]}
    listing = root / "plans.json"
    listing.write_text(json.dumps(list(plans.values())))
    ran = subprocess.run([sys.executable, str(ORACLE), str(listing)], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    parsed = json.loads(ran.stdout.strip().splitlines()[-1])
    return outcomes | dict(zip(plans, parsed, strict=True))


def test_every_plan_the_dry_run_passes_llamafactory_parser_accepts(verdicts):
    expected = {"gpu, liger kept"}  # refused for the package this machine lacks (the GPU test below)
    rejected = {name: v for name, v in verdicts.items() if v and not v.startswith("refused: ") and name not in expected}
    assert not rejected, rejected
    accepted = [name for name, v in verdicts.items() if v is None]
    assert len(RECIPES) >= 25 and len([n for n in accepted if n.endswith(".yaml")]) >= 12, verdicts


@pytest.mark.parametrize("recipe", sorted(REFUSED_HERE))
def test_a_recipe_that_cannot_run_here_is_refused_before_submit_with_the_reason(verdicts, recipe):
    verdict = verdicts[recipe]
    assert verdict and verdict.startswith("refused: ") and REFUSED_HERE[recipe] in verdict, verdict


def test_the_recipes_own_datasets_are_trained_on_through_the_registry(tmp_path):
    made = dry_run(recipe_overrides(EXAMPLES / "qwen3_lora_dpo.yaml"), tmp_path)
    assert not isinstance(made, str), made
    cfg, layout = made
    assert cfg.framework.dataset == ["dpo_en_demo"]  # type: ignore[attr-defined]
    info = json.loads((layout.native / "dataset_info.json").read_text())
    assert list(info) == ["dpo_en_demo"] and info["dpo_en_demo"]["ranking"] is True


def test_a_recipe_without_trainset_is_refused_not_trained_on_the_demo_rows(tmp_path):
    made = dry_run(["model=tiny_llama", f"framework.native_config={EXAMPLES / 'qwen3_lora_sft.yaml'}"], tmp_path)
    assert isinstance(made, str) and "trains on dataset identity,alpaca_en_demo" in made, made


def test_half_precision_of_a_recipe_is_turned_off_on_cpu_and_said(tmp_path):
    lines: list[str] = []
    cfg = load_config(
        [
            "cluster=slurmlab",
            f"run_root={tmp_path}",
            "dry_run=true",
            *recipe_overrides(EXAMPLES / "qwen3_lora_sft.yaml"),
        ]
    )
    launch(cfg, say=lines.append)
    assert any("bf16=True is not used (the job runs on CPU" in line for line in lines), lines


def test_the_command_line_precision_wins_over_the_recipe(tmp_path):
    recipe = EXAMPLES / "qwen3_lora_sft.yaml"
    made = dry_run([*recipe_overrides(recipe), "framework.bf16=false"], tmp_path, cluster="8gpu")
    assert not isinstance(made, str), made
    assert "bf16: false" in (made[1].native / "train.yaml").read_text()


def test_a_packing_plan_is_made_and_llamafactorys_parser_accepts_it(verdicts, tmp_path):
    made = dry_run(PACKED, tmp_path)
    assert not isinstance(made, str), made
    assert "neat_packing: true" in (made[1].native / "train.yaml").read_text()
    assert verdicts[" ".join(PACKED)] is None


def test_a_gpu_plan_with_liger_fa2_and_a_chosen_micro_batch_is_accepted_by_llamafactorys_parser(verdicts, tmp_path):
    made = dry_run(GPU_PLAN, tmp_path, cluster="8gpu")
    assert not isinstance(made, str), made
    train = yaml.safe_load((made[1].native / "train.yaml").read_text())
    assert train["enable_liger_kernel"] is True and train["flash_attn"] == "fa2" and train["bf16"] is True
    assert (train["per_device_train_batch_size"], train["gradient_accumulation_steps"]) == (8, 1)
    assert verdicts["gpu"] is None, verdicts["gpu"]
    if importlib.util.find_spec("liger_kernel") is None:
        assert "liger-kernel" in str(verdicts["gpu, liger kept"]), verdicts["gpu, liger kept"]
    else:
        assert verdicts["gpu, liger kept"] is None
