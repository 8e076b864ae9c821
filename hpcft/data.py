"""Data-file checks on the login node: every row parses and has the fields its format needs.

Rows are read from a JSON array or a JSONL file; each error names the file and the line
the row starts on, so a bad dataset fails in a second instead of after hours in a queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
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
