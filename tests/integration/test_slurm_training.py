"""Training in depth on the real local Slurm cluster: several nodes and processes over gloo,
DeepSpeed ZeRO-2, and resuming from the last checkpoint after a time limit or a requeue."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import (
    FAST,
    LONG,
    NO_BASE,
    RESUMED,
    assert_eval_outputs,
    assert_resumed,
    hpcft,
    logs,
    manifest,
    only_run,
    requeues,
    sacct_field,
    steps_logged,
    train_progress_shown,
    wait_final,
)

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]


def submit_train(run_root: Path, *overrides: str, stages: str = "[train]") -> tuple[Path, str]:
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", f"stages={stages}", *overrides)
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    return run, manifest(run)["stages"]["train"]["job_id"]


def assert_served_and_evaluated(run: Path) -> None:
    ids = [str(s["job_id"]) for s in manifest(run)["stages"].values()]
    states = wait_final(ids, timeout_s=600)
    assert set(states.values()) == {"COMPLETED"}, states
    assert_eval_outputs(run, eval_rows=6)


@pytest.mark.parametrize("nodes,procs,stages", [(2, 1, "[train,deploy,eval]"), (2, 2, "[train]")])
def test_multi_node_lora_trains_over_gloo(run_root, nodes, procs, stages):
    overrides = (*FAST, NO_BASE, f"cluster.nodes={nodes}", f"cluster.procs_per_node={procs}")
    run, job_id = submit_train(run_root, *overrides, stages=stages)
    states = wait_final([job_id], timeout_s=600)
    assert states[job_id] == "COMPLETED", logs(run)[-3000:]
    assert sacct_field(job_id, "NNodes") == str(nodes)
    hosts = subprocess.run(["scontrol", "show", "hostnames", sacct_field(job_id, "NodeList")], capture_output=True)
    assert len(set(hosts.stdout.split())) == nodes, hosts  # which ones: whatever tests run beside it left free
    text = logs(run)
    assert f"world size: {nodes * procs}" in text
    # every node was launched with the same master address and port
    masters = {line.split("--master_port=")[1].split("'")[0] for line in text.splitlines() if "--master_port=" in line}
    assert len(masters) == 1, masters
    assert (run / "train" / "adapter_model.safetensors").is_file()
    results = json.loads((run / "train" / "all_results.json").read_text())
    assert results["train_loss"] > 0 and results["train_runtime"] > 0
    if "eval" in stages:
        assert_served_and_evaluated(run)


@pytest.mark.parametrize("procs,stages", [(2, "[train,deploy,eval]"), (1, "[train]")])
def test_deepspeed_zero2(run_root, procs, stages):
    """ZeRO-2 on two processes (then served and evaluated), and on one, which LLaMA-Factory
    accepts only under torchrun ("Please use FORCE_TORCHRUN=1")."""
    overrides = (*FAST, NO_BASE, "deepspeed=zero2", f"cluster.procs_per_node={procs}")
    run, job_id = submit_train(run_root, *overrides, stages=stages)
    states = wait_final([job_id], timeout_s=900)  # the first run JIT-compiles DeepSpeed's CPU op
    assert states[job_id] == "COMPLETED", logs(run)[-3000:]
    assert json.loads((run / "native" / "deepspeed.json").read_text())["zero_optimization"]["stage"] == 2
    assert f"world size: {procs}" in logs(run)
    assert (run / "train" / "adapter_model.safetensors").is_file()
    if "eval" in stages:
        assert_served_and_evaluated(run)


def test_llamafactory_own_dpo_recipe_trains_unchanged_on_its_registry_data(run_root, tmp_path):
    """LLaMA-Factory v0.9.5's examples/train_lora/qwen3_lora_dpo.yaml as it is (bf16, its own
    dpo_en_demo through its dataset_info.json), capped at a few steps from the command line:
    the dry run's changes for CPU (bf16 off) are said, and the job trains."""
    examples = Path(__file__).parents[1] / "fixtures" / "llamafactory_examples"
    recipe = [f"framework.native_config={examples / 'qwen3_lora_dpo.yaml'}", f"trainset={examples / 'data'}"]
    dry = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={tmp_path}/dry", *recipe, "dry_run=true")
    assert dry.returncode == 0 and "bf16=True is not used (the job runs on CPU" in dry.stdout, dry.stderr
    # Capped for a 1-CPU test job: 3 steps, and no 16 tokenizing + 4 loading processes.
    cap = ["+framework.args.max_steps=3", "+framework.args.preprocessing_num_workers=1"]
    run, job_id = submit_train(run_root, *recipe, *cap, "+framework.args.dataloader_num_workers=0")
    states = wait_final([job_id], timeout_s=600)
    assert states[job_id] == "COMPLETED", logs(run)[-3000:]
    results = json.loads((run / "train" / "all_results.json").read_text())
    assert results["epoch"] > 0 and (run / "train" / "adapter_model.safetensors").is_file()
    native = (run / "native" / "train.yaml").read_text()
    assert "stage: dpo" in native and "dataset: dpo_en_demo" in native and "bf16: false" in native, native
    assert json.loads((run / "native" / "dataset_info.json").read_text())["dpo_en_demo"]["ranking"] is True


