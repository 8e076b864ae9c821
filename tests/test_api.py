"""The Python API (hpcft.api): seed-style names mapped onto the same config as the CLI, and
refused with the valid names listed; no cluster needed."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from hpcft import Run, TrainableModel, finetune, launchers
from hpcft.config.overrides import hydra_value
from hpcft.configure import load_config
from hpcft.errors import UserError
from hpcft.launch import config_yaml
from hpcft.rundir import fine_tuned_weights

SEED_LLM = {
    "learning_rate": 1e-4,
    "cutoff_len": 5120,
    "max_samples": 20000,
    "val_size": 0.01,
    "per_device_train_batch_size": 2,
    "num_train_epochs": 2.0,
}


def seed_llm_model(data: Path) -> TrainableModel:
    launcher = launchers.sco(cluster="8gpu", ngpus=8)
    return (
        TrainableModel("internlm2")
        .mode("finetune")
        .trainset(data)
        .finetune_method((finetune.llamafactory, {**SEED_LLM, "launcher": launcher}))
        .evalset(data)
    )


def test_the_seed_llm_snippet_maps_onto_hpcft_config(alpaca):
    cfg = seed_llm_model(alpaca([{"instruction": "q", "input": "", "output": "a"}])).config()
    fw = cfg.framework
    assert (fw.name, fw.learning_rate, fw.cutoff_len, fw.max_samples) == ("llamafactory", 1e-4, 5120, 20000)
    assert (fw.val_size, fw.per_device_train_batch_size, fw.num_train_epochs) == (0.01, 2, 2.0)
    assert (cfg.cluster.name, cfg.cluster.nodes, cfg.cluster.gpus_per_node) == ("8gpu", 1, 8)


def test_the_seed_embedding_snippet_maps_nnode_nproc_ngpus():
    launcher = launchers.remote(cluster="2x8gpu", nnode=2, nproc=1, ngpus=4)
    params = {"launcher": launcher, "per_device_train_batch_size": 16, "num_train_epochs": 2}
    cfg = TrainableModel("bge_large_zh_v1_5").finetune_method((finetune.flagembedding, params)).config()
    assert (cfg.framework.name, cfg.framework.per_device_train_batch_size, cfg.framework.num_train_epochs) == (
        "flagembedding",
        16,
        2.0,
    )
    assert (cfg.cluster.nodes, cfg.cluster.gpus_per_node) == (2, 4)
    cpu = launchers.slurm(cluster="slurmlab", nnode=2, nproc=3)
    cfg = TrainableModel("minilm").finetune_method(finetune.flagembedding, {"launcher": cpu}).config()
    assert (cfg.cluster.nodes, cfg.cluster.procs_per_node) == (2, 3)


def test_native_arguments_pass_through_and_are_checked():
    params = {"lr_scheduler_type": "cosine", "warmup_ratio": 0.1}
    cfg = TrainableModel("tiny_llama").finetune_method(finetune.llamafactory, params).config()
    assert cfg.framework.args == {"lr_scheduler_type": "cosine", "warmup_ratio": 0.1}


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: TrainableModel("tiny_llama").finetune_method(finetune.llamafactory, {"learnin_rate": 1}),
            "unknown llamafactory parameter 'learnin_rate'; did you mean 'learning_rate'?",
        ),
        (
            lambda: TrainableModel("tiny_llama").finetune_method(finetune.llamafactory, {"zzz": 1}),
            "valid: bf16, cutoff_len, dataset, dataset_format",
        ),
        (
            lambda: TrainableModel("minilm").finetune_method(finetune.flagembedding, {"cutoff_len": 9}),
            "unknown flagembedding parameter 'cutoff_len'",
        ),
        (
            lambda: launchers.remote(cluster="slurmlab", ngpu=4),
            "unknown launcher parameter 'ngpu'; did you mean 'ngpus'",
        ),
        (
            lambda: TrainableModel("tiny_llama").deploy_method(keep=True),
            "unknown deploy parameter 'keep'; valid: backend",
        ),
        (lambda: TrainableModel("/models/mine"), "unknown model config '/models/mine'; valid: bge_large_zh_v1_5"),
        (lambda: TrainableModel("/models/mine", base="qwen2_5"), "did you mean 'qwen2_5_7b' or 'qwen2_5_72b'?"),
        (lambda: TrainableModel("tiny_llama").mode("deploy"), "mode 'deploy'"),
        (lambda: launchers.slurm(cluster="8gpu", ngpus=8, nproc=2).cluster_settings(), "nproc=2 with ngpus=8"),
    ],
)
def test_unknown_names_are_refused_with_the_valid_ones(build, message):
    with pytest.raises(UserError) as e:
        build()
    assert message in str(e.value)


def test_a_slurm_launcher_needs_a_cluster(monkeypatch):
    monkeypatch.delenv("HPCFT_CLUSTER", raising=False)
    with pytest.raises(UserError, match=r"launchers.slurm\(cluster=...\)"):
        launchers.slurm(nnode=2)
    monkeypatch.setenv("HPCFT_CLUSTER", "2x8gpu")
    assert launchers.slurm(nnode=2).cluster == "2x8gpu"


def test_bad_values_fail_like_the_cli():
    model = TrainableModel("tiny_llama").finetune_method(finetune.llamafactory, {"per_device_train_batch_size": "x"})
    with pytest.raises(UserError, match=r"framework\.per_device_train_batch_size"):
        model.config()


HOSTILE = [
    "true",
    "null",
    "1e-4",
    "-x",
    "/a/b.json",
    "x=y",
    "a,b",
    "[a]",
    "{a:1}",
    "end\\",
    "a\\${x}",
    "it's",
    'a "b"',
    "$(touch /tmp/pwned)",
    "`id`",
    "a;b",
    "${oc.env:HOME}",
    "back\\slash\\'",
    " -rf",
    "ü",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_any_string_reaches_the_config_unchanged(value):
    cfg = TrainableModel("tiny_llama").name(value).trainset(f"/data/{value}.json").config()
    assert cfg.name == value and cfg.trainset == f"/data/{value}.json"


def test_hydra_values():
    assert [hydra_value(v) for v in (None, True, 3, 0.5, [1, "a"])] == ["null", "true", "3", "0.5", "[1,a]"]


def test_command_line_and_written_config_compose_to_the_same_config(alpaca, tmp_path):
    model = seed_llm_model(alpaca([{"instruction": "it's $(x)", "input": "", "output": "a"}], "it's $(x).json"))
    model.set("eval.max_new_tokens", 16).name("it's ${oc.env:HOME}")
    expected = config_yaml(model.config())
    args = shlex.split(model.command())
    assert args[:3] == ["python", "-m", "hpcft"]
    assert config_yaml(load_config(args[3:])) == expected
    path = model.write_config(tmp_path / "site", "seed_llm")
    assert path == tmp_path / "site" / "experiment" / "seed_llm.yaml"
    assert f"--config-dir {tmp_path / 'site'} +experiment=seed_llm" in path.read_text()
    assert config_yaml(load_config(["+experiment=seed_llm"], [str(tmp_path / "site")])) == expected


def test_update_dry_run_writes_what_the_cli_writes(alpaca, run_root, capsys):
    from hpcft.cli.run import main

    model = seed_llm_model(alpaca([{"instruction": "q", "input": "", "output": "a"}])).run_root(run_root)
    run = model.update(dry_run=True)
    assert isinstance(run, Run) and run.path.parent == run_root
    assert main([*shlex.split(model.command())[3:], "dry_run=true"]) == 0
    api_dir, cli_dir = sorted(run_root.iterdir(), key=lambda p: p != run.path)
    assert _tree(api_dir) == _tree(cli_dir)
    assert (api_dir / "config.yaml").read_text() == (cli_dir / "config.yaml").read_text()
    for name in ("train.yaml", "dataset_info.json", "vllm_serve.json"):
        assert _text(api_dir, "native/" + name) == _text(cli_dir, "native/" + name)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _text(root: Path, relpath: str) -> str:
    return (root / relpath).read_text().replace(str(root), "<run>")


def test_loading_from_an_empty_or_missing_path_is_a_clear_error(tmp_path, run_root):
    with pytest.raises(UserError, match="no such run directory or model folder"):
        fine_tuned_weights(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no fine-tuned weights"):
        fine_tuned_weights(tmp_path / "empty")
    run = TrainableModel("tiny_llama").run_root(run_root).update(dry_run=True)
    with pytest.raises(UserError, match=r"merged or .*/train: no fine-tuned weights"):
        _ = run.model_path
    with pytest.raises(UserError, match="not a run directory"):
        Run(tmp_path / "empty")
    from hpcft.retriever import load_embedder

    with pytest.raises(UserError, match="no fine-tuned weights"):
        load_embedder(tmp_path / "empty")


def test_a_written_experiment_can_be_swept_from_the_command_line(tmp_path, run_root, capsys):
    from hpcft.cli.run import main

    launcher = launchers.slurm(cluster="slurmlab", nnode=2)
    TrainableModel("tiny_llama").finetune_method(finetune.llamafactory, {"launcher": launcher}).write_config(tmp_path)
    argv = ["-m", "--config-dir", str(tmp_path), "+experiment=experiment", "dry_run=true", f"run_root={run_root}"]
    assert main([*argv, "framework.learning_rate=1e-3,1e-4"]) == 0
    (sweep,) = run_root.iterdir()
    assert "#SBATCH --array=0-1" in (sweep / "dry_run" / "batch0.group0.train.sbatch").read_text()
    assert "#SBATCH --nodes=2" in (sweep / "dry_run" / "batch0.group0.train.sbatch").read_text()
