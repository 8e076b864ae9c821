"""Data-file checks name the file and the line of the first bad row."""

from __future__ import annotations

import pytest

from hpcft.data import alpaca_row, check_rows, sharegpt_row
from hpcft.errors import DataError
from hpcft.frameworks.flagembedding import retrieval_row


def write(tmp_path, text: str | bytes, name: str = "d.json"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def refused(path, check=alpaca_row) -> str:
    with pytest.raises(DataError) as e:
        check_rows(path, check)
    return str(e.value)


def test_good_json_array_and_jsonl_are_counted(tmp_path):
    rows = '[{"instruction": "a", "output": "b"},\n {"instruction": "c", "input": "d", "output": "e"}]'
    assert check_rows(write(tmp_path, rows), alpaca_row) == 2
    lines = '{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": "e"}\n'
    assert check_rows(write(tmp_path, lines, "d.jsonl"), alpaca_row) == 2


def test_missing_output_names_file_and_line(tmp_path):
    path = write(tmp_path, '[\n{"instruction": "a", "output": "b"},\n{"instruction": "c"}\n]')
    assert refused(path) == f"{path}:3: missing field 'output'"


def test_eval_row_without_answer_is_refused(tmp_path):
    path = write(tmp_path, '{"instruction": "a", "output": ""}\n', "e.jsonl")
    assert refused(path) == f"{path}:1: field 'output' must be a non-empty string"


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "the file is empty"),
        ("   \n", "the file is empty"),
        ("[]", "no rows"),
        ('[{"instruction": "a", "output": "b"},\n{"instruction": ', "invalid JSON"),
        ('[{"instruction": "a", "output": "b"}', "truncated JSON"),
        ('["just a string"]', "each row must be a JSON object"),
        (b'[{"instruction": "caf\xe9", "output": "b"}]', "not UTF-8"),
    ],
)
def test_malformed_files_are_refused(tmp_path, content, message):
    assert message in refused(write(tmp_path, content))


def test_truncated_json_names_the_line(tmp_path):
    path = write(tmp_path, '[{"instruction": "a", "output": "b"},\n{"instruction": \n')
    assert refused(path).startswith(f"{path}:2: invalid JSON")


def test_missing_file_and_folder(tmp_path):
    assert refused(tmp_path / "nope.json").endswith("no such file")
    assert refused(tmp_path).endswith("not a file")


def test_sharegpt_rows(tmp_path):
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    assert check_rows(write(tmp_path, good, "s.jsonl"), sharegpt_row) == 1
    bad = good + '{"messages": [{"role": "robot", "content": "x"}]}\n'
    assert "s.jsonl:2: messages[0] has unknown role 'robot'" in refused(write(tmp_path, bad, "s.jsonl"), sharegpt_row)


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
    assert f"r.jsonl:2: {message}" in refused(path, retrieval_row)
