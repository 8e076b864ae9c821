"""The one row reader: strict JSON, `file:line` of the first bad row, streaming across chunks."""

from __future__ import annotations

import json

import pytest

from hpcft import jsonrows
from hpcft.data import check_rows, read_rows
from hpcft.errors import DataError
from hpcft.frameworks.flagembedding_data import retrieval_row


def write(tmp_path, text: str | bytes, name: str = "d.json"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def refused(path) -> str:
    with pytest.raises(DataError) as e:
        read_rows(path)
    return str(e.value)


def test_json_array_and_jsonl_rows_with_their_lines(tmp_path):
    array = write(tmp_path, '[\n  {"a": 1},\n\n  {"a": 2,\n   "b": [1, {"c": "]}"}]}\n]\n')
    assert [(r.line, r.row["a"]) for r in read_rows(array)] == [(2, 1), (4, 2)]
    lines = write(tmp_path, '{"a": 1}\n\n{"a": 2}\n', "d.jsonl")
    assert [(r.line, r.row["a"]) for r in read_rows(lines)] == [(1, 1), (3, 2)]


@pytest.mark.parametrize(
    "content,where,message",
    [
        ("", None, "the file is empty"),
        ("   \n", None, "the file is empty"),
        ("[]", None, "no rows"),
        ('[\n{"a": 1},\n{"a": 2},\n]', 4, "a trailing comma before ']'"),
        ('[\n{"a": 1}\n{"a": 2}\n]', 3, "a missing comma between rows"),
        ('[{"a": 1},,{"a": 2}]', 1, "an extra comma"),
        ('[{"a": 1}]\n]', 2, "text after the closing ']'"),
        ('[\n{"a": 1},\n{"a": NaN}]', 3, "NaN is not valid JSON"),
        ('[\n{"a": 1},\n{"a": \n tru}\n]', 4, "invalid JSON in this row"),
        ('[\n{"a": 1},\n{"a": "x', 3, "invalid JSON in this row"),
        ('[\n{"a": 1},\n{"a": 2}', 3, "the array is not closed"),
        ('[\n"just a string"]', 2, "each row must be a JSON object"),
        ('[{"a": "line\nbreak"}]', 1, "Invalid control character"),
        ('{"a": 1}\n{"a": 2,}\n', 2, "invalid JSON"),
        ('{"a": 1}\n[1, 2]\n', 2, "each row must be a JSON object, got list"),
        ('{"a": 1}\n{"a": 1} {"b": 2}\n', 2, "more than one value on the line"),
        ('{"a": 1}\n{"a": Infinity}\n', 2, "Infinity is not valid JSON"),
        ('\ufeff[{"a": 1}]', 1, "byte-order mark"),
        (b'[{"a": "caf\xe9"}]', 1, "not UTF-8"),
        (b'{"a": 1}\n{"a": "caf\xe9"}\n', 2, "not UTF-8"),
    ],
)
def test_malformed_files_are_refused_at_their_line(tmp_path, content, where, message):
    path = write(tmp_path, content)
    error = refused(path)
    assert error.startswith(f"{path}:{where}: " if where else f"{path}: ")
    assert message in error


def test_missing_file_and_folder(tmp_path):
    assert refused(tmp_path / "nope.json").endswith("no such file")
    assert "not a file" in refused(tmp_path)


def test_rows_cut_by_read_chunks_are_whole_and_lines_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonrows, "CHUNK", 7)  # every row and many strings straddle chunks
    rows = [{"t": "é漢字" * i, "n": i, "nested": [{"x": '}]\\"'}]} for i in range(60)]
    path = write(tmp_path, json.dumps(rows, indent=1, ensure_ascii=False))
    got = read_rows(path)
    assert [r.row for r in got] == rows
    text = path.read_text(encoding="utf-8").splitlines()
    assert all(text[r.line - 1].strip() == "{" for r in got)


def test_first_bad_row_fails_without_reading_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonrows, "CHUNK", 64)
    path = write(tmp_path, '[{"a": 1},\n{"a": }' + ',{"a": 1}' * 100_000 + "]")
    reads = []
    real_open = jsonrows._open

    def counting_open(p):
        stream = real_open(p)
        read = stream.read
        stream.read = lambda n=-1: reads.append(n) or read(n)  # type: ignore[method-assign]
        return stream

    monkeypatch.setattr(jsonrows, "_open", counting_open)
    assert "d.json:2: invalid JSON in this row" in refused(path)
    assert len(reads) < 10


@pytest.mark.parametrize(
    "row,message",
    [
        ('{"query": "q", "pos": ["p"], "neg": []}', "field 'neg' must be a non-empty list"),
        ('{"query": "q", "neg": ["n"]}', "field 'pos' must be a non-empty list"),
        (
            '{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1, 2]}',
            "field 'pos_scores' must be a list as long",
        ),
    ],
)
def test_retrieval_rows(tmp_path, row, message):
    path = write(tmp_path, '{"query": "q", "pos": ["p"], "neg": ["n"]}\n' + row + "\n", "r.jsonl")
    with pytest.raises(DataError, match=f"r.jsonl:2: {message}"):
        check_rows(path, retrieval_row)
