"""FlagEmbedding's data as its fine-tuning reads it: which files of a `train_data` entry it
reads, and the row each file must hold (training, distillation and retrieval-eval rows)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpcft.config.checks import check_finite
from hpcft.config.schema import HpcftConfig, ModelKind
from hpcft.data import Row
from hpcft.errors import ConfigError, DataError


def retrieval_eval_row(row: Row) -> str | None:
    """An eval query: the query and its relevant passages (`neg` optional: more candidates)."""
    if not isinstance(row.get("query"), str) or not row["query"].strip():
        return "field 'query' must be a non-empty string"
    for key in ("pos", "neg"):
        value = row.get(key, [] if key == "neg" else None)
        if not isinstance(value, list) or (key == "pos" and not value) or not all(isinstance(p, str) for p in value):
            return f"field {key!r} must be a {'non-empty ' if key == 'pos' else ''}list of strings"
    return None


def distillation_row(row: Row) -> str | None:
    """With `knowledge_distillation`, every row needs teacher scores for each passage."""
    for key in ("pos", "neg"):
        if not isinstance(row.get(f"{key}_scores"), list):
            return f"field '{key}_scores' is needed with knowledge_distillation (one score per {key!r} passage)"
    return retrieval_row(row)


def data_files(path: str) -> list[Path]:
    """The files FlagEmbedding reads for one `train_data` entry: a .json/.jsonl file, or those
    in a folder (it silently skips anything else, so such a name is refused here)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in (".json", ".jsonl"))
        if not files:
            raise DataError(path, "no .json or .jsonl files in the folder (FlagEmbedding reads only those)")
        return files
    if p.exists() and p.suffix not in (".json", ".jsonl"):
        raise DataError(path, "FlagEmbedding reads only .json and .jsonl files; it would skip this one")
    return [p]


def retrieval_row(row: Row) -> str | None:
    """FlagEmbedding's training row: a query, non-empty `pos` and `neg` (it crashes on empty `neg`)."""
    if not isinstance(row.get("query"), str) or not row["query"].strip():
        return "field 'query' must be a non-empty string"
    for key in ("pos", "neg"):
        value = row.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
            return f"field {key!r} must be a non-empty list of strings"
        scores = row.get(f"{key}_scores")
        if scores is not None and (not isinstance(scores, list) or len(scores) != len(value)):
            return f"field '{key}_scores' must be a list as long as {key!r} ({len(value)})"
    return None


def check_general_sets(cfg: HpcftConfig, read: Callable[[str], Any]) -> None:
    """`eval.general_sets`: FlagEmbedding evaluation folders, each read as the eval job reads
    it (`read`), names not repeated; embedders only: a reranker's general set would need a
    first-stage retriever's candidates, which the run does not have."""
    sets, drop = cfg.eval.general_sets, cfg.eval.max_general_drop
    if drop is not None:
        check_finite("eval.max_general_drop", drop)
        if drop < 0:
            raise ConfigError("eval.max_general_drop", f"must be >= 0 points (got {drop})")
    if not sets:
        return
    if cfg.model.kind is not ModelKind.embedding:
        raise ConfigError("eval.general_sets", f"general sets score embedders; {cfg.model.name} is a reranker")
    names = [Path(p).name for p in sets]
    if len(set(names)) != len(names):
        raise ConfigError("eval.general_sets", f"two sets share a folder name ({', '.join(names)}); results go by name")
    for path in sets:
        if not Path(path).is_dir():
            raise DataError(path, "a general set is a folder in FlagEmbedding's evaluation layout (corpus.jsonl, ...)")
        read(path)
