"""LLaMA-Factory's data model on the login node: every layout of its data/README.md is
accepted with the meaning LLaMA-Factory gives it (tests/integration/test_data_agreement.py
runs LLaMA-Factory's own loader on the same files), and each file is checked once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcft import data as data_module
from hpcft.errors import DataError
from hpcft.frameworks.llamafactory_datasets import training_data
from hpcft.jsonrows import iter_rows
from hpcft.once import per_command

LAYOUTS = Path(__file__).parent / "data_layouts"

# (file, stage, dataset_format, rows)
ACCEPTED = [
    ("alpaca_system_history.json", "sft", "alpaca", 12),
    ("sharegpt_tools.json", "sft", "sharegpt", 10),
    ("sharegpt_messages.jsonl", "sft", "sharegpt", 8),
    ("dpo_alpaca.json", "dpo", "alpaca", 8),
    ("dpo_sharegpt.json", "dpo", "sharegpt", 8),
    ("kto_messages.json", "kto", "sharegpt", 8),
    ("pt_text.jsonl", "pt", "alpaca", 9),
    ("openai_tools.json", "sft", "openai", 6),
]


@pytest.mark.parametrize("name,stage,fmt,rows", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_every_layout_is_accepted_and_counted(name, stage, fmt, rows):
    data = training_data(str(LAYOUTS / name), [], fmt, stage, offline=True)
    assert data.rows == rows and data.dataset == "hpcft_train" and data.media_dir is None


def test_sharegpt_defaults_are_llamafactorys_and_columns_come_from_the_rows():
    entry = training_data(str(LAYOUTS / "sharegpt_tools.json"), [], "sharegpt", "sft", True).registry["hpcft_train"]
    assert entry["columns"] == {"tools": "tools", "messages": "conversations"} and "tags" not in entry
    entry = training_data(str(LAYOUTS / "sharegpt_messages.jsonl"), [], "sharegpt", "sft", True).registry
    assert entry["hpcft_train"]["tags"]["role_tag"] == "role"
    entry = training_data(str(LAYOUTS / "alpaca_system_history.json"), [], "alpaca", "sft", True).registry
    assert entry["hpcft_train"]["columns"] == {
        "system": "system",
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "history": "history",
    }


def test_a_registry_with_two_datasets_one_a_folder():
    data = training_data(str(LAYOUTS / "registry"), ["qa", "chat"], "alpaca", "sft", offline=True)
    assert data.rows == 6 + 4 + 3 and data.dataset == "qa,chat"
    assert data.registry["chat"]["file_name"] == str((LAYOUTS / "registry" / "chat_parts").absolute())
    assert data.registry["qa"]["columns"]["query"] is None  # kept as the user wrote it
    same = training_data(str(LAYOUTS / "registry" / "dataset_info.json"), ["qa", "chat"], "alpaca", "sft", True)
    assert same == data


def test_hub_entries_pass_through_when_nodes_are_online():
    data = training_data(str(LAYOUTS / "registry"), ["hub_only"], "alpaca", "sft", offline=False)
    assert data.registry == {"hub_only": {"hf_hub_url": "someone/some-dataset"}} and data.rows == 0


def test_a_hub_entry_is_held_to_the_stage_as_a_local_one():
    with pytest.raises(DataError, match="'hub_ranked' does not fit stage sft: it needs no ranking"):
        training_data(str(LAYOUTS / "registry"), ["hub_ranked"], "alpaca", "sft", offline=False)
    assert training_data(str(LAYOUTS / "registry"), ["hub_ranked"], "alpaca", "dpo", offline=False).rows == 0


def test_a_txt_file_pre_trains_a_row_a_non_empty_line_as_llamafactorys_text_loader_reads_it(tmp_path):
    data = training_data(str(LAYOUTS / "registry"), ["wiki"], "alpaca", "pt", offline=True)
    assert data.rows == 8 and data.registry["wiki"]["columns"] == {"prompt": "text"}
    with pytest.raises(DataError, match=r"wiki_demo\.txt:1: missing field 'output'"):  # sft: a .txt has no answers
        training_data(str(LAYOUTS / "registry"), ["wiki"], "alpaca", "sft", offline=True)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe not utf-8\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: not UTF-8"):
        list(iter_rows(bad))
    with pytest.raises(DataError, match="LLaMA-Factory picks its loader by the extension"):
        training_data(str(bad), [], "alpaca", "pt", offline=True)  # a trainset file: JSON rows only


def test_each_distinct_file_is_read_once(tmp_path, monkeypatch):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}] * 50))
    import hpcft.frameworks.llamafactory_datasets as datasets_module

    reads = []
    real = data_module.iter_rows
    monkeypatch.setattr(datasets_module, "iter_rows", lambda p: reads.append(p) or real(p))
    monkeypatch.setattr(data_module, "iter_rows", lambda p: reads.append(p) or real(p))
    with per_command():  # one command: what a 16-point sweep does
        for _ in range(16):
            assert training_data(str(path), [], "alpaca", "sft", True).rows == 50
        assert len(reads) == 2  # its first row (the layout), then every row: once for all 16
        path.write_text(json.dumps([{"instruction": "a", "output": "b"}] * 51))  # changed: read again
        assert training_data(str(path), [], "alpaca", "sft", True).rows == 51 and len(reads) == 4
    assert training_data(str(path), [], "alpaca", "sft", True).rows == 51 and len(reads) == 6  # a new command reads


@pytest.mark.parametrize(
    "messages,problem",
    [
        ([("user", "q"), ("tool", "r"), ("assistant", "a")], "turn 2 is 'tool' where LLaMA-Factory expects"),
        ([("assistant", "a")], "turn 1 is 'assistant'"),
        ([("user", "q"), ("assistant", "a"), ("user", "q2")], "3 turns after the system turn"),
        ([("system", "s"), ("user", "q"), ("assistant", 7)], "turn 2 has no text content"),
    ],
)
def test_openai_rows_llamafactory_would_skip_are_refused(tmp_path, messages, problem):
    from hpcft.errors import DataError

    rows = [{"messages": [{"role": r, "content": c} for r, c in messages]}]
    path = tmp_path / "o.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=f"o.json:1: messages: {problem}"):
        training_data(str(path), [], "openai", "sft", offline=True)
