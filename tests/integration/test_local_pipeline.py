"""`cluster=local` (the default): real LLaMA-Factory train -> export + API server -> eval, no Slurm."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import needs_training
from tests.integration.helpers import FAST, assert_eval_outputs, hpcft, manifest, only_run

pytestmark = [needs_training, pytest.mark.train]


SECRETS = {"WANDB_API_KEY": "fake-wandb-key-4c1d9e7f0a2b", "HF_TOKEN": "hf_fakeTOKEN9f8e7d6c5b4a"}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One real local pipeline (no Slurm on PATH), W&B on offline and secrets in the
    environment, shared by the tests that each assert one aspect of it."""
    run_root = tmp_path_factory.mktemp("local") / "runs"
    result = hpcft(
        "model=tiny_llama", f"run_root={run_root}", *FAST, "framework.logging_steps=1", "wandb.enabled=true",
        env={"PATH": "/usr/bin:/bin", **SECRETS},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    return only_run(run_root), result


@pytest.mark.xdist_group("local_run")
def test_local_pipeline_trains_serves_and_evaluates(local_run):
    run, result = local_run
    assert (run / "train" / "adapter_model.safetensors").is_file()
    assert (run / "merged" / "model.safetensors").is_file()
    metrics = assert_eval_outputs(run, eval_rows=6)
    assert "metric       base" in result.stdout and f"run directory: {run}" in result.stdout
    m = manifest(run)
    assert m["status"] == "completed"
    assert {s["state"] for s in m["stages"].values()} == {"COMPLETED"}
    # Training really happened: the trainer logged a finite loss for several steps.
    logs = [json.loads(line) for line in (run / "train" / "trainer_log.jsonl").read_text().splitlines()]
    assert [entry for entry in logs if "loss" in entry] and all(entry["loss"] > 0 for entry in logs if "loss" in entry)
    assert (run / "train" / "training_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the loss curve
    assert metrics["model"] == "tiny_llama-ft"
    # The server was stopped once eval ended.
    assert (run / "deploy" / "stop").is_file()


@pytest.mark.xdist_group("local_run")
def test_wandb_offline_run_lands_in_the_run_dir_and_no_secret_is_written(local_run):
    run, _ = local_run
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2, offline  # the train run and the eval run
    assert all(any(p.glob("*.wandb")) for p in offline)
    leaked = [
        str(path)
        for path in run.rglob("*")
        if path.is_file() and any(s.encode() in path.read_bytes() for s in SECRETS.values())
    ]
    assert leaked == []
    synced = hpcft("sync", "--dry-run", str(run))
    assert synced.returncode == 0 and all(str(p) in synced.stdout for p in offline)


def gain_table(stdout: str) -> dict[str, float]:
    """The closing table's gain column, by metric."""
    lines = stdout[stdout.index("metric ") :].splitlines()[1:]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines if line.strip()]  # columns: 2+ spaces apart
    # metric, base, fine-tuned, gain, then the gain's 95 % interval where the eval computed it
    return {row[0]: float(row[3]) for row in rows if len(row) > 3 and row[3][0] in "+-"}


@pytest.mark.parametrize(
    "experiment,metric", [("quickstart", "exact_match"), ("quickstart_embedding", "recall@1")], ids=["llm", "embedding"]
)
def test_quick_start_shows_that_fine_tuning_worked(experiment, metric, run_root):
    """The README's quick start: base vs fine-tuned with a positive gain, and a loss curve."""
    result = hpcft(f"+experiment={experiment}", f"run_root={run_root}")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    run = only_run(run_root)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    tuned = metrics.get("fine_tuned", metrics)
    assert tuned[metric] - metrics["base"][metric] >= 25, metrics  # learnt, not noise
    assert gain_table(result.stdout)[metric] == pytest.approx(tuned[metric] - metrics["base"][metric], abs=0.01)
    if experiment == "quickstart_embedding":  # the general set's change, beside the in-domain gain
        general = metrics["general"]["flagembedding_general"]
        assert set(general) >= {"fine_tuned", "base", "gain", "ci95"} and general["queries"] == 10, general
        assert general["base"]["ndcg@10"] > 50, general  # the real MiniLM knows general knowledge
        change = gain_table(result.stdout)["flagembedding_general: ndcg@10"]
        assert change == pytest.approx(general["gain"]["ndcg@10"], abs=0.01)
    assert (run / "train" / "training_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"loss curve:   {run / 'train' / 'training_loss.png'}" in result.stdout
    report = hpcft("report", str(run))
    assert report.returncode == 0 and "fine-tuned" in (run / "report.md").read_text(), report.stderr


def test_local_failure_names_the_stage_and_its_log(run_root):
    bad = ["framework.lora_target=no_such_module"]
    result = hpcft("model=tiny_llama", f"run_root={run_root}", *FAST, *bad)
    assert result.returncode == 1
    assert "stage 'train' failed" in result.stderr and "log:" in result.stderr
    assert "Traceback" not in result.stderr
    m = manifest(only_run(run_root))
    assert m["status"] == "failed" and m["stages"]["train"]["state"] == "FAILED"
    assert m["stages"]["deploy"]["job_id"] is None


WORDS = ("cat", "dog", "sun", "moon")
STAGE_DATA = {
    "dpo": [{"instruction": f"Repeat the word: {w}", "chosen": w, "rejected": "no"} for w in WORDS],
    "rm": [{"instruction": f"Repeat the word: {w}", "chosen": w, "rejected": "no"} for w in WORDS],
    "kto": [{"instruction": f"Repeat the word: {w}", "output": w, "kto_tag": i % 2 == 0} for i, w in enumerate(WORDS)],
    "pt": [{"text": f"The {w} is a word, and {w} is what it says."} for w in WORDS],
}


@pytest.mark.parametrize("stage", sorted(STAGE_DATA))
def test_local_training_of_each_stage_on_its_own_data_layout(stage, run_root, tmp_path):
    """pt, rm, dpo and kto (sft: every other test) trained for real, each on the layout it reads."""
    data = tmp_path / f"{stage}.json"
    data.write_text(json.dumps(STAGE_DATA[stage] * 4))
    result = hpcft(
        "model=tiny_llama",
        f"run_root={run_root}",
        *FAST,
        f"framework.stage={stage}",
        f"trainset={data}",
        "stages=[train]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((only_run(run_root) / "train" / "all_results.json").read_text())
    assert results["train_loss"] > 0


def test_local_reranker_pipeline_reports_base_and_fine_tuned(run_root):
    # MiniLM with a fresh classification head: a real reranker fine-tune, served beside its base.
    overrides = ["model.kind=rerank", "framework.num_train_epochs=1", "framework.per_device_train_batch_size=4"]
    result = hpcft("model=minilm", f"run_root={run_root}", *overrides, "framework.train_group_size=4")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((only_run(run_root) / "eval" / "metrics.json").read_text())
    assert metrics["queries"] == 8 and set(metrics["base"]) == {"recall@1", "mrr@10", "ndcg@10"}
    assert all(0 <= v <= 100 for v in [*metrics["base"].values(), *metrics["fine_tuned"].values()])
    assert metrics["gain"]["mrr@10"] == metrics["fine_tuned"]["mrr@10"] - metrics["base"]["mrr@10"]


def test_reranker_on_two_processes_with_zero2_trains_with_the_lengths_it_was_given(run_root):
    """A FlagEmbedding reranker under DeepSpeed ZeRO-2 on 2 processes, its lengths as given."""
    result = hpcft(
        "model=minilm", "model.kind=rerank", "deepspeed=zero2", "cluster.procs_per_node=2", "stages=[train]",
        f"run_root={run_root}", "framework.num_train_epochs=1", "framework.per_device_train_batch_size=2",
        "framework.train_group_size=4", "framework.query_max_len=48", "framework.passage_max_len=200",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(run_root)
    logged = "".join(p.read_text(errors="replace") for p in (run / "slurm").glob("*_log.*"))
    # FlagEmbedding's own logged arguments, from both processes
    assert logged.count("query_max_len=48") == 2 and logged.count("passage_max_len=200") == 2
    assert logged.count(f"deepspeed={run / 'native' / 'deepspeed.json'}") == 2
    assert json.loads((run / "native" / "deepspeed.json").read_text())["zero_optimization"]["stage"] == 2
    assert (run / "train" / "model.safetensors").is_file()
