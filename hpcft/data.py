"""Data-file checks on the login node: every row parses and has the fields its format needs.

Rows are read from a JSON array or a JSONL file; each error names the file and the line
the row starts on, so a bad dataset fails in a second instead of after hours in a queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcft.errors import DataError

Row = dict[str, Any]
RowCheck = Callable[[Row], str | None]


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(str(path), "no such file" if not path.exists() else "not a file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(str(path), f"not UTF-8 (byte {e.start})", raw.count(b"\n", 0, e.start) + 1) from None
    if not text.strip():
        raise DataError(str(path), "the file is empty")
    return text


def _json_array_rows(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text):
            raise DataError(str(path), "truncated JSON: the array is not closed", _line_of(text, i))
        if text[i] == "]":
            return
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            at = f"line {e.lineno} column {e.colno}"
            raise DataError(
                str(path), f"invalid JSON in the row starting here: {e.msg} at {at}", _line_of(text, i)
            ) from None
        yield _line_of(text, i), value
        i = end


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(str(path), f"invalid JSON: {e.msg}", number) from None


def read_rows(path: str | Path) -> list[tuple[int, Row]]:
    """All rows of a JSON array or JSONL file as (line, row); each row must be an object."""
    path = Path(path)
    text = _read_text(path)
    rows_iter = _json_array_rows if text.lstrip().startswith("[") else _jsonl_rows
    rows = []
    for line, row in rows_iter(path, text):
        if not isinstance(row, dict):
            raise DataError(str(path), f"each row must be a JSON object, got {type(row).__name__}", line)
        rows.append((line, row))
    if not rows:
        raise DataError(str(path), "no rows")
    return rows


def _nonempty_str(row: Row, key: str) -> str | None:
    value = row.get(key)
    if key not in row:
        return f"missing field {key!r}"
    if not isinstance(value, str) or not value.strip():
        return f"field {key!r} must be a non-empty string"
    return None


def alpaca_row(row: Row) -> str | None:
    for key in ("instruction", "output"):
        if problem := _nonempty_str(row, key):
            return problem
    if not isinstance(row.get("input", ""), str):
        return "field 'input' must be a string"
    return None


def sharegpt_row(row: Row) -> str | None:
    messages = row.get("messages", row.get("conversations"))
    if not isinstance(messages, list) or not messages:
        return "missing field 'messages' (a non-empty list of {role, content})"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not {"role", "content"} <= m.keys():
            return f"messages[{i}] must have 'role' and 'content'"
        if m["role"] not in ("system", "user", "assistant", "function", "observation", "tool"):
            return f"messages[{i}] has unknown role {m['role']!r}"
    return None


def text_row(row: Row) -> str | None:
    """Pre-training (`stage=pt`): plain text."""
    return _nonempty_str(row, "text")


def preference_row(row: Row) -> str | None:
    """Preference pairs (`stage=dpo`, alpaca layout): a prompt, a chosen and a rejected answer."""
    for key in ("instruction", "chosen", "rejected"):
        if problem := _nonempty_str(row, key):
            return problem
    return None


ROW_CHECKS: dict[str, RowCheck] = {"alpaca": alpaca_row, "sharegpt": sharegpt_row}


def check_rows(path: str | Path, check: RowCheck) -> int:
    """Check every row of a data file; return the row count or raise DataError at the first bad row."""
    rows = read_rows(path)
    for line, row in rows:
        if problem := check(row):
            raise DataError(str(path), problem, line)
    return len(rows)


@dataclass(frozen=True)
class RetrievalEvalSet:
    """Queries over a knowledge base of passages, with the relevant passages of each query and
    the candidates a reranker orders."""

    passages: list[str]
    queries: list[str]
    relevant: list[set[int]]
    candidates: list[list[int]]


def _retrieval_rows(path: Path) -> RetrievalEvalSet:
    rows = [row for _, row in read_rows(path)]
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
    corpus = {str(r["id"]): i for i, (_, r) in enumerate(read_rows(folder / "corpus.jsonl"))}
    texts = [" ".join(filter(None, [r.get("title"), r["text"]])) for _, r in read_rows(folder / "corpus.jsonl")]
    queries = {str(r["id"]): r["text"] for _, r in read_rows(folder / f"{split}_queries.jsonl")}
    relevant: dict[str, set[int]] = {qid: set() for qid in queries}
    qrels = folder / f"{split}_qrels.jsonl"
    for line, r in read_rows(qrels):
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
