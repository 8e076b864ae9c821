"""Data-file checks on the login node: every row parses and passes its framework's check.

Rows come from `hpcft.jsonrows` (JSON array or JSONL, streamed); each error names the file
and the line the row starts on, so a bad dataset fails in a second instead of after hours
in a queue. What a row must hold is each framework adapter's knowledge; this module only
runs the checks, once per distinct file and check in a process.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from hpcft.errors import DataError
from hpcft.jsonrows import Row, SourceRow, iter_rows, read_rows

__all__ = ["FileReport", "Row", "RowCheck", "SourceRow", "check_rows", "iter_rows", "read_rows", "scan_rows"]

RowCheck = Callable[[Row], str | None]


@dataclass(frozen=True)
class FileReport:
    """What a full check of a data file found."""

    rows: int
    """Rows in the file; all of them passed the check."""
    keys: frozenset[str]
    """Every top-level key seen in any row."""


_CHECKED: dict[tuple[Hashable, ...], FileReport] = {}
"""Files already checked in this process, by (path, size, mtime, check): a sweep checks each
distinct file once, however many points name it."""


def scan_rows(path: str | Path, check: RowCheck, check_id: Hashable) -> FileReport:
    """Check every row of a data file (streaming, linear); raise DataError at the first bad
    row. `check_id` says what the check is, for the once-per-file cache."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        stat = None
    key = (str(path.absolute()), stat and stat.st_size, stat and stat.st_mtime_ns, check_id)
    if stat is not None and key in _CHECKED:
        return _CHECKED[key]
    rows, keys = 0, set[str]()
    for source in iter_rows(path):
        if problem := check(source.row):
            raise DataError(str(path), problem, source.line)
        keys.update(source.row)
        rows += 1
    if not rows:
        raise DataError(str(path), "no rows")
    report = _CHECKED[key] = FileReport(rows, frozenset(keys))
    return report


def check_rows(path: str | Path, check: RowCheck) -> int:
    """Check every row of a data file; return the row count or raise DataError at the first bad row."""
    return scan_rows(path, check, check).rows


@dataclass(frozen=True)
class RetrievalEvalSet:
    """Queries over a knowledge base of passages, with the relevant passages of each query and
    the candidates a reranker orders."""

    passages: list[str]
    queries: list[str]
    relevant: list[set[int]]
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
        relevant=[{index[p] for p in row["pos"]} for row in rows],
        candidates=[[index[p] for p in [*row["pos"], *row.get("neg", [])]] for row in rows],
    )


def _flagembedding_layout(folder: Path) -> RetrievalEvalSet:
    """FlagEmbedding's evaluation layout: corpus.jsonl {id, text[, title]},
    <split>_queries.jsonl {id, text}, <split>_qrels.jsonl {qid, docid, relevance}."""
    splits = sorted(p.name[: -len("_queries.jsonl")] for p in folder.glob("*_queries.jsonl"))
    if not (folder / "corpus.jsonl").is_file() or not splits:
        raise DataError(
            str(folder), "an eval folder needs corpus.jsonl and <split>_queries.jsonl + <split>_qrels.jsonl"
        )
    split = "test" if "test" in splits else splits[0]
    corpus_rows = [r.row for r in read_rows(folder / "corpus.jsonl")]
    corpus = {str(r["id"]): i for i, r in enumerate(corpus_rows)}
    texts = [" ".join(filter(None, [r.get("title"), r["text"]])) for r in corpus_rows]
    queries = {str(r.row["id"]): r.row["text"] for r in read_rows(folder / f"{split}_queries.jsonl")}
    relevant: dict[str, set[int]] = {qid: set() for qid in queries}
    qrels = folder / f"{split}_qrels.jsonl"
    for source in read_rows(qrels):
        line, r = source.line, source.row
        qid, docid = str(r.get("qid")), str(r.get("docid"))
        if qid not in queries or docid not in corpus:
            raise DataError(str(qrels), f"qid {qid!r} or docid {docid!r} is in no queries / corpus row", line)
        if float(r.get("relevance", 1)) > 0:
            relevant[qid].add(corpus[docid])
    qids = [q for q in queries if relevant[q]]
    everything = list(range(len(texts)))
    return RetrievalEvalSet(texts, [queries[q] for q in qids], [relevant[q] for q in qids], [everything for _ in qids])


def read_retrieval_eval(path: str | Path) -> RetrievalEvalSet:
    """A retrieval eval set from rows `{query, pos, neg?}` or from FlagEmbedding's folder layout."""
    path = Path(path)
    return _flagembedding_layout(path) if path.is_dir() else _retrieval_rows(path)
