"""Retrieval eval at corpus scale: blocked top-k equals numpy's full sort on 100k passages,
embeddings arrive batched (base64 or floats alike), texts are cut at their training lengths,
and the eval job's memory follows the corpus."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.retrieval_eval import eval_set
from benchmarks.standin_engine import Engine, Server
from hpcft.client import EndpointClient
from hpcft.jobs import retrieval
from hpcft.jobs.retrieval import EMBEDDING_METRICS, embed_all, mean_metrics, top_k, truncated
from hpcft.resources import retrieval_eval_mem


def test_blocked_top_k_equals_a_full_sort_on_100k_passages():
    rng = np.random.default_rng(0)
    passages = rng.standard_normal((100_000, 32)).astype(np.float32)
    queries = rng.standard_normal((50, 32)).astype(np.float32)
    expected = np.argsort(-(queries @ passages.T), axis=1)[:, :10]
    assert top_k(queries, passages) == expected.tolist()
    assert top_k(queries[:2], passages[:7]) == np.argsort(-(queries[:2] @ passages[:7].T), axis=1).tolist()


def test_batched_embeddings_through_an_engine_find_the_known_passages(monkeypatch):
    data = eval_set(3_000, 30)
    with Server(Engine(dims=64)) as server:
        client = EndpointClient.from_endpoint(server.endpoint)
        vectors = embed_all(client, data.passages, "standin", 4)
        assert vectors.shape == (3_000, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        as_floats = lambda c, texts, m, cut: np.asarray(c.embed(texts, m), dtype=np.float32)  # noqa: E731
        monkeypatch.setattr(retrieval, "embedding_block", as_floats)  # a server without base64
        assert np.allclose(embed_all(client, data.passages, "standin", 4), vectors, atol=1e-6)
        queries = embed_all(client, data.queries, "standin", 4)
    metrics = mean_metrics(top_k(queries, vectors), data.qrels, EMBEDDING_METRICS)
    assert metrics["recall@10"] == 100.0


def test_the_eval_jobs_memory_grows_with_the_corpus():
    small, large = retrieval_eval_mem(8, 8, 400, 384), retrieval_eval_mem(100_000, 1_000, 20_000_000, 1024)
    assert int(small[:-1]) < 2048 < int(large[:-1]) < 4096  # MB: 1.5 GiB floor; 100k x 1024 fits in 4 GB


def test_texts_are_cut_as_in_training_within_the_served_context():
    assert truncated(256, 512) == {"truncate_prompt_tokens": 256}
    assert truncated(512, 256) == truncated(None, 512) == {"truncate_prompt_tokens": -1}  # the served context
    assert truncated(64, None) == {"truncate_prompt_tokens": 64}  # a server that does not say
    from hpcft.configure import load_config
    from hpcft.frameworks import adapter_for
    from hpcft.rundir import RunLayout

    cfg = load_config(["model=minilm", "framework.passage_max_len=200"])
    job = adapter_for(cfg).eval_job(RunLayout(Path("/runs/r")))
    assert job.truncation == (64, 200) and job.task == "embedding"


def test_the_eval_asks_the_engine_to_cut_queries_and_passages_at_their_training_lengths(tmp_path):
    from hpcft.jobs.retrieval import evaluate_retrieval, served_models
    from hpcft.jobs.spec import EvalJob

    data = eval_set(300, 20)
    evalset = tmp_path / "eval.jsonl"
    rows = [
        {"query": q, "pos": [data.passages[next(iter(r))]], "neg": []}
        for q, r in zip(data.queries, data.qrels, strict=True)
    ]
    evalset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with Server(Engine(dims=64)) as server:
        endpoint = {**server.endpoint, "model": "standin", "base_model": "standin"}
        job = EvalJob(run_dir=str(tmp_path), evalset=str(evalset), task="embedding", truncation=(64, 256))
        results = evaluate_retrieval(served_models(endpoint, job), job)
    assert results["fine_tuned"]["recall@1"] == 100.0
    assert set(server.engine.cuts) == {64, 256}  # queries at 64 tokens, passages at 256; base alike


@pytest.mark.skipif(importlib.util.find_spec("FlagEmbedding") is None, reason="training extra not installed")
@pytest.mark.parametrize("kind,task", [("embedding", "retrieval"), ("rerank", "rerank")])
def test_queries_and_passages_get_the_instructions_flagembedding_trained_with(kind, task, tmp_path):
    """The eval writes each text as FlagEmbedding's own argument classes, parsing the command
    hpcft renders, make its training data: `format.format(instruction, text)`, `\\n` a newline."""
    from FlagEmbedding.abc.finetune.embedder import AbsEmbedderDataArguments
    from FlagEmbedding.abc.finetune.reranker import AbsRerankerDataArguments
    from transformers import HfArgumentParser

    from hpcft.configure import load_config
    from hpcft.frameworks import adapter_for
    from hpcft.jobs.retrieval import written
    from hpcft.rundir import RunLayout

    overrides = [
        f"+framework.args.query_instruction_for_{task}='Find: '",
        "+framework.args.query_instruction_format='{}\\n{}'",
    ]
    overrides += [f"+framework.args.passage_instruction_for_{task}='Doc: '"]
    adapter = adapter_for(load_config(["model=minilm", f"model.kind={kind}", *overrides]))
    layout = RunLayout(tmp_path)
    argv = adapter.train_job(layout).argv
    native = argv[argv.index(next(a for a in argv if a.startswith("FlagEmbedding.finetune."))) + 1 :]
    data_class = AbsEmbedderDataArguments if kind == "embedding" else AbsRerankerDataArguments
    (theirs,) = HfArgumentParser([data_class]).parse_args_into_dataclasses(args=native, return_remaining_strings=True)[
        :1
    ]
    query_instruction, passage_instruction = adapter.eval_job(layout).instructions
    assert (
        written(["a cat"], query_instruction)
        == [theirs.query_instruction_format.format(getattr(theirs, f"query_instruction_for_{task}"), "a cat")]
        == ["Find: \na cat"]
    )
    assert (
        written(["the mat"], passage_instruction)
        == [theirs.passage_instruction_format.format(getattr(theirs, f"passage_instruction_for_{task}"), "the mat")]
        == ["Doc: the mat"]
    )
    assert adapter_for(load_config(["model=minilm"])).eval_job(layout).instructions == (None, None)
