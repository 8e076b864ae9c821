"""Plans that would be refused where the job runs are refused (or made to run) on the login
node: DeepSpeed's launcher, FlagEmbedding's batch against its rows, the job's packages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hpcft import jobenv
from hpcft.cli import main
from hpcft.configure import load_config
from hpcft.frameworks import adapter_for
from hpcft.rundir import RunLayout


def test_deepspeed_on_one_process_is_launched_by_torchrun(tmp_path):
    """LLaMA-Factory refuses DeepSpeed outside torchrun ("Please use FORCE_TORCHRUN=1")."""
    cfg = load_config(["model=tiny_llama", "cluster=slurmlab", "deepspeed=zero2"])
    job = adapter_for(cfg).train_job(RunLayout(tmp_path))
    assert job.argv[:2] == ["torchrun", "--nproc_per_node=1"], job.argv
    plain = adapter_for(load_config(["model=tiny_llama", "cluster=slurmlab"])).train_job(RunLayout(tmp_path))
    assert plain.argv[0] == "llamafactory-cli"


def embedding_rows(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"query": f"q{i}", "pos": ["p"], "neg": ["n"]}) + "\n" for i in range(n)))
    return path


def test_flagembedding_rows_fewer_than_one_batch_are_refused_naming_rows_and_batch(tmp_path, capsys):
    data = embedding_rows(tmp_path / "ten.jsonl", 10)
    args = ["model=minilm", "cluster=slurmlab", f"trainset={data}", "dry_run=true", f"run_root={tmp_path / 'runs'}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().removeprefix("hpcft: error: ")
    assert err.startswith("trainset: 10 training rows are fewer than one batch of 16") and "0 steps" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "runs").exists()
    assert main([*args, "framework.per_device_train_batch_size=8"]) == 0


def test_the_job_interpreter_is_asked_for_the_packages_a_plan_needs(tmp_path):
    here = [sys.executable]
    assert jobenv.missing_modules(here, ["json", "no_such_module_hpcft"]) == ["no_such_module_hpcft"]
    other = tmp_path / "python"  # another interpreter, visible from here: asked in a subprocess
    other.symlink_to(sys.base_prefix + "/bin/python3")
    assert jobenv.missing_modules([str(other)], ["json", "hydra"]) == ["hydra"]  # the bare base interpreter
    assert jobenv.missing_modules(["apptainer", "exec", "img.sif", "python"], ["json"]) is None
    assert jobenv.missing_modules(["/no/such/python"], ["json"]) is None


@pytest.mark.parametrize("key", ["use_badam: true", "optim: paged_adamw_8bit", "fp8: true"])
def test_a_recipe_the_job_cannot_run_is_refused_before_submit(tmp_path, capsys, key):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"stage: sft\ndo_train: true\nfinetuning_type: full\n{key}\n")
    args = ["model=tiny_llama", "cluster=slurmlab", f"framework.native_config={recipe}", "dry_run=true"]
    assert main([*args, f"run_root={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.removeprefix("hpcft: error: ")
    assert err.startswith("framework.native_config: ") and key.split(":")[0] in err, err
