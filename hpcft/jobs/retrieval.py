"""Retrieval evaluation through the served models: the fine-tuned model beside its base.

The eval set holds rows `{"query", "pos": [...], "neg": [...]}` (the knowledge base is every
distinct passage of the set) or is a folder in FlagEmbedding's layout (the knowledge base is
its corpus). Embedders are scored by cosine similarity over the whole knowledge base
(recall@1/5/10, MRR@10, nDCG@10); rerankers order each query's candidates (`pos` + `neg`, or
the whole corpus) (recall@1, MRR@10, nDCG@10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hpcft.client import EndpointClient
from hpcft.data import RetrievalEvalSet, read_retrieval_eval

Ranking = list[int]
"""Passage indices, best first."""


def recall_at(ranking: Ranking, relevant: set[int], k: int) -> float:
    return len(set(ranking[:k]) & relevant) / len(relevant)


def mrr_at(ranking: Ranking, relevant: set[int], k: int) -> float:
    return next((1.0 / (i + 1) for i, p in enumerate(ranking[:k]) if p in relevant), 0.0)


def ndcg_at(ranking: Ranking, relevant: set[int], k: int) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, p in enumerate(ranking[:k]) if p in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal


def mean_metrics(
    rankings: Sequence[Ranking], relevants: Sequence[set[int]], metrics: dict[str, Any]
) -> dict[str, float]:
    return {
        name: 100.0 * sum(fn(r, rel) for r, rel in zip(rankings, relevants, strict=True)) / len(rankings)
        for name, fn in metrics.items()
    }


EMBEDDING_METRICS = {
    "recall@1": lambda r, rel: recall_at(r, rel, 1),
    "recall@5": lambda r, rel: recall_at(r, rel, 5),
    "recall@10": lambda r, rel: recall_at(r, rel, 10),
    "mrr@10": lambda r, rel: mrr_at(r, rel, 10),
    "ndcg@10": lambda r, rel: ndcg_at(r, rel, 10),
}
RERANK_METRICS = {
    "recall@1": lambda r, rel: recall_at(r, rel, 1),
    "mrr@10": lambda r, rel: mrr_at(r, rel, 10),
    "ndcg@10": lambda r, rel: ndcg_at(r, rel, 10),
}


def cosine_ranking(query: list[float], passages: list[list[float]]) -> Ranking:
    def cos(a: list[float], b: list[float]) -> float:
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
        return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb or 1.0)

    scores = [cos(query, p) for p in passages]
    return sorted(range(len(passages)), key=lambda i: -scores[i])


def evaluate_embedder(client: EndpointClient, model: str, data: RetrievalEvalSet) -> dict[str, float]:
    passage_vectors = client.embed(data.passages, model)
    query_vectors = client.embed(data.queries, model)
    rankings = [cosine_ranking(q, passage_vectors) for q in query_vectors]
    return mean_metrics(rankings, data.relevant, EMBEDDING_METRICS)


def evaluate_reranker(client: EndpointClient, model: str, data: RetrievalEvalSet) -> dict[str, float]:
    rankings = []
    for query, candidates in zip(data.queries, data.candidates, strict=True):
        results = client.rerank(query, [data.passages[i] for i in candidates], model)
        rankings.append([candidates[r["index"]] for r in results])
    return mean_metrics(rankings, data.relevant, RERANK_METRICS)


def evaluate_retrieval(endpoint: dict[str, Any], kind: str, evalset: str, timeout_s: int) -> dict[str, Any]:
    """Metrics of the fine-tuned model and of its base, side by side, plus the gain."""
    data = read_retrieval_eval(evalset)
    evaluate = evaluate_embedder if kind == "embedding" else evaluate_reranker
    client = EndpointClient.from_endpoint(endpoint, timeout_s)
    tuned = evaluate(client, endpoint["model"], data)
    base = evaluate(client, endpoint["base_model"], data)
    return {
        "fine_tuned": tuned,
        "base": base,
        "gain": {k: tuned[k] - base[k] for k in tuned},
        "queries": len(data.queries),
    }