def test_rows_far_shorter_than_the_cutoff_are_packed_and_train(run_root, tmp_path):
    # 600 short rows at cutoff 1024: the plan packs them (neat_packing, said in the notes) and
    # LLaMA-Factory trains on the packed sequences. RoPE has no position table: 1024 > 512 is fine.
    rows = [{"instruction": f"Which word goes with item {i}?", "output": f"word{i % 7}"} for i in range(600)]
    (data := tmp_path / "short.json").write_text(json.dumps(rows))
    cap = ["+framework.args.max_steps=3", "+framework.args.preprocessing_num_workers=1"]
    run, job_id = submit_train(run_root, *FAST, f"trainset={data}", "framework.cutoff_len=1024", *cap)
    states = wait_final([job_id], timeout_s=600)
    assert states[job_id] == "COMPLETED", logs(run)[-3000:]
    assert "neat_packing: true" in (run / "native" / "train.yaml").read_text()
    assert json.loads((run / "train" / "all_results.json").read_text())["epoch"] > 0


@pytest.mark.fault
def test_time_limited_train_is_requeued_and_resumes_from_its_checkpoint(run_root):
    # Bounded by wall time, not by work: training far longer than its 2-minute limit runs
    # until the limit has stopped it once and it went on from its checkpoint, however slow
    # this machine is (start-up under load takes most of a 1-minute attempt); then it stops.
    # A checkpoint every 20 steps: under load an attempt may get only ~50 steps past start-up.
    save, log_every = 20, 10
    run, job_id = submit_train(
        run_root, *LONG, "framework.num_train_epochs=10000", "cluster.time=2", "cluster.max_requeues=20",
        f"framework.save_steps={save}", f"framework.logging_steps={log_every}",
    )  # fmt: skip
    deadline, shown = time.monotonic() + 900, None
    while not ((resumed := RESUMED.findall(logs(run))) and steps_logged(run)[-1] > int(resumed[0])):
        assert time.monotonic() < deadline, f"no resume after a time limit: {steps_logged(run)[-8:]}"
        if not shown and steps_logged(run):  # meanwhile, `status` shows the running training's progress
            shown = train_progress_shown(run)
        time.sleep(5)
    assert shown, "status never showed the running train stage's step/total, loss and ETA"
    assert int(shown[2]) == 60000  # 10000 epochs x 6 steps: LLaMA-Factory's own trainer_log.jsonl
    subprocess.run(["scancel", job_id], check=True)
    assert requeues(job_id) >= 1 and "timed-out" in logs(run)  # stopped by its limit, not by us
    before = [step for step in steps_logged(run) if step <= int(resumed[0]) + save]
    assert int(resumed[0]) >= save and before[-1] - int(resumed[0]) <= save + log_every  # lost <= one save interval


@pytest.mark.fault
def test_requeued_train_resumes_from_its_checkpoint(run_root):
    # 600 steps, a checkpoint every 20. The job is suspended once its first checkpoint is
    # whole (trainer_state.json is written last; a rerun skips a checkpoint without it) and
    # requeued while stopped, so the requeue lands mid-training however fast this machine
    # trains: ~6 s of training are left at 100 steps/s for the test, polling every 0.2 s, to
    # react; the rest is what the resumed attempt trains again, so more steps only cost time.
    every_20 = ["framework.num_train_epochs=100", "framework.save_steps=20", "framework.logging_steps=10"]
    run, job_id = submit_train(run_root, *LONG, *every_20)
    deadline = time.monotonic() + 300
    while not list((run / "train").glob("checkpoint-*/trainer_state.json")):
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    subprocess.run(["scontrol", "suspend", job_id], check=True)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    subprocess.run(["scontrol", "release", job_id], check=True)  # a suspended job is requeued held
    states = wait_final([job_id], timeout_s=900)
    assert states[job_id] == "COMPLETED", logs(run)[-3000:]
    assert requeues(job_id) == 1
    assert_resumed(run, save_steps=20, logging_steps=10)
