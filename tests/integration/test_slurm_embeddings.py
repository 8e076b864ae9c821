"""Embedding fine-tune -> serve -> retrieval eval as chained Slurm jobs (real FlagEmbedding)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import hpcft, manifest, only_run, wait_final

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]

FAST = ["framework.num_train_epochs=1", "framework.per_device_train_batch_size=4", "framework.train_group_size=4"]


def test_minilm_embedder_pipeline_on_slurm(run_root):
    result = hpcft("model=minilm", "cluster=slurmlab", f"run_root={run_root}", *FAST, "deploy.keep_serving=true")
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    states = wait_final([ids["train"], ids["eval"]], timeout_s=600)
    assert set(states.values()) == {"COMPLETED"}, states
    assert (run / "train" / "model.safetensors").is_file()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for side in ("base", "fine_tuned"):
        assert set(metrics[side]) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
    # the server kept serving (keep_serving): the OpenAI-shaped embeddings endpoint answers
    endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
    body = json.dumps({"model": endpoint["model"], "input": ["a cat", "a dog"]}).encode()
    request = urllib.request.Request(endpoint["base_url"] + "/embeddings", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        answer = json.loads(r.read())
    assert [d["index"] for d in answer["data"]] == [0, 1] and len(answer["data"][0]["embedding"]) == 384
    assert hpcft("cancel", str(run)).returncode == 0
