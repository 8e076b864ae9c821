"""Retrieval evaluation through the served models: the fine-tuned model beside its base.

The eval set holds rows `{"query", "pos": [...], "neg": [...]}` (the knowledge base is every
distinct passage of the set) or is a folder in FlagEmbedding's layout (the knowledge base is
its corpus). Embedders are scored by cosine similarity over the whole knowledge base
(recall@1/5/10, MRR@10, nDCG@10); rerankers order each query's candidates (`pos` + `neg`, or
the whole corpus) (recall@1, MRR@10, nDCG@10): FlagEmbedding's evaluator's metrics, through
the same library (pytrec_eval), graded relevance included. Both models get the texts as the
fine-tuned one was trained on them: behind the instructions FlagEmbedding put before queries
and passages, and cut at its query and passage lengths.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import fmean
from typing import Any

from hpcft.client import EndpointClient
from hpcft.data import RetrievalEvalSet, read_retrieval_eval
from hpcft.jobs.spec import EvalJob, Instruction
from hpcft.paired import gain_confidence
from hpcft.rowscores import BASE, FINE_TUNED, ModelScores, digest, write_row_scores

Ranking = list[int]
"""Passage indices, best first."""


Qrels = dict[int, int]
"""One query's judged passages and their relevance (`RetrievalEvalSet.qrels`)."""

TREC_MEASURES = {
    "recall@1": "recall_1",
    "recall@5": "recall_5",
    "recall@10": "recall_10",
    "mrr@10": "recip_rank",  # of rankings cut at 10: MRR@10
    "ndcg@10": "ndcg_cut_10",
}
"""Each metric hpcft reports, as trec_eval's measure names it."""
EMBEDDING_METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
RERANK_METRICS = ("recall@1", "mrr@10", "ndcg@10")


def query_scores(rankings: Sequence[Ranking], qrels: Sequence[Qrels], metrics: Sequence[str]) -> dict[str, list[float]]:
    """Each query's metrics (x 100), in query order, as FlagEmbedding's evaluator computes them
    (`FlagEmbedding.abc.evaluation.utils.evaluate_metrics` and `evaluate_mrr`): trec_eval's
    measures through pytrec_eval, on graded qrels (nDCG's gain is the relevance; recall and MRR
    count relevance above 0; a query whose relevances are all 0 scores 0), over each ranking's
    first TOP_K passages. A test checks their means against FlagEmbedding's own functions."""
    import pytrec_eval

    judged = {str(q): {str(p): grade for p, grade in grades.items()} for q, grades in enumerate(qrels)}
    run = {str(q): {str(p): float(TOP_K - i) for i, p in enumerate(r[:TOP_K])} for q, r in enumerate(rankings)}
    scores = pytrec_eval.RelevanceEvaluator(judged, {"recall.1,5,10", "recip_rank", "ndcg_cut.10"}).evaluate(run)
    if len(rankings) != len(qrels) or len(scores) != len(rankings) or not scores:
        raise ValueError("need one ranking and at least one judged passage per query, and a query")
    return {name: [100.0 * scores[str(q)][TREC_MEASURES[name]] for q in range(len(qrels))] for name in metrics}


def mean_metrics(rankings: Sequence[Ranking], qrels: Sequence[Qrels], metrics: Sequence[str]) -> dict[str, float]:
    """Each metric (x 100) averaged over the queries: the mean of `query_scores`."""
    return {name: fmean(values) for name, values in query_scores(rankings, qrels, metrics).items()}


TOP_K = 10
"""Every metric looks at the first 10 passages at most, so only those are kept."""
EMBED_BATCH = 128
"""Texts per `/embeddings` request: large enough to fill an engine's batches, small enough
that one response stays a few MB of JSON."""
MAX_IN_FLIGHT = 16
"""Retrieval requests in flight at most (each carries 128 texts, or a query's candidates)."""
SCORE_BLOCK = 8192
"""Passages scored against all queries at once: queries x 8192 float32 scores at a time."""


