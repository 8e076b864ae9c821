"""Bad input is refused on the login node: exit status 2, one line naming the key or file:line,
no traceback, nothing submitted. `sbatch` is a recording stub here (the subprocess boundary);
tests/integration/test_slurm_pipeline.py counts submissions on the real cluster."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from hpcft.cli import main


@pytest.fixture
def sbatch_log(tmp_path, monkeypatch) -> Path:
    """Put a recording `sbatch`/`srun` first on PATH; the test asserts it was never called."""
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch.log"
    bin_dir.mkdir()
    for name in ("sbatch", "srun"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 1\n')
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def refuse(args: list[str], capsys, sbatch_log: Path) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("hpcft: error: ")
    assert not sbatch_log.exists(), "sbatch was called"
    return err


def test_unknown_group_option_lists_valid_ones(capsys, sbatch_log, run_root):
    err = refuse(["model=internlm2", "cluster=nope", f"run_root={run_root}"], capsys, sbatch_log)
    assert "cluster: unknown cluster option 'nope'" in err and "8gpu" in err and "slurmlab" in err


def test_unknown_framework_argument_suggests_the_closest(capsys, sbatch_log, run_root):
    args = ["model=internlm2", "cluster=8gpu", "+framework.args.lora_dropoutt=0.1", f"run_root={run_root}"]
    err = refuse(args, capsys, sbatch_log)
    assert "framework.args.lora_dropoutt: unknown llamafactory argument 'lora_dropoutt'" in err
    assert "'lora_dropout'" in err


def test_known_framework_argument_is_accepted_and_written(capsys, run_root):
    args = [
        "model=internlm2",
        "cluster=8gpu",
        "+framework.args.lora_dropout=0.1",
        f"run_root={run_root}",
        "dry_run=true",
    ]
    assert main(args) == 0
    (run,) = run_root.iterdir()
    assert "lora_dropout: 0.1" in (run / "native" / "train.yaml").read_text()


@pytest.mark.parametrize(
    "override,key",
    [
        ("framework.per_device_train_batch_size=0", "framework.per_device_train_batch_size: must be > 0 (got 0)"),
        ("framework.learning_rate=-1e-4", "framework.learning_rate: must be > 0"),
        ("framework.val_size=1.0", "framework.val_size: must be in [0.0, 1.0)"),
        ("framework.cutoff_len=0", "framework.cutoff_len: must be > 0"),
        ("framework.num_train_epochs=0", "framework.num_train_epochs: must be > 0"),
        ("framework.finetuning_type=loraa", "framework.finetuning_type: unknown value 'loraa'"),
        ("cluster.gpus_per_node=16", "cluster.gpus_per_node: 16 GPUs per node exceed the 8"),
        ("cluster.nodes=3", "cluster.nodes: 3 nodes exceed the 1 of cluster '8gpu'"),
        ("cluster.nodes=0", "cluster.nodes: must be > 0"),
        ("cluster.time=1h", "cluster.time: bad time limit '1h'"),
        ("deploy.backend=tgi", "deploy.backend: unknown value 'tgi'"),
        ("framework=flagembedding", "framework: flagembedding does not fit model 'internlm2' of kind llm"),
        ("stages=[deploy]", "stages: must be a non-empty prefix"),
        ("+framework.args.learning_rate=1", "framework.args.learning_rate: is a first-class option"),
        ("+framework.args.output_dir=/x", "framework.args.output_dir: is set by hpcft"),
        ("framework.quantization_bit=3", "framework.quantization_bit: unknown value '3'"),
    ],
)
def test_bad_values_name_the_key(override, key, capsys, sbatch_log, run_root):
    err = refuse(["model=internlm2", "cluster=8gpu", override, f"run_root={run_root}"], capsys, sbatch_log)
    assert key in err


def test_missing_and_malformed_data_files_name_file_and_line(capsys, sbatch_log, run_root, tmp_path, alpaca):
    err = refuse(["model=internlm2", f"trainset={tmp_path}/none.json", f"run_root={run_root}"], capsys, sbatch_log)
    assert f"{tmp_path}/none.json: no such file" in err
    bad = alpaca([{"instruction": "a", "output": "b"}, {"instruction": "no answer"}], "eval.json")
    err = refuse(["model=internlm2", f"evalset={bad}", f"run_root={run_root}"], capsys, sbatch_log)
    assert f"{bad}:6: missing field 'output'" in err


def test_model_path_that_does_not_exist(capsys, sbatch_log, run_root, tmp_path):
    err = refuse(["model=internlm2", f"model.path={tmp_path}/weights", f"run_root={run_root}"], capsys, sbatch_log)
    assert f"model.path: no model folder at {tmp_path}/weights" in err


def test_run_root_that_is_a_file(capsys, sbatch_log, tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    err = refuse(["model=internlm2", f"run_root={afile}"], capsys, sbatch_log)
    assert "run_root:" in err and "is not a folder" in err


def test_newline_in_a_value_that_reaches_sbatch_is_refused(capsys, sbatch_log, run_root):
    err = refuse(
        ["model=internlm2", "cluster=8gpu", "cluster.partition='gpu\ntouch /tmp/x'", f"run_root={run_root}"],
        capsys,
        sbatch_log,
    )
    assert "cluster.partition: control characters" in err


def test_unknown_cli_option(capsys, sbatch_log):
    assert "unknown option '--frobnicate'" in refuse(["--frobnicate", "model=internlm2"], capsys, sbatch_log)


def hydra_refusal(overrides: list[str]) -> list[str]:
    """Hydra's own refusal of these overrides in a single run, line by line, numbering dropped."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from hpcft.config.compose import conf_dir, register_all_schemas

    register_all_schemas()
    with (
        initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"),
        pytest.raises(ConfigCompositionException) as e,
    ):
        compose(config_name="hpcft", overrides=overrides)
    return [re.sub(r"^\d+\. ", "", line) for line in str(e.value).strip().splitlines()]


