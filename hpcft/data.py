"""Data-file checks on the login node: every row parses and passes its framework's check.

Rows come from `hpcft.jsonrows` (JSON array or JSONL, streamed); each error names the file
and the line the row starts on, so a bad dataset fails in a second instead of after hours
in a queue. What a row must hold is each framework adapter's knowledge; this module only
runs the checks, once per distinct file and check in a command (`hpcft.once`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from hpcft.errors import DataError
from hpcft.jsonrows import Row, SourceRow, iter_rows, read_rows
from hpcft.once import file_state, once

__all__ = ["FileReport", "Measure", "Row", "RowCheck", "SourceRow", "check_rows", "iter_rows", "read_rows", "scan_rows"]

RowCheck = Callable[[Row], str | None]
Measure = Callable[[Row], tuple[int, ...]]
"""Sizes of a checked row (e.g. an upper bound of its tokens), for the memory estimate."""


@dataclass(frozen=True)
class FileReport:
    """What a full check of a data file found."""

    rows: int
    """Rows in the file; all of them passed the check."""
    keys: frozenset[str]
    """Every top-level key seen in any row."""
    longest: tuple[int, ...] = ()
    """Each size the scan's `measure` returns, at its largest over the rows; () without one."""
    sums: tuple[int, ...] = ()
    """Each size summed over the rows; () without a `measure`."""


def scan_rows(path: str | Path, check: RowCheck, check_id: Hashable, measure: Measure | None = None) -> FileReport:
    """Check every row of a data file (streaming, linear); raise DataError at the first bad
    row. `check_id` says what the check (and the `measure`, when given) is: a sweep checks
    each distinct file once, however many points name it."""
    state = file_state(path)
    if state is None:
        return _scan(Path(path), check, measure)  # it names the missing file
    return once(("rows", state, check_id, measure is not None), lambda: _scan(Path(path), check, measure))


def _scan(path: Path, check: RowCheck, measure: Measure | None) -> FileReport:
    rows, keys = 0, set[str]()
    longest: tuple[int, ...] = ()
    sums: tuple[int, ...] = ()
    for source in iter_rows(path):
        if problem := check(source.row):
            raise DataError(str(path), problem, source.line)
        keys.update(source.row)
        rows += 1
        if measure is not None:
            sizes = measure(source.row)
            longest = tuple(map(max, longest, sizes)) if longest else sizes
            sums = tuple(map(sum, zip(sums, sizes, strict=True))) if sums else sizes
    if not rows:
        raise DataError(str(path), "no rows")
    return FileReport(rows, frozenset(keys), longest, sums)


def check_rows(path: str | Path, check: RowCheck) -> int:
    """Check every row of a data file; return the row count or raise DataError at the first bad row."""
    return scan_rows(path, check, check).rows


@dataclass(frozen=True)
class RetrievalEvalSet:
    """Queries over a knowledge base of passages, with each query's qrels (judged passages and
    their graded relevance) and the candidates a reranker orders."""

    passages: list[str]
    queries: list[str]
    qrels: list[dict[int, int]]
    """Per query, passage index -> relevance as FlagEmbedding's qrels grade it: above 0 relevant
    (nDCG's gain is the grade), 0 or below judged not relevant. Every query has one at least."""
    candidates: list[list[int]]


def _retrieval_rows(path: Path) -> RetrievalEvalSet:
    rows = [r.row for r in read_rows(path)]
    index: dict[str, int] = {}
    for row in rows:
        for p in [*row["pos"], *row.get("neg", [])]:
            index.setdefault(p, len(index))
    return RetrievalEvalSet(
        passages=list(index),
        queries=[row["query"] for row in rows],
        qrels=[dict.fromkeys((index[p] for p in row["pos"]), 1) for row in rows],
        candidates=[list(dict.fromkeys(index[p] for p in [*row["pos"], *row.get("neg", [])])) for row in rows],
    )


def _flagembedding_layout(folder: Path) -> RetrievalEvalSet:
    """FlagEmbedding's evaluation layout: corpus.jsonl {id, text[, title]},
    <split>_queries.jsonl {id, text}, <split>_qrels.jsonl {qid, docid, relevance}. Queries
    without a qrels row are left out (FlagEmbedding's evaluator cannot score them); a query whose
    relevances are all 0 stays in and scores 0, as in FlagEmbedding."""
    splits = sorted(p.name[: -len("_queries.jsonl")] for p in folder.glob("*_queries.jsonl"))
    if not (folder / "corpus.jsonl").is_file() or not splits:
        raise DataError(
            str(folder), "an eval folder needs corpus.jsonl and <split>_queries.jsonl + <split>_qrels.jsonl"
        )
    split = "test" if "test" in splits else splits[0]
    corpus_rows = _text_rows(folder / "corpus.jsonl")
    corpus = {str(r["id"]): i for i, r in enumerate(corpus_rows)}
    texts = [" ".join(filter(None, [r.get("title"), r["text"]])) for r in corpus_rows]
    queries = {str(r["id"]): r["text"] for r in _text_rows(folder / f"{split}_queries.jsonl")}
    qrels = _read_qrels(folder / f"{split}_qrels.jsonl", queries, corpus)
    qids = [q for q in queries if q in qrels]
    everything = list(range(len(texts)))
    return RetrievalEvalSet(texts, [queries[q] for q in qids], [qrels[q] for q in qids], [everything for _ in qids])


def _text_rows(path: Path) -> list[Row]:
    """Rows of FlagEmbedding's corpus.jsonl or queries file: `{id, text[, title]}`, text a string."""
    rows = read_rows(path)
    for line, row in rows:
        for name in ("id", "text"):
            if row.get(name) is None:
                raise DataError(str(path), f"missing field {name!r} (its rows are {{id, text[, title]}})", line)
        for name in ("text", "title"):
            if name in row and row[name] is not None and not isinstance(row[name], str):
                raise DataError(str(path), f"field {name!r} must be a string", line)
    return [row for _, row in rows]


def _read_qrels(path: Path, queries: dict[str, str], corpus: dict[str, int]) -> dict[str, dict[int, int]]:
    """qid -> {passage index: relevance} (1 where a row has none; a later row for the same pair
    wins, as in FlagEmbedding's loader). Relevance must be an integer (pytrec_eval, which
    FlagEmbedding's evaluator scores with, takes no other), and one at least above 0."""
    qrels: dict[str, dict[int, int]] = {}
    for source in read_rows(path):
        line, r = source.line, source.row
        qid, docid, relevance = str(r.get("qid")), str(r.get("docid")), r.get("relevance", 1)
        if qid not in queries or docid not in corpus:
            raise DataError(str(path), f"qid {qid!r} or docid {docid!r} is in no queries / corpus row", line)
        integral = isinstance(relevance, int) or (isinstance(relevance, float) and relevance.is_integer())
        if isinstance(relevance, bool) or not integral:
            raise DataError(str(path), f"relevance must be an integer grade (got {relevance!r})", line)
        qrels.setdefault(qid, {})[corpus[docid]] = int(relevance)
    if not any(grade > 0 for grades in qrels.values() for grade in grades.values()):
        raise DataError(
            str(path), "no relevance above 0 in any row: no query has a relevant passage, every metric would be 0"
        )
    return qrels


def read_retrieval_eval(path: str | Path) -> RetrievalEvalSet:
    """A retrieval eval set from rows `{query, pos, neg?}` or from FlagEmbedding's folder layout."""
    path = Path(path)
    return _flagembedding_layout(path) if path.is_dir() else _retrieval_rows(path)
