"""A generation eval row becomes the chat request LLaMA-Factory's own converters make of it:
the system message, earlier turns and the last user message, with the reference answer apart.
Alpaca rows (system, history, instruction + input), sharegpt turns (a system turn or column)
and OpenAI-style messages, each checked against `llamafactory.data.converter` on the same row."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.standin_engine import Engine, Server
from hpcft.cli import main
from hpcft.frameworks.llamafactory import alpaca_eval_job
from hpcft.frameworks.llamafactory_datasets import eval_conversation, eval_entry
from hpcft.jobs.conversation import chat_request
from hpcft.jobs.evaluate import run_eval
from hpcft.rundir import RunLayout, write_json_atomic

ALPACA = [
    {"instruction": "Name the colour.", "input": "The sky.", "output": "Blue.", "system": "Be brief.",
     "history": [["Hi.", "Hello."], ["Ready?", "Yes."]]},
    {"instruction": "Name the animal.", "input": "", "output": "Cat.", "system": None, "history": None},
]  # fmt: skip
SHAREGPT = [
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi."},
                       {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Colour of the sky?"},
                       {"from": "gpt", "value": "Blue."}]},
    {"conversations": [{"from": "human", "value": "Animal?"}, {"from": "gpt", "value": "Cat."}], "system": "Be kind."},
]  # fmt: skip
OPENAI = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Colour of the sky?"},
                  {"role": "assistant", "content": "Blue."}]},
    {"messages": [{"role": "user", "content": "Animal?"}, {"role": "assistant", "content": "Cat."}]},
]  # fmt: skip


def written(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(rows))
    return str(path)


def llamafactory_request(path: str, row: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """What LLaMA-Factory's converter makes of `row` under the entry hpcft infers for the file."""
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.data.parser import DatasetAttr
    from llamafactory.hparams import DataArguments

    entry = eval_entry(path)
    attr = DatasetAttr("file", "eval")
    attr.join(json.loads(entry.raw))
    full = {**dict.fromkeys(entry.used_columns().values()), **row}  # a datasets table has every column
    converted = get_dataset_converter(entry.formatting, attr, DataArguments())(full)
    system = [{"role": "system", "content": converted["_system"]}] if converted["_system"] else []
    return system + converted["_prompt"], converted["_response"][0]["content"]


@pytest.mark.skipif(importlib.util.find_spec("llamafactory") is None, reason="training extra not installed")
@pytest.mark.parametrize("rows", [ALPACA, SHAREGPT, OPENAI], ids=["alpaca", "sharegpt", "openai-messages"])
def test_each_row_is_sent_as_llamafactory_converts_it(rows, tmp_path):
    path = written(tmp_path, rows)
    conversation = eval_conversation(path)
    for row in rows:
        assert chat_request(row, conversation) == llamafactory_request(path, row)
    messages, answer = chat_request(rows[0], conversation)
    assert messages[0] == {"role": "system", "content": "Be brief."} and answer == "Blue."


def test_a_10k_row_sharegpt_eval_set_runs_end_to_end_against_an_engine(tmp_path):
    path = written(tmp_path, SHAREGPT * 5_000)
    layout = RunLayout(tmp_path / "run")
    with Server(Engine(latency_s=0.001)) as server:
        write_json_atomic(layout.endpoint, server.endpoint)
        run_eval(alpaca_eval_job(str(layout.root), path, concurrency=64, endpoint_timeout_s=5))
    records = [json.loads(line) for line in layout.predictions.read_text().splitlines()]
    assert len(records) == 10_000 and json.loads(layout.metrics.read_text())["rows"] == 10_000
    assert records[0]["prompt"] == "Colour of the sky?" and records[0]["label"] == "Blue."
    assert records[0]["predict"] == "answer to Colour of the sky?"  # the stand-in answers the last user turn


@pytest.mark.parametrize(
    "row,message",
    [
        ({"conversations": [{"from": "human", "value": "Weather?"}, {"from": "function_call", "value": "{}"},
                            {"from": "observation", "value": "sun"}, {"from": "gpt", "value": "Sunny."}]},
         "eval.json:1: conversations: turn 2 is 'function_call': the eval sends text turns only"),
        ({"instruction": "Weather?", "output": "Sunny.", "tools": "[]"}, "eval.json:1: field 'tools': the eval sends"),
        ({"conversations": [{"from": "human", "value": "Hi."}]}, "eval.json:1: conversations: 1 turns"),
    ],
    ids=["tool-turns", "tool-definitions", "no-answer"],
)  # fmt: skip
def test_eval_rows_the_eval_cannot_send_are_refused_on_the_login_node(row, message, tmp_path, capsys):
    path = written(tmp_path, [row])
    code = main(["model=tiny_llama", f"evalset={path}", "dry_run=true", f"run_root={tmp_path / 'runs'}"])
    assert code == 2 and message in capsys.readouterr().err
