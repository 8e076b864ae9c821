"""Training data layouts per LLaMA-Factory stage: checked on the login node, described in
dataset_info.json (a real DPO run is in tests/integration/test_local_pipeline.py)."""

from __future__ import annotations

import json

import pytest
import yaml

from hpcft.cli import main


def dry(run_root, *overrides: str) -> int:
    return main(["model=internlm2", "cluster=8gpu", "dry_run=true", f"run_root={run_root}", *overrides])


def test_pretraining_text(run_root, tmp_path, capsys):
    data = tmp_path / "pt.jsonl"
    data.write_text('{"text": "some text"}\n{"text": "more"}\n')
    assert dry(run_root, "framework.stage=pt", f"trainset={data}") == 0
    (run,) = run_root.iterdir()
    info = json.loads((run / "native" / "dataset_info.json").read_text())["hpcft_train"]
    assert info["columns"] == {"prompt": "text"}
    data.write_text('{"text": "some text"}\n{"content": "wrong field"}\n')
    assert dry(run_root, "framework.stage=pt", f"trainset={data}") == 2
    assert f"{data}:2: missing field 'text'" in capsys.readouterr().err


def test_dpo_preference_pairs(run_root, tmp_path, capsys):
    data = tmp_path / "dpo.json"
    data.write_text(json.dumps([{"instruction": "q", "chosen": "good", "rejected": "bad"}]))
    assert dry(run_root, "framework.stage=dpo", f"trainset={data}") == 0
    (run,) = run_root.iterdir()
    info = json.loads((run / "native" / "dataset_info.json").read_text())["hpcft_train"]
    assert info["ranking"] is True and info["columns"]["chosen"] == "chosen"
    data.write_text(json.dumps([{"instruction": "q", "chosen": "good"}]))
    assert dry(run_root, "framework.stage=dpo", f"trainset={data}") == 2
    assert "missing field 'rejected'" in capsys.readouterr().err


def test_unsupported_stage_and_layout(run_root, capsys):
    assert dry(run_root, "framework.stage=pt", "framework.dataset_format=sharegpt") == 2
    err = capsys.readouterr().err
    assert "framework.dataset_format: stage pt reads plain text rows" in err and "use alpaca" in err
    assert dry(run_root, "framework.stage=simpo") == 2
    assert "framework.stage: unknown value 'simpo'" in capsys.readouterr().err


def test_kto_rows_need_their_tag(run_root, tmp_path, capsys):
    data = tmp_path / "kto.json"
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": True}]
    data.write_text(json.dumps(rows))
    assert dry(run_root, "framework.stage=kto", "framework.dataset_format=sharegpt", f"trainset={data}") == 0
    (run,) = run_root.iterdir()
    info = json.loads((run / "native" / "dataset_info.json").read_text())["hpcft_train"]
    assert info["columns"]["kto_tag"] == "label" and info["tags"]["role_tag"] == "role"
    data.write_text(json.dumps([{**rows[0], "label": "yes"}]))
    assert dry(run_root, "framework.stage=kto", "framework.dataset_format=sharegpt", f"trainset={data}") == 2
    assert "field 'label' (the KTO tag) must be true or false" in capsys.readouterr().err


def test_an_existing_llamafactory_yaml_is_used_as_it_is(run_root, tmp_path, capsys):
    mine = tmp_path / "my sft.yaml"
    mine.write_text(
        "learning_rate: 5.0e-5\nlr_scheduler_type: linear\nlora_rank: 32\ndataset: my_data\nwarmup_ratio: 0.05\n"
    )
    data = tmp_path / "mine.json"
    data.write_text('[{"instruction": "hi", "output": "hello"}]')
    overrides = (f"framework.native_config='{mine}'", f"trainset={data}", "+framework.args.warmup_ratio=0.2")
    assert dry(run_root, *overrides) == 0
    out = capsys.readouterr().out
    assert f"train: {mine} sets dataset; hpcft uses its own" in out
    (run,) = run_root.iterdir()
    train = (run / "native" / "train.yaml").read_text()
    assert "learning_rate: 5.0e-05" in train and "lr_scheduler_type: linear" in train and "lora_rank: 32" in train
    assert "dataset: hpcft_train" in train and "warmup_ratio: 0.2" in train  # args win over the file


def test_a_bad_llamafactory_yaml_names_file_and_line(run_root, tmp_path, capsys):
    mine = tmp_path / "sft.yaml"
    mine.write_text("learning_rate: 5.0e-5\nlearnin_rate: 1\n")
    assert dry(run_root, f"framework.native_config={mine}") == 2
    err = capsys.readouterr().err
    assert f"{mine}:2: unknown argument 'learnin_rate'; did you mean 'learning_rate'?" in err
    mine.write_text("learning_rate: 5.0e-5\n  bad: [\n")
    assert dry(run_root, f"framework.native_config={mine}") == 2
    assert f"{mine}:2: invalid YAML" in capsys.readouterr().err
    assert dry(run_root, f"framework.native_config={tmp_path}/none.yaml") == 2
    assert "none.yaml: No such file or directory" in capsys.readouterr().err


def test_native_settings_that_would_break_a_promise_are_overridden_and_said(run_root, tmp_path, capsys):
    mine = tmp_path / "recipe.yaml"
    mine.write_text("overwrite_output_dir: true\nreport_to: none\ngradient_accumulation_steps: 2\n")
    overrides = [f"framework.native_config={mine}", "wandb.enabled=true", "framework.global_batch_size=64"]
    assert dry(run_root, *overrides, "framework.per_device_train_batch_size=1") == 0
    out = capsys.readouterr().out
    (run,) = run_root.iterdir()
    train = yaml.safe_load((run / "native" / "train.yaml").read_text())
    assert train["overwrite_output_dir"] is False and train["report_to"] == "wandb"
    assert train["gradient_accumulation_steps"] == 8  # 64 = 8 GPUs x 1 per device x 8
    assert "train: overwrite_output_dir=True is not used (it would restart training after a requeue" in out
    assert "train: report_to='none' is not used (wandb.enabled decides); hpcft sets 'wandb'" in out
    assert "gradient_accumulation_steps=2 is not used (framework.global_batch_size decides); hpcft sets 8" in out
    assert "train: global batch 64 = 8 processes x 1 per device x 8 accumulation steps" in out


def test_the_batch_note_describes_what_a_native_yaml_sets(run_root, tmp_path, capsys):
    mine = tmp_path / "recipe.yaml"
    mine.write_text("gradient_accumulation_steps: 2\nper_device_train_batch_size: 4\n")
    assert dry(run_root, f"framework.native_config={mine}") == 0
    assert "train: global batch 64 = 8 processes x 4 per device x 2 accumulation steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides,precision",
    [
        ([], {"bf16": True}),  # A100/H100-class GPUs: bf16, as LLaMA-Factory's own examples
        (["cluster.gpu_type=v100"], {"bf16": False, "fp16": True}),  # no bf16 before compute capability 8.0
        (["framework.bf16=false"], {"bf16": False}),
        (["cluster=slurmlab", "model=tiny_llama"], {}),  # CPU: fp32
    ],
)
def test_precision_a_practitioner_would_choose(run_root, overrides, precision):
    assert main(["model=internlm2", "cluster=8gpu", "dry_run=true", f"run_root={run_root}", *overrides]) == 0
    (run,) = run_root.iterdir()
    train = yaml.safe_load((run / "native" / "train.yaml").read_text())
    assert {k: train[k] for k in ("bf16", "fp16") if k in train} == precision
