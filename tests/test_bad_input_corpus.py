"""The bad-input corpus: every case is refused on the login node with exit status 2 and one
line naming the key or file:line, no traceback, and no sbatch call (a recording stub stands
first on PATH; tests/integration/test_slurm_pipeline.py checks the real cluster too).
Hostile values either reach the job as data or are refused; none executes.

The figures (cases, refusals, injections) are printed at the end of the test run.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from hpcft.cli import main

FIGURES = {"cases": 0, "refused_before_submit": 0, "injections": 0, "executed": 0}

Case = tuple[str, Callable[[Path], list[str]], str]


def write(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def lines(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def registry(tmp: Path, info: dict | str) -> Path:
    """A dataset_dir with `a.json` (alpaca rows) and the given dataset_info.json."""
    folder = tmp / "data_dir"
    folder.mkdir(exist_ok=True)
    (folder / "a.json").write_text(json.dumps([OK_ROW]))
    (folder / "dataset_info.json").write_text(info if isinstance(info, str) else json.dumps(info, indent=2))
    return folder


def sharegpt(tmp: Path, name: str, text: str, *extra: str) -> list[str]:
    """Arguments training on a sharegpt file holding `text`."""
    return [*LLM, "framework.dataset_format=sharegpt", *extra, f"trainset={write(tmp, name, text)}"]


def site_cluster(tmp: Path, line: str) -> list[str]:
    """A site's own cluster YAML with `line` in it, chosen with --config-dir."""
    (tmp / "site" / "cluster").mkdir(parents=True)
    (tmp / "site" / "cluster" / "mine.yaml").write_text(f"defaults: [base_cluster, _self_]\nname: mine\n{line}\n")
    return ["--config-dir", str(tmp / "site")]


def registry_folder(tmp: Path) -> Path:
    """A registry whose dataset is a folder holding a stray text file."""
    folder = registry(tmp, {"a": {"file_name": "parts"}})
    (folder / "parts").mkdir()
    (folder / "parts" / "one.json").write_text(json.dumps([OK_ROW]))
    (folder / "parts" / "notes.txt").write_text("not data")
    return folder


def empty_folder(tmp: Path) -> Path:
    folder = tmp / "nothing"
    folder.mkdir()
    (folder / "readme.md").write_text("no data here")
    return folder


def image_rows(tmp: Path, instruction: str) -> Path:
    (tmp / "cat.png").write_bytes(b"\x89PNG")
    return write(tmp, "img.jsonl", lines({**OK_ROW, "instruction": instruction, "images": ["cat.png"]}))


def eval_folder(tmp: Path, corpus: str) -> Path:
    """FlagEmbedding's eval layout with the given corpus.jsonl."""
    folder = tmp / "eval_dir"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(corpus)
    (folder / "test_queries.jsonl").write_text(lines({"id": "q1", "text": "which purrs?"}))
    (folder / "test_qrels.jsonl").write_text(lines({"qid": "q1", "docid": "d1", "relevance": 1}))
    return folder


ALIAS_BOMB = "\n".join(
    [f"x0: &x0 [{', '.join(['lol'] * 9)}]"] + [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 9)]
)
"""A billion laughs: nine aliases of nine aliases ... (9^9 strings once Hydra expanded them)."""
PYTHON_TAG = "lora_rank: !!python/object/apply:os.system [touch PWN20]"

LLM = ["model=internlm2", "cluster=8gpu"]
STUDY = ["-m", "hydra/sweeper=optuna", "model=tiny_llama", "cluster=slurmlab"]
"""An Optuna study: every value its search can yield is checked on the login node."""
CPU_LLM = ["model=tiny_llama", "cluster=slurmlab"]
RECIPE_LINES = {
    "use_badam": "use_badam: true",
    "use_galore": "use_galore: true",
    "use_apollo": "use_apollo: true",
    "use_adam_mini": "use_adam_mini: true",
    "mixture_of_depths": "mixture_of_depths: convert",
    "fp8": "fp8: true",
    "use_unsloth": "use_unsloth: true",
    "enable_liger_kernel": "enable_liger_kernel: true",
    "optim paged_adamw_8bit": "optim: paged_adamw_8bit",
    "optim adamw_bnb_8bit": "optim: adamw_bnb_8bit",
    "merge": "adapter_name_or_path: saves/lora\nexport_dir: merged",
    "inference": "infer_backend: huggingface",
    "predict only": "do_predict: true\neval_dataset: identity",
    "do_train false": "do_train: false",
    "datasets, no trainset": "do_train: true\ndataset: identity,alpaca_en_demo",
}
"""One LLaMA-Factory YAML line (or two) a recipe holds, by corpus case."""


def recipe(tmp: Path, name: str) -> list[str]:
    """A LLaMA-Factory YAML holding the case's lines, given as `framework.native_config`."""
    text = RECIPE_LINES[name]
    not_training = {"merge", "inference", "predict only", "do_train false", "datasets, no trainset"}
    head = "" if name in not_training else "do_train: true\n"
    args = [f"framework.native_config={write(tmp, 'recipe.yaml', head + text + chr(10))}"]
    return args if "no trainset" in name else [*args, f"trainset={write(tmp, 'd.json', json.dumps([OK_ROW]))}"]


def registry_named(tmp: Path, file_name: str) -> Path:
    """A dataset_dir whose one dataset's file is `file_name` (alpaca rows)."""
    folder = registry(tmp, {"a": {"file_name": file_name}})
    (folder / file_name).write_text(json.dumps([OK_ROW]))
    return folder


OK_ROW = {"instruction": "a", "output": "b"}
OK_RETRIEVAL = {"query": "q", "pos": ["p"], "neg": ["n"]}
SG_OK = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
SG_SWAPPED = {"conversations": SG_OK["conversations"][::-1]}
SG_ODD = {"conversations": SG_OK["conversations"][:1]}
SG_CHOSEN_STR = {**SG_ODD, "chosen": "a", "rejected": {"from": "gpt", "value": "b"}}
SHAREGPT_TAGS = {"a": {"file_name": "a.json", "formatting": "sharegpt", "tags": {"role_tag": 1}}}
UNLISTED_COLUMN = {
    "a": {"file_name": "a.json", "columns": {"prompt": "instruction", "response": "output", "system": "s"}}
}

