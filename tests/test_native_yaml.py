"""LLaMA-Factory v0.9.5's own example YAMLs (tests/fixtures/llamafactory_examples, unchanged),
given through `framework.native_config` with the tiny model and data of the YAML's stage:
each is planned with its stage, method and DeepSpeed config, or refused naming the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hpcft.cli import main

EXAMPLES = Path(__file__).parent / "fixtures" / "llamafactory_examples"
Z3 = EXAMPLES / "examples" / "deepspeed" / "ds_z3_config.json"


def data(tmp_path: Path, stage: str) -> Path:
    rows = {
        "pairs": [{"instruction": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(4)],
        "kto": [{"instruction": f"q{i}", "input": "", "output": "a", "kto_tag": i % 2 == 0} for i in range(4)],
        "pt": [{"text": f"plain text number {i}."} for i in range(4)],
    }[stage]
    path = tmp_path / f"{stage}.json"
    path.write_text(json.dumps(rows))
    return path


def plan(tmp_path: Path, example: str, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Path | None, str]:
    root = tmp_path / "runs"
    # The recipes' own datasets (identity, alpaca_en_demo, ...) from LLaMA-Factory's data/ folder.
    data_dir = [] if any(e.startswith("trainset=") for e in extra) else [f"trainset={EXAMPLES / 'data'}"]
    args = ["model=tiny_llama", "cluster=slurmlab", f"framework.native_config={EXAMPLES / example}", *data_dir, *extra]
    code = main([*args, "dry_run=true", f"run_root={root}"])
    out = capsys.readouterr()
    runs = list(root.iterdir()) if root.exists() else []
    return code, (runs[0] if runs else None), out.out + out.err


def train_yaml(run: Path) -> dict:
    return yaml.safe_load((run / "native" / "train.yaml").read_text())


def test_lora_sft_is_planned_with_its_method_and_hpcft_owned_keys_reported(tmp_path, capsys):
    code, run, out = plan(tmp_path, "qwen3_lora_sft.yaml", capsys=capsys)
    assert code == 0, out
    native = train_yaml(run)
    assert (native["stage"], native["finetuning_type"], native["lora_rank"]) == ("sft", "lora", 8)
    assert (native["cutoff_len"], native["gradient_accumulation_steps"], native["learning_rate"]) == (2048, 8, 1e-4)
    assert (run / "native" / "export.yaml").is_file()  # LoRA: merged for the LLaMA-Factory server
    assert "sets do_train, model_name_or_path, output_dir, template; hpcft uses its own" in out
    assert native["dataset"] == "identity,alpaca_en_demo" and "data: the datasets" in out  # the recipe's own
    assert native["overwrite_output_dir"] is False  # resume on requeue wins, and the notes say so
    assert "overwrite_output_dir" in out


def test_its_own_deepspeed_json_is_used_as_given(tmp_path, capsys):
    code, run, out = plan(tmp_path, "qwen3_lora_sft_ds3.yaml", capsys=capsys)
    assert code == 0, out
    assert (run / "native" / "deepspeed.json").read_text() == Z3.read_text()
    assert train_yaml(run)["deepspeed"] == str(run / "native" / "deepspeed.json")


def test_full_fine_tune_serves_the_trained_weights_without_a_merge(tmp_path, capsys):
    code, run, out = plan(tmp_path, "qwen3_full_sft.yaml", capsys=capsys)
    assert code == 0, out
    assert train_yaml(run)["finetuning_type"] == "full" and not (run / "native" / "export.yaml").exists()
    api = yaml.safe_load((run / "native" / "api.yaml").read_text())
    assert api["model_name_or_path"] == str(run / "train")
    assert (run / "native" / "deepspeed.json").read_text() == Z3.read_text()


@pytest.mark.parametrize(
    "example,stage,kind,extra",
    [
        ("qwen3_lora_dpo.yaml", "dpo", "pairs", []),
        ("qwen3_lora_kto.yaml", "kto", "kto", []),
        ("qwen3_lora_pretrain.yaml", "pt", "pt", []),
        ("qwen3_lora_reward.yaml", "rm", "pairs", ["stages=[train]"]),
    ],
)
def test_each_stage_is_planned_with_the_data_layout_it_reads(example, stage, kind, extra, tmp_path, capsys):
    code, run, out = plan(tmp_path, example, f"trainset={data(tmp_path, kind)}", *extra, capsys=capsys)
    assert code == 0, out
    assert train_yaml(run)["stage"] == stage
    entry = json.loads((run / "native" / "dataset_info.json").read_text())["hpcft_train"]
    assert entry.get("ranking", False) == (kind == "pairs")
    assert ("kto_tag" in entry["columns"]) == (kind == "kto")


@pytest.mark.parametrize(
    "example,extra,reason",
    [
        ("qwen3_lora_reward.yaml", ["trainset=PAIRS"], "stage rm trains a reward model"),
        ("qwen3_lora_sft_otfq.yaml", [], "QLoRA needs GPUs; this cluster has none"),
        ("qwen3vl_lora_sft.yaml", ["trainset=IMAGES"], "is a vision-language recipe (image_max_pixels"),
        ("qwen3_lora_dpo.yaml", ["framework.stage=kto"], "framework.stage: is 'kto' here, but"),
        ("qwen3_preprocess.yaml", [], "would only tokenize the data into it and exit without training"),
        ("qwen3_lora_sft_ds3.yaml", ["deepspeed=zero2"], "keep one"),
    ],
)
def test_what_cannot_run_is_refused_naming_the_reason(example, extra, reason, tmp_path, capsys):
    images = tmp_path / "images.json"
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    images.write_text(json.dumps([{"instruction": "<image>what is it?", "output": "a cat", "images": ["a.png"]}]))
    subs = {"trainset=PAIRS": f"trainset={data(tmp_path, 'pairs')}", "trainset=IMAGES": f"trainset={images}"}
    code, run, out = plan(tmp_path, example, *(subs.get(e, e) for e in extra), capsys=capsys)
    assert code == 2 and reason in out and run is None, out


def test_qlora_on_a_gpu_cluster_is_planned_with_its_quantization(tmp_path, capsys):
    root = tmp_path / "runs"
    example = EXAMPLES / "qwen3_lora_sft_otfq.yaml"
    args = ["model=tiny_llama", "cluster=8gpu", f"framework.native_config={example}", f"trainset={EXAMPLES / 'data'}"]
    args.append("dry_run=true")
    assert main([*args, f"run_root={root}"]) == 0, capsys.readouterr().err
    native = train_yaml(next(root.iterdir()))
    assert (native["quantization_bit"], native["quantization_method"], native["bf16"]) == (4, "bnb", True)


def test_a_ray_recipe_is_planned_for_slurm_and_says_what_is_not_used(tmp_path, capsys):
    code, run, out = plan(tmp_path, "qwen3_lora_sft_ray.yaml", capsys=capsys)
    assert code == 0 and train_yaml(run)["stage"] == "sft", out
    assert "ray_num_workers not used: the Slurm allocation decides the processes" in out
