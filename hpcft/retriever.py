"""Use a fine-tuned embedder or reranker from Python, without FlagEmbedding's classes.

    from hpcft.retriever import load_embedder, load_reranker, KnowledgeBase

    embedder = load_embedder("runs/minilm-flagembedding-20261128-101500-abc123")  # or a model folder
    kb = KnowledgeBase.from_file(embedder, "handbook.txt")          # one passage per line
    for hit in kb.search("how do I reset my password?", top_k=5):
        print(f"{hit.score:.3f}  {hit.passage}")

    reranker = load_reranker("runs/bge_reranker_large-flagembedding-...")
    reranker.score("query", ["passage a", "passage b"])

Loading fails loudly when there are no fine-tuned weights: it never falls back to the base
model. Heavy imports (FlagEmbedding, torch) happen on first load, not on import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcft.errors import UserError
from hpcft.rundir import fine_tuned_weights
from hpcft.yamlload import read_yaml


def model_folder(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The fine-tuned weights folder of a run directory or a model folder (an error when there
    are none), and the run's model config (empty for a plain folder)."""
    folder = fine_tuned_weights(path)
    config = Path(path).expanduser() / "config.yaml"
    model_cfg: dict[str, Any] = read_yaml(config)["model"] if folder != Path(path).expanduser() else {}
    return folder, model_cfg


class Embedder:
    """Encodes texts into L2-normalised vectors with a fine-tuned embedding model."""

    def __init__(self, folder: Path, pooling: str) -> None:
        from hpcft.serve import embedder

        self.folder = folder
        self._model = embedder(str(folder), pooling, normalize=True, fp16=False, devices=None)

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        return [[float(x) for x in v] for v in self._model.encode(list(texts))]


class Reranker:
    """Scores (query, passage) pairs with a fine-tuned cross-encoder; higher is more relevant."""

    def __init__(self, folder: Path) -> None:
        from FlagEmbedding import FlagReranker

        self.folder = folder
        self._model = FlagReranker(str(folder), use_fp16=False)

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        scores = self._model.compute_score([[query, p] for p in passages])
        return [float(s) for s in (scores if isinstance(scores, list) else [scores])]


def load_embedder(path: str | Path, pooling: str | None = None) -> Embedder:
    """A run directory's fine-tuned embedder (or a model folder's); pooling from the run's config."""
    folder, model_cfg = model_folder(path)
    if model_cfg and model_cfg.get("kind") != "embedding":
        raise UserError(f"{path}: the run fine-tuned a {model_cfg.get('kind')} model, not an embedding model")
    return Embedder(folder, pooling or model_cfg.get("pooling") or "cls")


def load_reranker(path: str | Path) -> Reranker:
    folder, model_cfg = model_folder(path)
    if model_cfg and model_cfg.get("kind") != "rerank":
        raise UserError(f"{path}: the run fine-tuned a {model_cfg.get('kind')} model, not a reranker")
    return Reranker(folder)


@dataclass(frozen=True)
class Hit:
    score: float
    passage: str
    index: int


def split_passages(text: str, by: str = "line") -> list[str]:
    """Passages of a document: non-empty lines (`line`) or blank-line separated blocks (`paragraph`)."""
    if by not in ("line", "paragraph"):
        raise UserError(f"split by {by!r}: use 'line' or 'paragraph'")
    parts = text.split("\n\n") if by == "paragraph" else text.splitlines()
    return [" ".join(p.split()) for p in parts if p.strip()]


class KnowledgeBase:
    """Passages and their embeddings; `search` ranks them by cosine similarity to a query."""

    def __init__(self, embedder: Embedder, passages: Sequence[str]) -> None:
        if not passages:
            raise UserError("a knowledge base needs at least one passage")
        self.embedder, self.passages = embedder, list(passages)
        self.vectors = embedder.encode(self.passages)

    @classmethod
    def from_file(cls, embedder: Embedder, path: str | Path, by: str = "line") -> KnowledgeBase:
        return cls(embedder, split_passages(Path(path).read_text(encoding="utf-8"), by))

    def search(self, query: str, top_k: int = 5) -> list[Hit]:
        (q,) = self.embedder.encode([query])
        qn = math.sqrt(sum(x * x for x in q)) or 1.0
        scores = [sum(a * b for a, b in zip(q, v, strict=True)) / qn for v in self.vectors]
        best = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_k]
        return [Hit(scores[i], self.passages[i], i) for i in best]
