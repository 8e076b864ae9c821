"""`eval.encode=local`: the retrieval eval's models loaded in the eval job itself.

Where the endpoint is not what is being tested, the eval needs no server: it encodes with
FlagEmbedding's own classes (`hpcft.serve.embedder`: `FlagModel` pooling `cls` or `mean`,
`FlagLLMModel` the last token, L2-normalised, as training pooled) and scores pairs with
`FlagReranker`, on the job's device: its GPUs in fp16 where it has them (as hpcft's own
server runs them), else the CPU in fp32. Texts are written and cut as on the endpoint path
(`hpcft.jobs.retrieval`): behind the training's instructions, at its query and passage
lengths, at most the model's own context. The rankings and metrics are those of
`hpcft.jobs.retrieval`, so the two paths differ only in who computes the vectors.

Each model is loaded when first asked and kept for the general sets, fine-tuned first.
"""

from __future__ import annotations

from typing import Any

from hpcft.data import RetrievalEvalSet
from hpcft.jobs.retrieval import (
    EMBEDDING_METRICS,
    RERANK_METRICS,
    Ranking,
    Sides,
    query_scores,
    top_k,
    written,
)
from hpcft.jobs.spec import EvalJob, LocalModels
from hpcft.rowscores import BASE, FINE_TUNED

BATCH = 128
"""Texts (or pairs) per forward pass: the endpoint path's request size."""


def device() -> tuple[Any, bool]:
    """FlagEmbedding's `devices` and `use_fp16` for this job: every GPU it was given in fp16,
    else the CPU in fp32."""
    import torch

    return (None, True) if torch.cuda.is_available() else ("cpu", False)


class LocalModel:
    """One embedder or reranker, loaded on first use."""

    def __init__(self, path: str, task: str, pooling: str) -> None:
        self.path, self.task, self.pooling = path, task, pooling
        self._model: Any = None

    def model(self) -> Any:
        if self._model is None:
            from hpcft.serve import embedder

            devices, fp16 = device()
            print(f"eval: loading {self.path} ({'GPU, fp16' if fp16 else 'CPU'})", flush=True)
            if self.task == "embedding":
                self._model = embedder(self.path, self.pooling, normalize=True, fp16=fp16, devices=devices)
            else:
                from FlagEmbedding import FlagReranker

                self._model = FlagReranker(self.path, use_fp16=fp16, devices=devices)
        return self._model

    def context(self, tokens: int | None) -> int:
        """`tokens` (the training's length; None: the model's), at most the model's context."""
        limit = int(min(self.model().tokenizer.model_max_length, 10**9))
        return limit if tokens is None else min(tokens, limit)

    def __call__(self, data: RetrievalEvalSet, job: EvalJob) -> dict[str, list[float]]:
        return self.embedder_scores(data, job) if self.task == "embedding" else self.reranker_scores(data, job)

    def encode(self, texts: list[str], tokens: int | None) -> Any:
        import numpy as np

        vectors = np.asarray(
            self.model().encode(texts, batch_size=BATCH, max_length=self.context(tokens), convert_to_numpy=True),
            dtype=np.float32,
        ).reshape(len(texts), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)

    def embedder_scores(self, data: RetrievalEvalSet, job: EvalJob) -> dict[str, list[float]]:
        query_len, passage_len = job.truncation or (None, None)
        query_instruction, passage_instruction = job.instructions
        passages = self.encode(written(data.passages, passage_instruction), passage_len)
        queries = self.encode(written(data.queries, query_instruction), query_len)
        return query_scores(top_k(queries, passages), data.qrels, EMBEDDING_METRICS)

    def reranker_scores(self, data: RetrievalEvalSet, job: EvalJob) -> dict[str, list[float]]:
        pair_len = self.context(sum(job.truncation) if job.truncation else None)
        query_instruction, passage_instruction = job.instructions
        queries, passages = written(data.queries, query_instruction), written(data.passages, passage_instruction)
        rankings: list[Ranking] = []
        for query, candidates in zip(queries, data.candidates, strict=True):
            pairs = [[query, passages[i]] for i in candidates]
            scores = self.model().compute_score(pairs, batch_size=BATCH, max_length=pair_len)
            scores = scores if isinstance(scores, list) else [scores]
            order = sorted(range(len(candidates)), key=lambda i: -float(scores[i]))
            rankings.append([candidates[i] for i in order])
        return query_scores(rankings, data.qrels, RERANK_METRICS)


def local_models(local: LocalModels, task: str) -> Sides:
    """The fine-tuned model and its base, each loaded in this job when first asked."""
    return {
        FINE_TUNED: (local.model_name, LocalModel(local.weights, task, local.pooling)),
        BASE: ("base", LocalModel(local.base, task, local.pooling)),
    }