def truncated(tokens: int | None, context: int | None) -> dict[str, int]:
    """The request field that cuts a text to `tokens` from its end, at most the served
    `context` (-1: to it). Asked of the server (vLLM's `truncate_prompt_tokens`; it refuses a
    longer text otherwise), as FlagEmbedding's tokenizer cuts texts in training; a server that
    truncates on its own (hpcft.serve, which runs FlagEmbedding) ignores it."""
    if tokens is None or (context is not None and tokens > context):
        return {"truncate_prompt_tokens": -1}
    return {"truncate_prompt_tokens": tokens}


def embed_all(
    client: EndpointClient, texts: Sequence[str], model: str, concurrency: int, cut: dict[str, int] | None = None
) -> Any:
    """One L2-normalised float32 row per text, from batched requests `concurrency` at a time,
    each text cut as `cut` says (`truncated`); each response becomes a numpy block at once (a
    list of Python floats costs ~6x more)."""
    import numpy as np

    batches = [list(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)]
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        blocks = list(pool.map(lambda batch: embedding_block(client, batch, model, cut or {}), batches))
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def embedding_block(client: EndpointClient, texts: list[str], model: str, cut: dict[str, int]) -> Any:
    """The vectors of one request as a float32 matrix. Asks for base64 (the OpenAI API's
    compact form: 4 bytes a number instead of ~20 of JSON text) and reads lists of floats
    from servers that ignore it."""
    import numpy as np

    answer = client.post("/embeddings", {"model": model, "input": texts, "encoding_format": "base64", **cut})
    data = sorted(answer["data"], key=lambda d: d["index"])
    if data and isinstance(data[0]["embedding"], str):
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype=np.float32) for d in data])
    return np.asarray([d["embedding"] for d in data], dtype=np.float32)


def top_k(queries: Any, passages: Any, k: int = TOP_K) -> list[Ranking]:
    """The `k` passages of highest cosine similarity per query, best first: one matrix product
    per block of passages, merged into a running top-k (memory: queries x block)."""
    import numpy as np

    k = min(k, len(passages))
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(passages), SCORE_BLOCK):
        block = passages[start : start + SCORE_BLOCK]
        block_ids = np.broadcast_to(np.arange(start, start + len(block)), (len(queries), len(block)))
        scores = np.concatenate([best_scores, queries @ block.T], axis=1)
        ids = np.concatenate([best_ids, block_ids], axis=1)
        if scores.shape[1] > k:
            keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores, ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
        best_scores, best_ids = scores, ids
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return [list(map(int, row)) for row in np.take_along_axis(best_ids, order, 1)]


def cosine_ranking(query: list[float], passages: list[list[float]]) -> Ranking:
    """Every passage by cosine similarity to one query, best first."""
    import numpy as np

    q, p = np.asarray([query], dtype=np.float32), np.asarray(passages, dtype=np.float32)
    q /= np.linalg.norm(q) or 1.0
    p /= np.where((n := np.linalg.norm(p, axis=1, keepdims=True)) == 0, 1.0, n)
    return top_k(q, p, len(passages))[0]


def written(texts: Sequence[str], instruction: Instruction | None) -> list[str]:
    """The texts as the model was trained on them: behind their instruction, where it had one."""
    if instruction is None:
        return list(texts)
    form, text = instruction
    return [form.format(text, t) for t in texts]


def evaluate_embedder(
    client: EndpointClient, model: str, data: RetrievalEvalSet, job: EvalJob
) -> dict[str, list[float]]:
    context, flight = served_context(client, model), min(job.concurrency, MAX_IN_FLIGHT)
    query_cut, passage_cut = (truncated(n, context) for n in job.truncation or (None, None))
    query_instruction, passage_instruction = job.instructions
    passages = embed_all(client, written(data.passages, passage_instruction), model, flight, passage_cut)
    queries = embed_all(client, written(data.queries, query_instruction), model, flight, query_cut)
    return query_scores(top_k(queries, passages), data.qrels, EMBEDDING_METRICS)