PLANTED_SECRETS = {
    "HF_TOKEN": "hf_" + "PlAnTeDtOkEnFoRtHeCoRpUsOnLyXyZaBc",
    "WANDB_API_KEY": "c0ffee" * 6 + "c0ff",
    "OPENAI_API_KEY": "sk-" + "C0rpusK3yN0tR3alButL0ngEnough4Test" * 2,
    "AWS_SECRET_ACCESS_KEY": "c0rpus/AWS+s3cret/v4lue/0f/f0rty/chars",
    "SITE_DB_PASSWORD": "n0t so s3cret after all",
}
"""The submitting shell's credentials, planted for every case: no refusal may echo one."""

CASES: list[Case] = [
    # config groups and keys
    ("unknown model", lambda t: ["model=nope"], "model: unknown model option 'nope'"),
    ("unknown cluster", lambda t: [*LLM, "cluster=nope"], "cluster: unknown cluster option"),
    ("unknown framework", lambda t: [*LLM, "framework=nope"], "framework: unknown framework option"),
    ("unknown deepspeed", lambda t: [*LLM, "deepspeed=zero5"], "deepspeed: unknown deepspeed option 'zero5'"),
    ("no model", lambda t: ["cluster=8gpu"], "model: no model chosen"),
    ("misspelled key", lambda t: [*LLM, "framework.learnin_rate=1"], "did you mean 'learning_rate'"),
    ("unknown top-level key", lambda t: [*LLM, "bogus=1"], "bogus: unknown key"),
    ("wrong type int", lambda t: [*LLM, "cluster.nodes=abc"], "cluster.nodes: Value 'abc'"),
    ("wrong type float", lambda t: [*LLM, "framework.learning_rate=fast"], "framework.learning_rate: Value 'fast'"),
    ("bad override syntax", lambda t: [*LLM, "name=a'b"], "quote values with special characters"),
    # numbers out of range
    ("zero batch", lambda t: [*LLM, "framework.per_device_train_batch_size=0"], "must be > 0 (got 0)"),
    ("negative batch", lambda t: [*LLM, "framework.per_device_train_batch_size=-2"], "must be > 0 (got -2)"),
    ("val_size 1", lambda t: [*LLM, "framework.val_size=1.0"], "framework.val_size: must be in [0.0, 1.0)"),
    ("val_size negative", lambda t: [*LLM, "framework.val_size=-0.1"], "framework.val_size: must be in"),
    ("cutoff_len 0", lambda t: [*LLM, "framework.cutoff_len=0"], "framework.cutoff_len: must be > 0"),
    ("cutoff_len negative", lambda t: [*LLM, "framework.cutoff_len=-5"], "framework.cutoff_len: must be > 0"),
    ("epochs 0", lambda t: [*LLM, "framework.num_train_epochs=0"], "framework.num_train_epochs: must be > 0"),
    ("learning rate 0", lambda t: [*LLM, "framework.learning_rate=0"], "framework.learning_rate: must be > 0"),
    ("accumulation 0", lambda t: [*LLM, "framework.gradient_accumulation_steps=0"], "must be > 0"),
    ("global batch not divisible", lambda t: [*LLM, "framework.global_batch_size=100"], "not a multiple of 8"),
    ("lora rank 0", lambda t: [*LLM, "framework.lora_rank=0"], "framework.lora_rank: must be > 0"),
    # a key added with + that no schema has: accepted and never read, before
    ("typo added with +", lambda t: [*LLM, "+framework.lora_rnak=8"], "did you mean 'lora_rank'"),
    ("unknown top-level key added", lambda t: [*LLM, "+bogus.key=1"], "bogus: unknown key 'bogus'"),
    ("unknown cluster key added", lambda t: [*LLM, "+cluster.train.partiton=gpu"], "did you mean 'partition'"),
    ("another framework's key", lambda t: [*LLM, "+framework.train_group_size=4"], "of framework=flagembedding"),
    ("max_samples 0", lambda t: [*LLM, "framework.max_samples=0"], "framework.max_samples: must be > 0"),
    ("max_new_tokens 0", lambda t: [*LLM, "eval.max_new_tokens=0"], "eval.max_new_tokens: must be > 0"),
    # accepted before, then failed in the queue (non-finite, out of range, Slurm patterns)
    ("learning rate NaN", lambda t: [*LLM, "framework.learning_rate=nan"], "framework.learning_rate: must be a finite"),
    ("learning rate inf", lambda t: [*LLM, "framework.learning_rate=inf"], "framework.learning_rate: must be a finite"),
    ("GPU memory NaN", lambda t: [*LLM, "cluster.gpu_mem_gb=nan"], "cluster.gpu_mem_gb: must be a finite"),
    ("model size NaN", lambda t: [*LLM, "model.params_b=nan"], "model.params_b: must be a finite"),
    ("val_size NaN", lambda t: [*LLM, "framework.val_size=nan"], "framework.val_size: must be a finite"),
    ("temperature NaN", lambda t: ["model=minilm", "framework.temperature=nan"], "framework.temperature: must be a"),
    ("negative seed", lambda t: [*LLM, "seed=-1"], "seed: must be in [0, 4294967295]"),
    ("huge seed", lambda t: [*LLM, "seed=99999999999"], "seed: must be in [0, 4294967295]"),
    ("float seed", lambda t: [*LLM, "seed=1e30"], "seed: Value '1e+30' of type 'float' could not be converted"),
    ("epochs 1e30", lambda t: [*LLM, "framework.num_train_epochs=1e30"], "must be at most 10000"),
    ("time limit 0", lambda t: [*LLM, "cluster.time=0"], "cluster.time: must be more than 0"),
    ("time limit 0:00:00", lambda t: [*LLM, "cluster.time=00:00:00"], "cluster.time: must be more than 0"),
    ("eval time 0", lambda t: [*LLM, "eval.time=0"], "eval.time: must be more than 0"),
    ("memory not a size", lambda t: [*LLM, "cluster.mem=lots"], "cluster.mem: bad memory size 'lots'"),
    ("memory with a space", lambda t: [*LLM, "cluster.mem='200 G'"], "cluster.mem: bad memory size"),
    ("% in a name", lambda t: [*LLM, "name=%x%j"], "'%' is a Slurm file-name pattern"),
    ("/ in a name", lambda t: [*LLM, "name=a/b"], "name: must be one folder name"),
    ("name ..", lambda t: [*LLM, "name=.."], "name: must be one folder name"),
    ("name of 300 characters", lambda t: [*LLM, "name=" + "x" * 300], "name: at most 100 characters"),
    ("/ in a model name", lambda t: [*LLM, "model.name=org/model"], "model.name: must be one folder name"),
    (
        "unknown key in a site cluster YAML",
        lambda t: [*site_cluster(t, "partiton: gpu"), "model=internlm2", "cluster=mine"],
        "cluster.partiton: unknown key 'partiton'; did you mean 'partition'",
    ),
    (
        "model not downloaded, nodes offline",
        lambda t: [*LLM, "model.path=internlm/not-downloaded-7b"],
        "model.path: internlm/not-downloaded-7b is neither",
    ),
    ("empty model folder", lambda t: [*LLM, f"model.path={t}"], "is a folder without config.json"),
    # YAML a site or a user wrote: file:line, data only, bounded
    (
        "duplicate key in a site cluster YAML",
        lambda t: [*site_cluster(t, "partition: a\npartition: b"), "model=internlm2", "cluster=mine"],
        "mine.yaml:4: invalid YAML: duplicate key 'partition' (first on line 3)",
    ),
    (
        "tab in a site cluster YAML",
        lambda t: [*site_cluster(t, "\tpartition: a"), "model=internlm2", "cluster=mine"],
        "mine.yaml:3: a tab; YAML indents with spaces only",
    ),
    (
        "alias bomb in a site cluster YAML",
        lambda t: [*site_cluster(t, ALIAS_BOMB), "model=internlm2", "cluster=mine"],
        "mine.yaml:5: invalid YAML: aliases expand to more than 500 nodes",
    ),
    (
        "Python tag in a native YAML",
        lambda t: [*LLM, f"framework.native_config={write(t, 'py.yaml', PYTHON_TAG)}"],
        "py.yaml:1: the tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
    ),
    ("deleting the model group", lambda t: ["~model", "cluster=8gpu"], "model: ~model deletes the model group"),
    ("run root under /proc", lambda t: [*LLM, "run_root=/proc/hpcft-runs", "dry_run=true"], "run_root: cannot"),
    # more ranges, and the eval job's settings
    ("eval concurrency 0", lambda t: [*LLM, "eval.concurrency=0"], "eval.concurrency: must be > 0"),
    ("eval retries negative", lambda t: [*LLM, "eval.retries=-1"], "eval.retries: must be >= 0"),
    (
        "eval refusals past 1",
        lambda t: [*LLM, "eval.max_refused_fraction=1.5"],
        "eval.max_refused_fraction: must be in [0, 1]",
    ),
    ("request timeout 0", lambda t: [*LLM, "eval.request_timeout_s=0"], "eval.request_timeout_s: must be > 0"),
    ("requeues negative", lambda t: [*LLM, "cluster.max_requeues=-1"], "cluster.max_requeues: must be >= 0"),
    ("array parallelism 0", lambda t: [*LLM, "cluster.array_parallelism=0"], "cluster.array_parallelism: must be > 0"),
    ("signal delay negative", lambda t: [*LLM, "cluster.signal_delay_s=-5"], "cluster.signal_delay_s: must be >= 0"),
    ("port out of range", lambda t: [*LLM, "deploy.port=70000"], "deploy.port: must be in [0, 65535]"),
    ("deploy GPUs over a node", lambda t: [*LLM, "deploy.gpus=99"], "deploy.gpus: 99 exceed the 8 GPUs"),
    ("global batch 0", lambda t: [*LLM, "framework.global_batch_size=0"], "framework.global_batch_size: must be > 0"),
    ("unknown stage", lambda t: [*LLM, "framework.stage=grpo"], "framework.stage: unknown value 'grpo'"),
    ("ppo", lambda t: [*LLM, "framework.stage=ppo"], "framework.stage: ppo needs a trained reward model"),
    ("reward model served", lambda t: [*LLM, "framework.stage=rm"], "stage rm trains a reward model"),
    ("unknown data format", lambda t: [*LLM, "framework.dataset_format=xml"], "unknown value 'xml'"),
    ("eval file missing", lambda t: [*LLM, f"evalset={t}/gone.json"], "gone.json: no such file"),
    ("train group of 1", lambda t: ["model=minilm", "framework.train_group_size=1"], "train_group_size: must be >= 2"),
    ("unknown pooling", lambda t: ["model=minilm", "model.pooling=max"], "model.pooling: unknown value 'max'"),
    # more data layouts LLaMA-Factory would skip or fail on
    (
        "sharegpt turns not a list",
        lambda t: sharegpt(t, "l.jsonl", lines({"conversations": "hi"})),
        "l.jsonl:1: field 'conversations' must be a non-empty list",
    ),
    (
        "sharegpt turn without its value",
        lambda t: sharegpt(t, "v.jsonl", lines({"conversations": [{"from": "human"}]})),
        "v.jsonl:1: conversations[0] must have 'from' and 'value'",
    ),
    (
        "alpaca history not pairs",
        lambda t: [*LLM, f"trainset={write(t, 'h.jsonl', lines({**OK_ROW, 'history': [['only one']]}))}"],
        "h.jsonl:1: field 'history' must be a list of [instruction, answer] string pairs",
    ),
    (
        "tools not a list",
        lambda t: sharegpt(t, "n.jsonl", lines({**SG_OK, "tools": "42"})),
        "n.jsonl:1: field 'tools' must encode a list of function definitions",
    ),
    (
        "dpo chosen empty",
        lambda t: [
            *LLM,
            "framework.stage=dpo",
            f"trainset={write(t, 'e.jsonl', lines({'instruction': 'q', 'chosen': '', 'rejected': 'b'}))}",
        ],
        "e.jsonl:1: field 'chosen' must be a non-empty string",
    ),
    (
        "registry folder with a text file",
        lambda t: [*LLM, f"trainset={registry_folder(t)}"],
        "a dataset folder must hold .json / .jsonl files, or .txt files, only",
    ),
    # FlagEmbedding's data model
    (
        "FlagEmbedding text file",
        lambda t: ["model=minilm", f"trainset={write(t, 'd.txt', 'x')}"],
        "FlagEmbedding reads only .json",
    ),
    (
        "FlagEmbedding folder without data",
        lambda t: ["model=minilm", f"trainset={empty_folder(t)}"],
        "no .json or .jsonl files",
    ),
    (
        "distillation without scores",
        lambda t: [
            "model=minilm",
            "+framework.args.knowledge_distillation=true",
            f"trainset={write(t, 'k.jsonl', lines(OK_RETRIEVAL))}",
        ],
        "k.jsonl:1: field 'pos_scores' is needed with knowledge_distillation",
    ),
    # fit between parts
    ("framework does not fit kind", lambda t: [*LLM, "framework=flagembedding"], "does not fit model 'internlm2'"),
    ("GPUs over the node", lambda t: [*LLM, "cluster.gpus_per_node=16"], "exceed the 8 a node"),
    ("nodes over the cluster", lambda t: [*LLM, "cluster.nodes=3"], "3 nodes exceed the 1"),
    ("bad time format", lambda t: [*LLM, "cluster.time=1h"], "cluster.time: bad time limit '1h'"),
    ("bad time format 2", lambda t: [*LLM, "cluster.time=1:2:3:4"], "cluster.time: bad time limit"),
    ("unknown backend", lambda t: [*LLM, "deploy.backend=tgi"], "deploy.backend: unknown value 'tgi'"),
    ("vLLM context of 0", lambda t: [*LLM, "deploy.max_model_len=0"], "max_model_len: must be > 0"),
    ("QLoRA without GPUs", lambda t: ["model=internlm2", "framework.quantization_bit=4"], "QLoRA needs GPUs"),
    ("does not fit the GPU", lambda t: [*LLM, "cluster.gpu_mem_gb=10"], "cluster.gpu_mem_gb: internlm2"),
    ("stages not a prefix", lambda t: [*LLM, "stages=[eval]"], "stages: must be a non-empty prefix"),
    # native arguments
    ("unknown native argument", lambda t: [*LLM, "+framework.args.lora_dropoutt=0.1"], "'lora_dropout'"),
    ("first-class as native", lambda t: [*LLM, "+framework.args.learning_rate=1"], "is a first-class option"),
    ("managed native argument", lambda t: [*LLM, "+framework.args.output_dir=/x"], "is set by hpcft"),
    (
        "unknown key in native YAML",
        lambda t: [*LLM, f"framework.native_config={write(t, 'n.yaml', 'lr: 1')}"],
        "n.yaml:1: unknown argument 'lr'",
    ),
    # paths
    ("model path missing", lambda t: [*LLM, f"model.path={t}/none"], "model.path: no model folder"),
    ("run root is a file", lambda t: [*LLM, f"run_root={write(t, 'f', 'x')}"], "is not a folder"),
    ("run root under a file", lambda t: [*LLM, f"run_root={write(t, 'g', 'x')}/runs"], "cannot be created"),
    ("run root with %", lambda t: [*LLM, f"run_root={t}/a%jb"], "'%' is a Slurm file-name pattern"),
    ("newline in a name", lambda t: [*LLM, "name='a\nb'"], "name: control characters"),
    # the run's umask: three octal digits, the owner's 0
    (
        "umask misread from YAML",
        lambda t: [*site_cluster(t, "umask: 027"), "model=internlm2", "cluster=mine"],
        "cluster.umask: must be three octal digits starting with 0, quoted in YAML",
    ),
    ("umask locking the owner out", lambda t: [*LLM, "cluster.umask=700"], "cluster.umask: must be three octal"),
    # secrets, known by value: the shell's credentials and the shapes of common tokens
    (
        "HF token in a site variable",
        lambda t: [*LLM, "+cluster.env.MYVAR=${oc.env:HF_TOKEN}"],
        "cluster.env.MYVAR: holds the value of HF_TOKEN",
    ),
    (
        "W&B key in a comment",
        lambda t: [*LLM, "+cluster.additional_parameters.comment=${oc.env:WANDB_API_KEY}"],
        "cluster.additional_parameters.comment: holds the value of WANDB_API_KEY",
    ),
    (
        "OpenAI key as the run name",
        lambda t: [*LLM, "name=${oc.env:OPENAI_API_KEY}"],
        "name: holds the value of OPENAI_API_KEY",
    ),
    (
        "AWS secret in the account",
        lambda t: [*LLM, "cluster.account=${oc.env:AWS_SECRET_ACCESS_KEY}"],
        "cluster.account: holds the value of AWS_SECRET_ACCESS_KEY",
    ),
    (
        "password in a setup line",
        lambda t: [*LLM, "cluster.setup=['login ${oc.env:SITE_DB_PASSWORD}']"],
        "cluster.setup[0]: holds the value of SITE_DB_PASSWORD",
    ),
    (
        "HF token typed into srun flags",
        lambda t: [*LLM, "cluster.srun_args=['--comment=hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567']"],
        "cluster.srun_args[0]: holds a Hugging Face token",
    ),
    (
        "GitHub token in a stage partition",
        lambda t: [*LLM, "cluster.deploy.partition=ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"],
        "cluster.deploy.partition: holds a GitHub token",
    ),
    (
        "AWS key id in an interpreter word",
        lambda t: [*LLM, "cluster.python=[/usr/bin/env,AKIAIOSFODNN7EXAMPLE,python3]"],
        "cluster.python[1]: holds an AWS access key id",
    ),
    (
        "W&B key shape in a stage variable",
        lambda t: [*LLM, "+cluster.eval.env.NOTE=" + "0123456789abcdef" * 2 + "01234567"],
        "cluster.eval.env.NOTE: holds a W&B API key",
    ),
    (
        "credential variable in env",
        lambda t: [*LLM, "+cluster.env.MY_API_KEY=abc"],
        "cluster.env.MY_API_KEY: looks like a secret",
    ),
    # data files
    ("train file missing", lambda t: [*LLM, f"trainset={t}/none.json"], "none.json: no such file"),
    ("train file empty", lambda t: [*LLM, f"trainset={write(t, 'e.json', '')}"], "e.json: the file is empty"),
    ("not UTF-8", lambda t: [*LLM, f"trainset={write(t, 'u.json', bytes([0x5B, 0xFF, 0x5D]))}"], "not UTF-8"),
    (
        "truncated JSON",
        lambda t: [*LLM, f"trainset={write(t, 't.json', '[' + json.dumps(OK_ROW) + ',')}"],
        "t.json:1: invalid JSON: the array is not closed",
    ),
    (
        "row without output",
        lambda t: [*LLM, f"trainset={write(t, 'w.jsonl', lines(OK_ROW, {'instruction': 'x'}))}"],
        "w.jsonl:2: missing field 'output'",
    ),
    (
        "eval set without answers",
        lambda t: [*LLM, f"evalset={write(t, 'ev.jsonl', lines(OK_ROW, {'instruction': 'x', 'output': ''}))}"],
        "ev.jsonl:2: field 'output' must be a non-empty string",
    ),
    (
        "sharegpt bad role",
        lambda t: [
            *LLM,
            "framework.dataset_format=sharegpt",
            f"trainset={write(t, 's.jsonl', lines({'messages': [{'role': 'bot', 'content': 'x'}]}))}",
        ],
        "s.jsonl:1: messages: turn 1 is 'bot' where LLaMA-Factory expects 'user' or 'observation'",
    ),
    (
        "dpo without rejected",
        lambda t: [
            *LLM,
            "framework.stage=dpo",
            f"trainset={write(t, 'd.jsonl', lines({'instruction': 'q', 'chosen': 'a'}))}",
        ],
        "d.jsonl:1: missing field 'rejected'",
    ),
    # the JSON reader is as strict as the standard
    (
        "byte-order mark",
        lambda t: [*LLM, "trainset=" + str(write(t, "b.json", b"\xef\xbb\xbf[]"))],
        "b.json:1: starts with a",
    ),
    ("NaN", lambda t: [*LLM, "trainset=" + str(write(t, "n.json", '[{"instruction": NaN}]'))], "n.json:1: NaN is not"),
    (
        "trailing comma",
        lambda t: [*LLM, "trainset=" + str(write(t, "c.json", "[" + json.dumps(OK_ROW) + ",\n]"))],
        "c.json:2",
    ),
    (
        "missing comma",
        lambda t: [*LLM, "trainset=" + str(write(t, "m.json", f"[{json.dumps(OK_ROW)}\n{json.dumps(OK_ROW)}]"))],
        "m.json:2: invalid JSON: a missing comma",
    ),
    (
        "text after the array",
        lambda t: [*LLM, f"trainset={write(t, 'x.json', f'[{json.dumps(OK_ROW)}] more')}"],
        "x.json:1: invalid JSON: text after",
    ),
    (
        "JSONL row not an object",
        lambda t: [*LLM, "trainset=" + str(write(t, "o.jsonl", lines(OK_ROW) + "[1]\n"))],
        "o.jsonl:2: each row must be a JSON object",
    ),
    # LLaMA-Factory's data model: rows it would skip, registries it would refuse
    (
        "sharegpt wrong turn order",
        lambda t: sharegpt(t, "o.json", json.dumps([SG_SWAPPED, SG_OK])),
        "o.json:1: conversations: turn 1 is 'gpt' where LLaMA-Factory expects 'human' or 'observation'",
    ),
    (
        "sharegpt odd turns",
        lambda t: sharegpt(t, "p.jsonl", lines(SG_OK, SG_ODD)),
        "p.jsonl:2: conversations: 1 turns after the system turn; they must alternate and end with an answer",
    ),
    (
        "sharegpt tools not JSON",
        lambda t: sharegpt(t, "q.jsonl", lines({**SG_OK, "tools": "[{"})),
        "q.jsonl:1: field 'tools' is not valid JSON",
    ),
    (
        "dpo sharegpt chosen not a turn",
        lambda t: sharegpt(t, "r.jsonl", lines(SG_CHOSEN_STR), "framework.stage=dpo"),
        "r.jsonl:1: field 'chosen' must be an answer turn ('gpt')",
    ),
    (
        "registry not JSON",
        lambda t: [*LLM, "trainset=" + str(registry(t, '{\n  "a": '))],
        "dataset_info.json:2: invalid JSON",
    ),
    (
        "registry unknown key",
        lambda t: [*LLM, f"trainset={registry(t, {'a': {'file_name': 'a.json', 'colums': {}}})}"],
        "dataset 'a': unknown key 'colums'; did you mean 'columns'?",
    ),
    (
        "registry unknown column",
        lambda t: [*LLM, f"trainset={registry(t, {'a': {'file_name': 'a.json', 'columns': {'answer': 'o'}}})}"],
        "unknown key 'answer'",
    ),
    (
        "registry bad tag type",
        lambda t: [*LLM, f"trainset={registry(t, SHAREGPT_TAGS)}"],
        "role_tag must be a string or null",
    ),
    (
        "registry unknown dataset",
        lambda t: [*LLM, f"trainset={registry(t, {'alpaca': {'file_name': 'a.json'}})}", "framework.dataset=[alpacca]"],
        "unknown dataset 'alpacca'; did you mean 'alpaca'?",
    ),
    (
        "registry dataset not named",
        lambda t: [*LLM, f"trainset={registry(t, {'a': {'file_name': 'a.json'}, 'b': {'file_name': 'a.json'}})}"],
        "framework.dataset=[a,b]",
    ),
    (
        "registry column in no row",
        lambda t: [*LLM, f"trainset={registry(t, UNLISTED_COLUMN)}"],
        "dataset 'a': columns.system is 's', which no row of its file has",
    ),
    (
        "registry file missing",
        lambda t: [*LLM, f"trainset={registry(t, {'a': {'file_name': 'gone.json'}})}"],
        "gone.json: no such file (dataset 'a')",
    ),
    (
        "registry hub dataset offline",
        lambda t: [*LLM, "cluster.internet=false", f"trainset={registry(t, {'a': {'hf_hub_url': 'x/y'}})}"],
        "dataset 'a' is on a hub (x/y) and compute nodes are offline",
    ),
    (
        "registry ranking for sft",
        lambda t: [*LLM, f"trainset={registry(t, {'a': {'file_name': 'a.json', 'ranking': True}})}"],
        "dataset 'a' does not fit stage sft: it needs no ranking",
    ),
    (
        "registry kto without tag",
        lambda t: [*LLM, "framework.stage=kto", f"trainset={registry(t, {'a': {'file_name': 'a.json'}})}"],
        "stage kto needs columns.kto_tag",
    ),
    (
        "image file missing",
        lambda t: [
            *LLM,
            f"trainset={write(t, 'i.jsonl', lines({**OK_ROW, 'instruction': '<image>a', 'images': ['no.png']}))}",
        ],
        "i.jsonl:1: field 'images': no such file 'no.png'",
    ),
    (
        "image tokens mismatch",
        lambda t: [*LLM, f"trainset={image_rows(t, '<image><image>a')}"],
        "2 <image> tokens but 1 images",
    ),
    ("images for a text model", lambda t: [*LLM, f"trainset={image_rows(t, '<image>a')}"], "is a text-only model"),
    ("dataset without a registry", lambda t: [*LLM, "framework.dataset=[a]"], "set trainset to their dataset_dir"),
    (
        "empty neg",
        lambda t: [
            "model=minilm",
            f"trainset={write(t, 'r.jsonl', lines(OK_RETRIEVAL, {'query': 'q', 'pos': ['p'], 'neg': []}))}",
        ],
        "r.jsonl:2: field 'neg' must be a non-empty list",
    ),
    (
        "missing pos",
        lambda t: ["model=minilm", f"trainset={write(t, 'm.jsonl', lines({'query': 'q', 'neg': ['n']}))}"],
        "m.jsonl:1: field 'pos' must be a non-empty list",
    ),
    # an Optuna study's search space and sweeper settings
    (
        "study choice with a bad value",
        lambda t: [*STUDY, "framework.lora_rank=choice(4,0)"],
        "may take framework.lora_rank=0",
    ),
    (
        "study interval reversed",
        lambda t: [*STUDY, "framework.learning_rate=interval(1e-2,1e-4)"],
        "framework.learning_rate=interval(1e-2,1e-4): Optuna refuses it: its low end 0.01 is above its high end",
    ),
    (
        "study log interval from 0",
        lambda t: [*STUDY, "framework.learning_rate=tag(log,interval(0,1e-2))"],
        "Optuna refuses it: a log scale needs a low end above 0",
    ),
    ("study range from 0", lambda t: [*STUDY, "framework.lora_rank=range(0,8,2)"], "framework.lora_rank: must be > 0"),
    ("study float interval on an integer", lambda t: [*STUDY, "framework.lora_rank=interval(4,64)"], "as floats"),
    ("study zero trials at a time", lambda t: [*STUDY, "hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs: must be > 0"),
    ("study of no trial", lambda t: [*STUDY, "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials: must be > 0"),
    ("sweep over range(0)", lambda t: ["-m", *LLM, "framework.lora_rank=range(0)"], "range(0): sweeps over no value"),
    ("study unknown sampler", lambda t: [*STUDY, "hydra/sweeper/sampler=bayes"], "unknown sampler 'bayes'"),
    (
        "JSON nested 200k deep",
        lambda t: [*LLM, f"trainset={write(t, 'deep.json', '[' * 200_000 + ']' * 200_000)}"],
        "deep.json:1: invalid JSON: arrays or objects nested too deeply to read",
    ),
    (
        "JSONL row nested 200k deep",
        lambda t: [*LLM, "trainset=" + str(write(t, "deep.jsonl", '{"instruction": ' + "[" * 200_000 + "]" * 200_000))],
        "deep.jsonl:1: invalid JSON: arrays or objects nested too deeply to read",
    ),
    (
        "retrieval corpus row without text",
        lambda t: ["model=minilm", f"evalset={eval_folder(t, lines({'id': 'd1', 'title': 'cats'}))}"],
        "corpus.jsonl:1: missing field 'text'",
    ),
    # What used to pass the login node and then fail where the job runs (issue: "what the login
    # node accepts, the job runs"); LLaMA-Factory's own recipes: tests/test_framework_oracle.py.
    *[
        (f"recipe: {name}", lambda t, n=name: [*CPU_LLM, *recipe(t, n)], why)
        for name, why in {
            "use_badam": "pip install badam",
            "use_galore": "pip install galore-torch",
            "use_apollo": "pip install apollo-torch",
            "use_adam_mini": "pip install adam-mini",
            "mixture_of_depths": "pip install mixture-of-depth",
            "fp8": "FP8 training needs GPUs",
            "use_unsloth": "Unsloth's kernels need GPUs",
            "enable_liger_kernel": "Liger's Triton kernels need GPUs",
            "optim paged_adamw_8bit": "a bitsandbytes optimizer that needs GPUs",
            "optim adamw_bnb_8bit": "a bitsandbytes optimizer that needs GPUs",
            "merge": "a merge/export recipe",
            "inference": "an inference recipe",
            "predict only": "a predict-only recipe",
            "do_train false": "does not train",
            "datasets, no trainset": "and no trainset is given",
        }.items()
    ],
    ("data file .JSON", lambda t: [*LLM, f"trainset={write(t, 'd.JSON', json.dumps([OK_ROW]))}"], "case-sensitively"),
    ("data file without extension", lambda t: [*LLM, f"trainset={write(t, 'd', json.dumps([OK_ROW]))}"], "extension"),
    ("data file .txt for sft", lambda t: [*LLM, f"trainset={write(t, 'd.txt', 'plain')}"], "extension"),
    (
        "registered file .Json",
        lambda t: [*LLM, f"trainset={registry_named(t, 'a.Json')}"],
        "case-sensitively",
    ),
    ("unknown chat template", lambda t: [*LLM, "model.template=lama3"], "did you mean 'llama3'"),
    ("empty chat template name", lambda t: [*LLM, "model.template=qwen9"], "unknown LLaMA-Factory chat template"),
    (
        "answers longer than the served context",
        lambda t: [*LLM, "deploy.max_model_len=512", "eval.max_new_tokens=512"],
        "eval.max_new_tokens: 512 leaves no room for a prompt",
    ),
    (
        "embedder rows fewer than one batch",
        lambda t: [
            "model=minilm",
            "cluster=slurmlab",
            f"trainset={write(t, 'ten.jsonl', lines(*[OK_RETRIEVAL] * 10))}",
        ],
        "10 training rows are fewer than one batch of 16",
    ),
    (
        "embedder rows fewer than one batch over 2 nodes",
        lambda t: [
            "model=minilm",
            "cluster=slurmlab",
            "cluster.nodes=2",
            "framework.per_device_train_batch_size=8",
            f"trainset={write(t, 'f.jsonl', lines(*[OK_RETRIEVAL] * 12))}",
        ],
        "fewer than one batch of 16 (2 process(es)",
    ),
    (
        "misaligned scores",
        lambda t: [
            "model=minilm",
            f"trainset={write(t, 'sc.jsonl', lines({**OK_RETRIEVAL, 'neg_scores': [0.1, 0.2]}))}",
        ],
        "sc.jsonl:1: field 'neg_scores' must be a list as long as 'neg'",
    ),
]


SECRET_WORDS = "; scripts, job names, sbatch options and run folders are readable by other users"
CASES += [
    # more secrets, by value after interpolation or by shape, wherever a value reaches a job
    ("HF token as the W&B project", lambda t: [*LLM, "wandb.project=${oc.env:HF_TOKEN}"], "wandb.project: holds the v"),
    ("W&B key as the qos", lambda t: [*LLM, "cluster.qos=${oc.env:WANDB_API_KEY}"], "cluster.qos: holds the value"),
    (
        "OpenAI key as a constraint",
        lambda t: [*LLM, "cluster.constraint=${oc.env:OPENAI_API_KEY}"],
        "cluster.constraint: holds the value of OPENAI_API_KEY from your environment" + SECRET_WORDS,
    ),
    (
        "password as the partition",
        lambda t: [*LLM, "cluster.partition=${oc.env:SITE_DB_PASSWORD}"],
        "cluster.partition: holds the value of SITE_DB_PASSWORD",
    ),
    ("AWS secret as the W&B group", lambda t: [*LLM, "wandb.group=${oc.env:AWS_SECRET_ACCESS_KEY}"], "wandb.group: ho"),
    ("HF token as the model name", lambda t: [*LLM, "model.name=${oc.env:HF_TOKEN}"], "model.name: holds the value"),
    (
        "W&B key in a native argument",
        lambda t: [*LLM, "+framework.args.run_name=${oc.env:WANDB_API_KEY}"],
        "framework.args.run_name: holds the value of WANDB_API_KEY",
    ),
    (
        "OpenAI-style key typed into a deploy setup line",
        lambda t: [*LLM, "cluster.deploy.setup=['export K=sk-" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd']"],
        "cluster.deploy.setup[0]: holds an OpenAI-style API key",
    ),
    (
        "GitHub token as the W&B entity",
        lambda t: [*LLM, "wandb.entity=github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"],
        "wandb.entity: holds a GitHub token",
    ),
    (
        "HF token in the train stage's srun flags",
        lambda t: [*LLM, "cluster.train.srun_args=['--comment=${oc.env:HF_TOKEN}']"],
        "cluster.train.srun_args[0]: holds the value of HF_TOKEN",
    ),
    ("secret in the run root", lambda t: [*LLM, "run_root=/tmp/${oc.env:HF_TOKEN}"], "run_root: holds the value"),
    (
        "secret in a data path",
        lambda t: [*LLM, "trainset=/tmp/${oc.env:WANDB_API_KEY}.json"],
        "trainset: holds the value of WANDB_API_KEY",
    ),
    # hostile or wrong paths
    ("a process's environment as data", lambda t: [*LLM, "trainset=/proc/self/environ"], "environ: LLaMA-Factory"),
    ("a folder without a registry as data", lambda t: [*LLM, f"trainset={empty_folder(t)}"], "no dataset_info.json"),
    ("a folder as the eval set", lambda t: [*LLM, f"evalset={t}"], "not a file (a JSON or JSONL file)"),
    ("newline in the run root", lambda t: [*LLM, "run_root='/tmp/a\nb'"], "run_root: control characters"),
    # YAML: file:line, data only, bounded
    (
        "unclosed list in a site cluster YAML",
        lambda t: [*site_cluster(t, "partition: [a, b"), "model=internlm2", "cluster=mine"],
        "mine.yaml:4: invalid YAML: expected ',' or ']'",
    ),
    (
        "duplicate key in a native YAML",
        lambda t: [*LLM, f"framework.native_config={write(t, 'd.yaml', 'lora_rank: 4' + chr(10) + 'lora_rank: 8')}"],
        "d.yaml:2: invalid YAML: duplicate key 'lora_rank' (first on line 1)",
    ),
    (
        "alias bomb in a native YAML",
        lambda t: [*LLM, f"framework.native_config={write(t, 'b.yaml', ALIAS_BOMB)}"],
        "b.yaml:3: invalid YAML: aliases expand to more than 500 nodes",
    ),
    (
        "tab in a native YAML",
        lambda t: [*LLM, f"framework.native_config={write(t, 't.yaml', chr(9) + 'lora_rank: 4')}"],
        "t.yaml:1: a tab; YAML indents with spaces only",
    ),
    (
        "native YAML not a mapping",
        lambda t: [*LLM, f"framework.native_config={write(t, 'l.yaml', '- a')}"],
        "l.yaml: must be a mapping of argument names to values",
    ),
    ("native YAML missing", lambda t: [*LLM, f"framework.native_config={t}/none.yaml"], "none.yaml: No such file"),
    # data rows
    (
        "instruction not a string",
        lambda t: [*LLM, f"trainset={write(t, 'n.jsonl', lines({'instruction': 5, 'output': 'b'}))}"],
        "n.jsonl:1: field 'instruction' must be a string",
    ),
    ("only blank lines", lambda t: [*LLM, f"trainset={write(t, 'w.jsonl', '   ' + chr(10) * 2)}"], "the file is empty"),
    (
        "KTO tag not a boolean",
        lambda t: [*LLM, "framework.stage=kto", f"trainset={write(t, 'k.jsonl', lines({**OK_ROW, 'kto_tag': 'yes'}))}"],
        "k.jsonl:1: field 'kto_tag' (the KTO tag) must be true or false",
    ),
    (
        "empty retrieval query",
        lambda t: ["model=minilm", f"trainset={write(t, 'q.jsonl', lines({**OK_RETRIEVAL, 'query': ''}))}"],
        "q.jsonl:1: field 'query' must be a non-empty string",
    ),
    (
        "retrieval passages not strings",
        lambda t: ["model=minilm", f"trainset={write(t, 'p.jsonl', lines({**OK_RETRIEVAL, 'pos': [1]}))}"],
        "p.jsonl:1: field 'pos' must be a non-empty list of strings",
    ),
    # overrides out of range or of the wrong kind
    ("model size negative", lambda t: [*LLM, "model.params_b=-1"], "model.params_b: must be > 0 (got -1.0)"),
    ("no nodes", lambda t: [*LLM, "cluster.nodes=0"], "cluster.nodes: must be > 0 (got 0)"),
    ("negative time limit", lambda t: [*LLM, "cluster.time=-1"], "cluster.time: bad time limit '-1'"),
    ("eval time not a time", lambda t: [*LLM, "eval.time=abc"], "eval.time: bad time limit 'abc'"),
    ("save steps 0", lambda t: [*LLM, "framework.save_steps=0"], "framework.save_steps: must be > 0 (got 0)"),
    ("umask with an 8", lambda t: [*LLM, "cluster.umask='078'"], "cluster.umask: must be three octal digits"),
    ("negative memory", lambda t: [*LLM, "cluster.mem=-5G"], "cluster.mem: bad memory size '-5G'"),
    ("a stage twice", lambda t: [*LLM, "stages=[train,train]"], "stages: must be a non-empty prefix"),
    ("unknown stage name", lambda t: [*LLM, "stages=[train,serve]"], "stages[1]: Invalid value 'serve'"),
    ("3-bit quantization", lambda t: [*LLM, "framework.quantization_bit=3"], "unknown value '3'; valid: 4, 8"),
    ("unknown fine-tuning type", lambda t: [*LLM, "framework.finetuning_type=qlora"], "did you mean 'lora'?"),
    ("negative port", lambda t: [*LLM, "deploy.port=-1"], "deploy.port: must be in [0, 65535] (got -1)"),
]


@pytest.fixture
def sbatch_log(tmp_path, monkeypatch) -> Path:
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch.log"
    bin_dir.mkdir()
    for name in ("sbatch", "srun", "scancel"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 1\n')
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.mark.parametrize("name,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_submitting(name, build, expected, tmp_path, sbatch_log, capsys, monkeypatch):
    FIGURES["cases"] += 1
    for variable, secret in PLANTED_SECRETS.items():
        monkeypatch.setenv(variable, secret)
    args = build(tmp_path)
    if not any(a.startswith("run_root=") for a in args):
        args.append(f"run_root={tmp_path}/runs")
    submitted = [a for a in args if a != "dry_run=true"]
    code = main(submitted)
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err, err
    assert err.startswith("hpcft: error: ") and "Traceback" not in err and err.count("\n") <= 2
    assert not any(secret in err for secret in PLANTED_SECRETS.values())
    assert not sbatch_log.exists()
    # A dry run checks exactly what a submission checks: the same refusal, word for word.
    dry = main([*submitted, "dry_run=true"])
    assert (dry, capsys.readouterr().err) == (2, err)
    FIGURES["refused_before_submit"] += 1


def test_corpus_has_at_least_two_hundred_cases():
    assert len(CASES) >= 200


HOSTILE = [
    ("job name quote", "name=" + "\"x'; touch PWN1; '\""),
    ("job name subshell", "name='$(touch PWN2)'"),
    ("job name backticks", "name='`touch PWN3`'"),
    ("job name leading dash", "name='--help'"),
    ("W&B project", "wandb.project='p; touch PWN4'"),
    ("W&B group", "wandb.group='$(touch PWN5)'"),
    ("partition", "cluster.partition='gpu;touch PWN6'"),
    ("account", "cluster.account='$(touch PWN7)'"),
    ("native argument value", "+framework.args.lr_scheduler_type='cosine; touch PWN8'"),
    ("setup-free qos", "cluster.qos='`touch PWN9`'"),
    ("srun flag", "cluster.srun_args=['--comment=$(touch PWN12)']"),
    ("site variable", "+cluster.env.SITE_VAR='$(touch PWN13); `touch PWN14`'"),
    ("interpreter word", "cluster.python=['/usr/bin/env','x; touch PWN15','$(touch PWN16)']"),
    ("constraint", "cluster.constraint='`touch PWN17`'"),
    ("stage partition", "cluster.eval.partition='$(touch PWN18)'"),
    ("extra sbatch option", "+cluster.additional_parameters.comment='$(touch PWN19)'"),
    ("data path", "HOSTILE_DATA"),
    ("model path", "HOSTILE_MODEL"),
]


@pytest.mark.parametrize("name,override", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_values_never_execute(name, override, tmp_path, capsys, monkeypatch):
    FIGURES["injections"] += 1
    monkeypatch.chdir(tmp_path)
    weird = tmp_path / "it's $(touch PWN10) `touch PWN11`; dir"
    weird.mkdir()
    if override == "HOSTILE_DATA":
        data = write(weird, "my data's.json", json.dumps([OK_ROW]))
        override = "trainset='" + str(data).replace("'", "\\'") + "'"
    elif override == "HOSTILE_MODEL":
        override = "model.path='" + str(weird).replace("'", "\\'") + "'"
    code = main([*LLM, override, "dry_run=true", f"run_root={tmp_path}/runs"])
    assert code in (0, 2), capsys.readouterr().err
    scripts = sorted((tmp_path / "runs").rglob("*.sbatch"))
    assert code == 2 or len(scripts) == 3
    if name == "data path":  # reached the job's native config intact
        (info,) = (tmp_path / "runs").rglob("dataset_info.json")
        assert json.loads(info.read_text())["hpcft_train"]["file_name"] == str(weird / "my data's.json")
    for script in scripts:
        # Run the script's shell with srun printing its argv instead of launching anything.
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "srun").chmod(0o755)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
        subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, check=False)
    executed = [str(p) for p in tmp_path.rglob("PWN*")]
    FIGURES["executed"] += len(executed)
    assert executed == []


def figures_line(f: dict[str, int]) -> str:
    return (
        f"bad-input corpus: {f['cases']} cases, {f['refused_before_submit']} refused before submit; "
        f"injections: {f['injections']} attempted, {f['executed']} executed"
    )
