"""The seed-style snippets of docs/migration.md, end to end on the local Slurm cluster, and
the run directory they make beside the one the equivalent command line makes."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from hpcft import Run, TrainableModel, finetune, launchers
from hpcft.retriever import KnowledgeBase, load_embedder
from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import REPO, hpcft

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]
DEMO = REPO / "hpcft" / "assets" / "demo"


def test_seed_llm_snippet_runs_end_to_end_and_matches_the_cli(run_root):
    params = {
        "learning_rate": 1e-3,
        "cutoff_len": 64,
        "max_samples": 40,
        "val_size": 0.1,
        "per_device_train_batch_size": 4,
        "num_train_epochs": 1.0,
        "gradient_accumulation_steps": 1,
        "launcher": launchers.sco(cluster="slurmlab", nnode=1, nproc=1, ngpus=0),
    }
    model = TrainableModel("tiny_llama").mode("finetune").trainset(DEMO / "llamafactory_train.json")
    model.finetune_method((finetune.llamafactory, params)).set("eval.max_new_tokens", 8).run_root(run_root)
    model.evalset(DEMO / "llamafactory_eval.json").deploy_method(keep_serving=True)
    # The same pipeline from the command line, written by hand as a user would.
    cli = hpcft(
        "model=tiny_llama", "cluster=slurmlab", f"trainset={DEMO / 'llamafactory_train.json'}",
        f"evalset={DEMO / 'llamafactory_eval.json'}", "framework.learning_rate=1e-3", "framework.cutoff_len=64",
        "framework.max_samples=40", "framework.val_size=0.1", "framework.per_device_train_batch_size=4",
        "framework.num_train_epochs=1", "framework.gradient_accumulation_steps=1", "eval.max_new_tokens=8",
        "deploy.keep_serving=true", f"run_root={run_root}",
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    run = model.update()
    cli_run = Run(next(p for p in run_root.iterdir() if p != run.path))
    try:
        assert run.wait(timeout_s=600, poll_s=2)["eval"] == "COMPLETED"
        assert cli_run.wait(timeout_s=600, poll_s=2, say=None)["eval"] == "COMPLETED"
        metrics = run.metrics()
        assert {"bleu-4", "rouge-l", "exact_match"} <= metrics.keys() and metrics["rows"] == len(run.predictions())
        assert isinstance(run.client().chat("hello", max_tokens=4), str)
        assert (run.model_path / "model.safetensors").is_file() and run.model_path.name == "merged"
        assert "train_runtime" in json.loads((run.path / "train" / "all_results.json").read_text())
        assert _contents(run.path) == _contents(cli_run.path)
        assert (run.path / "config.yaml").read_text() == (cli_run.path / "config.yaml").read_text()
    finally:
        run.cancel()
        cli_run.cancel()


def test_seed_embedding_snippet_then_a_retriever_over_the_fine_tuned_model(run_root, tmp_path):
    launcher = launchers.remote(cluster="slurmlab", nnode=1, nproc=1, ngpus=0)
    params = {"launcher": launcher, "per_device_train_batch_size": 4, "num_train_epochs": 1, "train_group_size": 4}
    model = TrainableModel("minilm").mode("finetune").trainset(DEMO / "flagembedding_train.jsonl")
    model.finetune_method((finetune.flagembedding, params)).evalset(DEMO / "flagembedding_eval.jsonl")
    run = model.run_root(run_root).deploy_method(keep_serving=True).update()
    try:
        run.wait(timeout_s=600, poll_s=2)
        metrics = run.metrics()
        assert (
            set(metrics["fine_tuned"])
            == set(metrics["base"])
            == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
        )
        assert len(run.client().embed(["a cat", "a dog"])[1]) == 384
    finally:
        run.cancel()
    handbook = tmp_path / "kb.txt"
    handbook.write_text("A note about the cat.\nA note about the river.\nA note about the snow.\n")
    retriever = KnowledgeBase.from_file(load_embedder(run.model_path), handbook)
    assert retriever.search("tell me about the river", top_k=1)[0].passage == "A note about the river."
    # what the seed reloads later by its saved path
    assert load_embedder(run.path).folder == load_embedder(run.model_path).folder == run.path / "train"
    assert shlex.split(model.command())[3:5] == ["model=minilm", "cluster=slurmlab"]


def _contents(run: Path) -> list[str]:
    """Files of a run directory, job ids and submitit's random temporary names masked."""
    names = (str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    masked = (re.sub(r"^slurm/(\d+|\.submission_file_[0-9a-f]+)", "slurm/<id>", n) for n in names)
    return sorted(masked)
