"""The memory estimate against measured peaks, and the plans it refuses or changes
(docs/memory.md: the measured points, their models' numbers and the model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcft.cli import main
from hpcft.config.schema import DeepSpeedConfig, ModelConfig, ModelKind
from hpcft.configure import load_config
from hpcft.frameworks import adapter_for
from hpcft.frameworks.llamafactory_datasets import TrainingData
from hpcft.frameworks.llamafactory_memory import configured, estimate
from hpcft.memory import Trained, activations, estimate_memory, lora_params, loss_bytes, model_shape
from hpcft.rundir import RunLayout

QWEN2_5_0_5B = [  # Qwen/Qwen2.5-0.5B's config.json
    "model.params_b=0.494",
    "model.shape.hidden_size=896",
    "model.shape.num_hidden_layers=24",
    "model.shape.intermediate_size=4864",
    "model.shape.num_attention_heads=14",
    "model.shape.num_key_value_heads=2",
    "model.shape.vocab_size=151936",
]
QWEN2_5_7B = ["model.params_b=7.615"]  # conf/model/qwen2_5_7b.yaml carries its config.json's numbers

MEASURED = [  # docs/memory.md "Against measured peaks": nvidia-smi on one H200, bf16, LoRA rank 8 on all linear layers
    # (model, method, cutoff_len, micro-batch, the longest row's tokens (None: every row reaches the cutoff), GiB)
    (QWEN2_5_7B, "lora", 5120, 2, None, 39.5),
    (QWEN2_5_7B, "lora", 5120, 4, None, 63.8),
    (QWEN2_5_7B, "lora", 1024, 8, None, 34.7),
    (QWEN2_5_0_5B, "lora", 512, 8, 88, 3.65),  # rows of ~87 tokens, padded to a multiple of 8
    (QWEN2_5_0_5B, "full", 512, 8, 88, 10.16),
]


def one_gpu(overrides: list[str]) -> list[str]:
    return ["model=qwen2_5_7b", *overrides, "cluster=local", "cluster.gpus_per_node=1", "cluster.node_gpus=1",
            "+cluster.train.modules.liger_kernel=false"]  # measured without Liger, wherever it runs  # fmt: skip


@pytest.mark.parametrize("model,method,cutoff,batch,longest,measured", MEASURED)
def test_the_estimate_is_within_15_percent_of_every_measured_peak(model, method, cutoff, batch, longest, measured):
    plan = [f"framework.finetuning_type={method}", f"framework.cutoff_len={cutoff}", "framework.bf16=true"]
    cfg = load_config(one_gpu([*model, *plan, f"framework.per_device_train_batch_size={batch}"]))
    data = TrainingData({}, None, rows=1000, longest_tokens=longest or 10 * cutoff)
    fit = estimate(cfg, data, configured(cfg))
    assert fit.tokens.total == batch * (longest or cutoff)
    assert abs(fit.memory.total_gb / measured - 1) <= 0.15, (fit.memory.describe(), measured)


LLAMAFACTORY_TABLE = {  # LLaMA-Factory v0.9.5 README, "Hardware Requirement", marked estimated (GB; docs/memory.md)
    ("full", None): {7: 120, 14: 240, 70: 1200},
    ("lora", None): {7: 16, 14: 32, 70: 160},
    ("lora", 8): {7: 10, 14: 20, 70: 80},
    ("lora", 4): {7: 6, 14: 12, 70: 48},
}


def guessed(params_b: float) -> ModelConfig:
    return ModelConfig(name="m", path="/no/such/model", kind=ModelKind.llm, params_b=params_b)


def test_the_estimate_is_within_15_percent_of_llamafactorys_table():
    for (method, bits), sizes in LLAMAFACTORY_TABLE.items():
        for params_b, published in sizes.items():
            shape = model_shape(guessed(params_b))  # a Llama-like shape, as the table's models
            act = activations(shape, 2048, 2, True, True, loss_bytes(2))  # its examples' cutoff_len, batch 1
            trainable = params_b * 1e9 if method == "full" else lora_params(shape, 8)
            t = Trained(params=params_b * 1e9, trainable=trainable, frozen_bytes={4: 0.55, 8: 1.1}.get(bits or 0, 2.0))
            total = estimate_memory(t, DeepSpeedConfig(name="none"), 1, act).total_gb
            assert abs(total / published - 1) <= 0.15, (method, bits, params_b, total, published)


def test_zero_stages_shard_and_lora_needs_less():
    shape = model_shape(guessed(7.0))
    act = activations(shape, 1024, 2, True, True, loss_bytes(2))
    full = Trained(params=7e9, trainable=7e9, frozen_bytes=2)
    totals = [estimate_memory(full, DeepSpeedConfig(name="z", zero_stage=s), 8, act).total_gb for s in (None, 1, 2, 3)]
    assert totals == sorted(totals, reverse=True) and totals[0] > 80 > totals[3]
    offload = DeepSpeedConfig(name="o", zero_stage=3, offload_optimizer=True, offload_param=True)
    assert estimate_memory(full, offload, 8, act).total_gb < totals[3]
    lora = Trained(params=7e9, trainable=lora_params(shape, 8), frozen_bytes=2)
    qlora = Trained(params=7e9, trainable=lora_params(shape, 8), frozen_bytes=0.55)
    none = DeepSpeedConfig(name="none")
    assert estimate_memory(qlora, none, 8, act).total_gb < estimate_memory(lora, none, 8, act).total_gb < totals[0]


def test_the_logits_dominate_long_sequences_of_a_large_vocabulary():
    """The missing third of issue 33: 152k logits, their fp32 copy, log-softmax and its gradient."""
    cfg = load_config(one_gpu(["framework.cutoff_len=5120", "framework.per_device_train_batch_size=2"]))
    fit = estimate(cfg, None, configured(cfg))
    assert fit.shape.vocab == 152064 and fit.shape.source == "model.shape"
    assert fit.memory.logits_gb > 10 * fit.memory.activations_gb
    off = load_config([*one_gpu(["framework.cutoff_len=5120", "framework.per_device_train_batch_size=2"]),
                       "+framework.args.disable_gradient_checkpointing=true"])  # fmt: skip
    assert estimate(off, None, configured(off)).memory.activations_gb > 10 * fit.memory.activations_gb  # every layer's


def long_rows(path: Path, n: int, words: int) -> Path:
    path.write_text(json.dumps([{"instruction": f"q{i}", "input": "", "output": "word " * words} for i in range(n)]))
    return path


def test_a_7b_lora_at_5120_x_6_is_refused_on_80gb_with_the_numbers_and_the_batch_that_fits(tmp_path, capsys):
    """Issue 33's acceptance: rows that reach the cutoff, six to a micro-batch, need ~88 GiB."""
    args = ["model=qwen2_5_7b", "cluster=8gpu", "framework.cutoff_len=5120", "framework.per_device_train_batch_size=6"]
    args += [f"trainset={long_rows(tmp_path / 'long.json', 16, 1200)}", "dry_run=true", f"run_root={tmp_path / 'r'}"]
    args += ["+cluster.train.modules.liger_kernel=false"]  # with Liger's fused loss it fits (test_llamafactory_kernels)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().removeprefix("hpcft: error: ")
    assert len(err.splitlines()) == 1 and err.startswith("cluster.gpu_mem_gb: qwen2_5_7b (7.6B, lora")
    assert "needs ~87." in err and "micro-batch of 30720 tokens = 6 x 5120 (cutoff_len" in err, err
    assert "try framework.per_device_train_batch_size=4 framework.gradient_accumulation_steps=12 (~63 GiB)" in err
    assert not (tmp_path / "r").exists()