@pytest.mark.parametrize(
    "swept",
    [
        ["model=tiny_llama", "seed=1,2"],
        ["model=tiny_llama,internlm2"],
        ["model=tiny_llama", "seed=range(1,3)"],
        ["model=glob(tiny*)"],
    ],
)
def test_a_sweep_without_multirun_is_hydra_s_refusal_in_one_line_advising_m(swept, capsys, sbatch_log, run_root):
    err = refuse([*swept, "cluster=slurmlab", f"run_root={run_root}"], capsys, sbatch_log)
    first, *advice = hydra_refusal(swept)
    assert len(err.splitlines()) == 1 and err.startswith(f"hpcft: error: {first}")
    assert "add --multirun (-m)" in err or "requires --multirun (-m)" in err
    for line in advice:  # Hydra's other advice (a list, a quoted string) is kept, in its words
        assert line[1:].replace("--multirun", "--multirun (-m)") in err
    assert list(run_root.iterdir()) == []


@pytest.mark.parametrize(
    "swept,said",
    [
        (["model=glob(nope*)"], "model=glob(nope*): glob() matches no option (its options: bge_large_zh_v1_5, "),
        (["model=tiny_llama", "seed=glob(*)"], "seed=glob(*): glob() matches no option (no config group seed)"),
        (["model=tiny_llama", "seed=range(1,1)"], "seed=range(1,1): sweeps over no value"),
    ],
)
def test_a_sweep_over_no_value_is_refused_in_one_line(swept, said, capsys, sbatch_log, run_root):
    err = refuse(["-m", *swept, "cluster=slurmlab", f"run_root={run_root}"], capsys, sbatch_log)
    assert len(err.splitlines()) == 1 and said in err
    assert list(run_root.iterdir()) == []


def test_cfg_prints_the_composed_config(capsys):
    assert main(["--cfg", "model=internlm2", "cluster=8gpu"]) == 0
    out = capsys.readouterr().out
    assert "template: intern2" in out and "gpus_per_node: 8" in out


def test_cfg_takes_hydra_s_part_and_may_follow_the_overrides(capsys):
    assert main(["--cfg", "model=internlm2", "cluster=8gpu"]) == 0
    alone = capsys.readouterr().out
    for args in (["--cfg", "job", "model=internlm2", "cluster=8gpu"], ["model=internlm2", "--cfg", "cluster=8gpu"]):
        assert main(args) == 0
        assert capsys.readouterr().out == alone, args


@pytest.mark.parametrize(
    "args,said",
    [
        (["--cfg=jobs"], "--cfg jobs: one of job, hydra, all"),
        (["-m", "--cfg", "hydra/sweeper=optuna"], "--cfg: an Optuna study picks its trials as it runs"),
    ],
)
def test_cfg_parts_hydra_does_not_have_are_refused_in_one_line(args, said, capsys, sbatch_log, run_root):
    err = refuse([*args, "model=tiny_llama", "seed=1,2", f"run_root={run_root}"], capsys, sbatch_log)
    assert len(err.splitlines()) == 1 and said in err
    assert list(run_root.iterdir()) == []


def test_refusals_leave_no_run_directory(capsys, sbatch_log, run_root):
    refuse(["model=internlm2", "framework.cutoff_len=0", f"run_root={run_root}"], capsys, sbatch_log)
    assert list(run_root.iterdir()) == []


def test_dry_run_writes_config_and_native_files(capsys, run_root):
    assert main(["model=internlm2", "cluster=8gpu", "dry_run=true", f"run_root={run_root}"]) == 0
    out = capsys.readouterr().out
    (run,) = run_root.iterdir()
    assert out.count("#!/bin/bash") == 3
    assert "eval    <- afterok:train, after:deploy" in out
    serve = json.loads((run / "native" / "vllm_serve.json").read_text())["argv"][0]  # what deploy runs
    assert serve[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"] and "--enable-lora" in serve
    assert "template: intern2" in (run / "native" / "train.yaml").read_text()
    assert json.loads((run / "native" / "dataset_info.json").read_text())["hpcft_train"]["formatting"] == "alpaca"


def test_a_hub_model_in_the_cache_is_found_when_nodes_are_offline(capsys, sbatch_log, run_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    args = ["model=internlm2", "cluster=local", f"run_root={run_root}", "stages=[train]"]
    assert "internlm/internlm2-chat-7b is neither a local folder" in refuse(args, capsys, sbatch_log)
    snapshot = tmp_path / "hub" / "models--internlm--internlm2-chat-7b" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    from hpcft.config.validate import validate_model_reachable
    from hpcft.configure import load_config

    validate_model_reachable(load_config(args))  # found in the cache: no error


def test_help_lists_commands_groups_and_a_native_argument_that_works(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "+framework.args.lr_scheduler_type=linear" in out
    for command in ("status", "logs", "cancel", "report", "sync"):
        assert re.search(rf"^  {command} +\w", out, re.M), command
    assert "cluster    2x8gpu, 8gpu, local, slurmlab" in out and "tiny_llama" in out


def test_version_and_a_mistyped_command(capsys, sbatch_log):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("hpcft ")
    assert "unknown command 'statuss'; did you mean 'status'?" in refuse(["statuss"], capsys, sbatch_log)
