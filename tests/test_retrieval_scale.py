"""Retrieval eval at corpus scale: blocked top-k equals numpy's full sort on 100k passages,
embeddings arrive batched (base64 or floats alike), and the eval job's memory follows the corpus."""

from __future__ import annotations

import numpy as np

from benchmarks.retrieval_eval import eval_set
from benchmarks.standin_engine import Engine, Server
from hpcft.client import EndpointClient
from hpcft.jobs import retrieval
from hpcft.jobs.retrieval import EMBEDDING_METRICS, embed_all, mean_metrics, top_k
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
        as_floats = lambda c, texts, m: np.asarray(c.embed(texts, m), dtype=np.float32)  # noqa: E731
        monkeypatch.setattr(retrieval, "embedding_block", as_floats)  # a server without base64
        assert np.allclose(embed_all(client, data.passages, "standin", 4), vectors, atol=1e-6)
        queries = embed_all(client, data.queries, "standin", 4)
    metrics = mean_metrics(top_k(queries, vectors), data.relevant, EMBEDDING_METRICS)
    assert metrics["recall@10"] == 100.0


def test_the_eval_jobs_memory_grows_with_the_corpus():
    small, large = retrieval_eval_mem(8, 8, 400, 384), retrieval_eval_mem(100_000, 1_000, 20_000_000, 1024)
    assert int(small[:-1]) < 2048 < int(large[:-1]) < 4096  # MB: 1.5 GiB floor; 100k x 1024 fits in 4 GB