def test_short_rows_count_their_own_tokens_not_the_cutoff(tmp_path, capsys):
    """The same plan over rows of ~60 words: the micro-batch holds 6 rows of at most their UTF-8 bytes."""
    args = ["model=qwen2_5_7b", "cluster=8gpu", "framework.cutoff_len=5120", "framework.per_device_train_batch_size=6"]
    args += [f"trainset={long_rows(tmp_path / 'short.json', 16, 60)}", "dry_run=true", f"run_root={tmp_path / 'r'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "micro-batch of 2736 tokens = 6 x 456 (the longest row, at most 455 tokens" in out, out


def test_packed_rows_fill_the_cutoff(tmp_path):
    cfg = load_config(one_gpu(["framework.cutoff_len=4096", "+framework.args.packing=true"]))
    tokens = estimate(cfg, TrainingData({}, None, rows=10, longest_tokens=100), configured(cfg)).tokens
    assert tokens.total == 4096 and "packed" in tokens.why


def test_a_full_fine_tune_that_cannot_fit_names_zero_first(run_root, capsys):
    args = ["model=llama3_8b", "cluster=8gpu", "framework.finetuning_type=full", f"run_root={run_root}"]
    assert main(args) == 2
    assert "; try deepspeed=zero2 (~" in capsys.readouterr().err


def short_rows(path: Path, n: int) -> Path:
    path.write_text(json.dumps([{"instruction": f"Which word goes with {i}?", "output": "blue"} for i in range(n)]))
    return path


def test_rows_far_shorter_than_the_cutoff_are_packed_and_said(tmp_path, capsys):
    args = ["model=tiny_llama", "cluster=slurmlab", f"trainset={short_rows(tmp_path / 'd.json', 2000)}", "dry_run=true"]
    assert main([*args, f"run_root={tmp_path / 'a'}"]) == 0
    out = capsys.readouterr().out
    assert "train: neat_packing on: rows average at most " in out and "2000 rows pack into ~" in out
    assert "off with +framework.args.neat_packing=false" in out
    (run,) = (tmp_path / "a").iterdir()
    assert "neat_packing: true" in (run / "native" / "train.yaml").read_text()
    assert main([*args, f"run_root={tmp_path / 'b'}", "+framework.args.neat_packing=false"]) == 0
    assert "neat_packing on" not in capsys.readouterr().out
    (run,) = (tmp_path / "b").iterdir()
    assert "neat_packing: false" in (run / "native" / "train.yaml").read_text()


def test_packing_is_not_planned_for_few_rows_or_when_the_packed_batch_would_not_fit(tmp_path, capsys):
    few = ["model=tiny_llama", "cluster=slurmlab", f"trainset={short_rows(tmp_path / 'few.json', 100)}"]
    assert main([*few, "dry_run=true", f"run_root={tmp_path / 'a'}"]) == 0
    assert "neat_packing" not in capsys.readouterr().out  # 100 rows fill fewer than 8 global batches
    big = ["model=qwen2_5_7b", "cluster=8gpu", "framework.cutoff_len=5120", "framework.per_device_train_batch_size=6"]
    big += ["framework.gradient_accumulation_steps=1", f"trainset={short_rows(tmp_path / 'many.json', 20000)}"]
    assert main([*big, "dry_run=true", f"run_root={tmp_path / 'b'}"]) == 0  # packed: 6 x 5120 tokens, ~88 GiB
    out = capsys.readouterr().out
    assert "neat_packing" not in out and "micro-batch of 1056 tokens = 6 x 176 (the longest row" in out, out
    assert main([*big, "framework.per_device_train_batch_size=2", "dry_run=true", f"run_root={tmp_path / 'c'}"]) == 0
    out = capsys.readouterr().out  # packed at 2 x 5120 it fits
    assert "neat_packing on" in out and "micro-batch of 10240 tokens = 2 x 5120 (cutoff_len: rows packed to it)" in out


# ---- FlagEmbedding ------------------------------------------------------------------------------


def retrieval_rows(path: Path, n: int, words: int = 1) -> Path:
    row = {"query": "q " * 30, "pos": ["p " * words], "neg": ["n " * words] * 7}
    path.write_text("".join(json.dumps({**row, "query": f"{row['query']}{i}"}) + "\n" for i in range(n)))
    return path


def embedder_argv(tmp_path: Path, *overrides: str) -> list[str]:
    data = retrieval_rows(tmp_path / "rows.jsonl", 160, words=300)  # one global batch on 8 GPUs is 128 rows
    cfg = load_config(["model=bge_large_zh_v1_5", f"trainset={data}", *overrides])
    return adapter_for(cfg).train_job(RunLayout(tmp_path / "run")).argv


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_flagembedding_trains_in_mixed_precision_where_the_gpus_have_it(tmp_path):
    gpu = embedder_argv(tmp_path, "cluster=8gpu")
    assert flag(gpu, "--bf16") == "True" and "--fp16" not in gpu
    assert flag(embedder_argv(tmp_path, "cluster=8gpu", "cluster.gpu_type=v100"), "--fp16") == "True"
    cpu = embedder_argv(tmp_path, "cluster=slurmlab", "framework.per_device_train_batch_size=4")
    assert "--bf16" not in cpu and "--fp16" not in cpu
    off = embedder_argv(tmp_path, "cluster=8gpu", "framework.bf16=false")
    assert "--bf16" not in off and "--fp16" not in off
    fp16 = embedder_argv(tmp_path, "cluster=8gpu", "+framework.args.fp16=true")
    assert flag(fp16, "--fp16") == "True" and "--bf16" not in fp16


def test_flagembedding_dry_run_says_its_precision_and_how_to_turn_it_off(tmp_path, capsys):
    data = retrieval_rows(tmp_path / "rows.jsonl", 128)
    args = ["model=bge_large_zh_v1_5", "cluster=8gpu", f"trainset={data}", "dry_run=true", f"run_root={tmp_path / 'r'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        "train: bf16 mixed precision (the GPUs have bf16; FlagEmbedding's default fp32 with framework.bf16=false)"
        in out
    )
    assert "--bf16 True" in out and "GiB per GPU of 80" in out and "queries and passages" in out
    assert main([*args, "cluster=slurmlab"]) == 0
    out = capsys.readouterr().out
    assert "--bf16" not in out and "mixed precision" not in out
    assert main([*args, "cluster=slurmlab", "framework.bf16=true"]) == 0
    out = capsys.readouterr().out
    assert "train: bf16=True is not used (the job runs on CPU, where the Trainer refuses half precision)" in out


def test_flagembedding_turns_gradient_checkpointing_on_when_only_it_fits(tmp_path, capsys):
    small = ["cluster=8gpu", "cluster.gpu_mem_gb=24"]
    assert flag(embedder_argv(tmp_path, "cluster=8gpu"), "--gradient_checkpointing") is None
    assert flag(embedder_argv(tmp_path, *small), "--gradient_checkpointing") == "True"
    data = retrieval_rows(tmp_path / "rows.jsonl", 160, words=300)
    args = ["model=bge_large_zh_v1_5", f"trainset={data}", "dry_run=true", f"run_root={tmp_path / 'r'}", *small]
    assert main(args) == 0
    assert "off with +framework.args.gradient_checkpointing=false" in capsys.readouterr().out
    assert main([*args, "+framework.args.gradient_checkpointing=false"]) == 2
    err = capsys.readouterr().err
    assert "cluster.gpu_mem_gb: bge_large_zh_v1_5" in err and "try framework.args.gradient_checkpointing=true" in err


def test_flagembedding_that_cannot_fit_is_refused_with_a_smaller_micro_batch(tmp_path, capsys):
    data = retrieval_rows(tmp_path / "rows.jsonl", 160, words=300)
    args = ["model=bge_large_zh_v1_5", "cluster=8gpu", "cluster.gpu_mem_gb=8", f"trainset={data}", "dry_run=true"]
    assert main([*args, f"run_root={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "gradient checkpointing on) needs ~11." in err and "; try framework.per_device_train_batch_size=" in err, err