def evaluate_reranker(
    client: EndpointClient, model: str, data: RetrievalEvalSet, job: EvalJob
) -> dict[str, list[float]]:
    pair_cut = truncated(sum(job.truncation) if job.truncation else None, served_context(client, model))
    query_instruction, passage_instruction = job.instructions
    queries, passages = written(data.queries, query_instruction), written(data.passages, passage_instruction)

    def ranked(item: tuple[str, list[int]]) -> Ranking:
        query, candidates = item
        results = client.rerank(query, [passages[i] for i in candidates], model, pair_cut)
        return [candidates[r["index"]] for r in results]

    with ThreadPoolExecutor(max_workers=min(job.concurrency, MAX_IN_FLIGHT)) as pool:
        rankings = list(pool.map(ranked, zip(queries, data.candidates, strict=True)))
    return query_scores(rankings, data.qrels, RERANK_METRICS)


def served_context(client: EndpointClient, model: str) -> int | None:
    """The tokens the server takes per text (vLLM's `max_model_len` in `/models`); None where
    it does not say."""
    cards = client.get("/models").get("data", [])
    return next((int(c["max_model_len"]) for c in cards if c.get("id") == model and "max_model_len" in c), None)


Scorer = Callable[[RetrievalEvalSet, EvalJob], dict[str, list[float]]]
"""One model's metrics per query on an eval set (`evaluate_embedder`, `evaluate_reranker`, or
the same in the eval job itself: hpcft.jobs.local_encode)."""
Sides = dict[str, tuple[str, Scorer]]
"""The fine-tuned model and its base (`FINE_TUNED`, `BASE`, in that order): name and scorer."""


def served_models(endpoint: dict[str, Any], job: EvalJob) -> Sides:
    """The fine-tuned model and its base through the endpoint: the base on its own server
    (vLLM: one model each), or beside the fine-tuned one."""
    evaluate = evaluate_embedder if job.task == "embedding" else evaluate_reranker
    base_endpoint = endpoint.get("baseline") or {**endpoint, "model": endpoint["base_model"]}
    sides: Sides = {}
    for side, served in ((FINE_TUNED, endpoint), (BASE, base_endpoint)):
        client = EndpointClient.from_endpoint(served, job.request_timeout_s, job.retries)
        sides[side] = (served["model"], functools.partial(evaluate, client, served["model"]))
    return sides


def evaluate_retrieval(models: Sides, job: EvalJob, scores_file: Path | None = None) -> dict[str, Any]:
    """Metrics of the fine-tuned model and of its base, side by side, plus the gain and its
    95 % interval; each query's scores written to `scores_file` (`hpcft.rowscores`) if given."""
    import pytrec_eval  # noqa: F401  (the metrics need it: fail before the models are asked)

    data = read_retrieval_eval(job.evalset)
    rows = list(range(len(data.queries)))
    scored = {side: ModelScores(name, rows, score(data, job)) for side, (name, score) in models.items()}
    tuned, base = scored[FINE_TUNED], scored[BASE]
    if scores_file is not None:
        fingerprint = digest([data.passages, data.queries, [sorted(q.items()) for q in data.qrels], data.candidates])
        write_row_scores(scores_file, job.evalset, fingerprint, len(rows), {FINE_TUNED: tuned, BASE: base})
    tuned_means = {k: fmean(v) for k, v in tuned.scores.items()}
    base_means = {k: fmean(v) for k, v in base.scores.items()}
    return {
        "fine_tuned": tuned_means,
        "base": base_means,
        "gain": {k: tuned_means[k] - base_means[k] for k in tuned_means},
        "queries": len(data.queries),
        **gain_confidence(base, tuned),
    }
