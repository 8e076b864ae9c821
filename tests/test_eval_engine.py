"""The eval job against a stand-in batching engine on 127.0.0.1: requests in flight at
once, transient failures retried, answers kept as they arrive, and a rerun after the server
died sends no answered row again (the real engines are exercised in tests/integration)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.standin_engine import Engine, Faults, Server
from hpcft.frameworks.llamafactory import alpaca_eval_job
from hpcft.jobs.evaluate import run_eval
from hpcft.jobs.spec import EvalJob
from hpcft.rundir import RunLayout, write_json_atomic


def eval_run(tmp_path: Path, rows: int, server: Server, **job: object) -> tuple[EvalJob, RunLayout]:
    evalset = tmp_path / "eval.jsonl"
    evalset.write_text(
        "".join(json.dumps({"instruction": f"q{i}", "output": f"answer to q{i}"}) + "\n" for i in range(rows))
    )
    layout = RunLayout(tmp_path / "run")
    write_json_atomic(layout.endpoint, server.endpoint)
    settings = {"concurrency": 16, "retries": 3, "retry_backoff_s": 0.01, "endpoint_timeout_s": 5, **job}
    return alpaca_eval_job(str(layout.root), str(evalset), **settings), layout


def predictions(layout: RunLayout) -> list[dict]:
    return [json.loads(line) for line in layout.predictions.read_text().splitlines()]


def test_rows_go_out_concurrently_and_come_back_in_order(tmp_path):
    with Server(Engine(latency_s=0.05, capacity=64)) as server:
        job, layout = eval_run(tmp_path, 200, server, concurrency=32)
        run_eval(job)
    assert 8 <= server.engine.max_in_flight <= 32
    assert [p["index"] for p in predictions(layout)] == list(range(200))
    metrics = json.loads(layout.metrics.read_text())
    assert metrics["rows"] == 200 and metrics["exact_match"] == 100.0
    assert metrics["generation"] == {"temperature": 0.0, "max_tokens": 128, "chat_template": None}
    assert json.loads((layout.eval / "progress.json").read_text())["done"] == 200


@pytest.mark.parametrize("drop", [False, True], ids=["http-500", "dropped-connection"])
def test_transient_failures_are_retried(tmp_path, drop):
    with Server(Engine(latency_s=0.01, faults=Faults(fail_from=50, fail_until=60, drop=drop))) as server:
        job, layout = eval_run(tmp_path, 120, server, concurrency=4, retries=5)
        run_eval(job)
    assert len(predictions(layout)) == 120
    assert set(server.engine.answered.values()) == {1}  # every row answered exactly once


def test_a_server_that_dies_at_row_150_then_comes_back_loses_nothing(tmp_path):
    answered: Counter[str] = Counter()
    with Server(Engine(latency_s=0.005, faults=Faults(fail_from=150), answered=answered)) as server:
        job, layout = eval_run(tmp_path, 300, server, concurrency=1, retries=2)
        with pytest.raises(Exception, match="500"):
            run_eval(job)
    kept = predictions(layout)
    assert len(kept) == 150 and not layout.metrics.exists()
    # The deploy job serves again (a new port): the rerun sends only the 150 rows left.
    with Server(Engine(latency_s=0.005, answered=answered)) as again:
        write_json_atomic(layout.endpoint, again.endpoint)
        run_eval(job)
    assert again.engine.arrivals == 150
    assert len(predictions(layout)) == 300 and set(answered.values()) == {1}  # no row sent twice
    assert json.loads(layout.metrics.read_text())["rows"] == 300


def test_a_line_cut_off_by_a_kill_is_dropped_and_its_row_asked_again(tmp_path):
    with Server(Engine(latency_s=0.001)) as server:
        job, layout = eval_run(tmp_path, 10, server)
        layout.predictions.parent.mkdir(parents=True)
        good = json.dumps({"index": 0, "prompt": "q0", "label": "answer to q0", "predict": "answer to q0"})
        layout.predictions.write_text(good + "\n" + '{"index": 1, "prom')
        run_eval(job)
        assert server.engine.arrivals == 9
    assert [p["index"] for p in predictions(layout)] == list(range(10))
