"""The eval job against a stand-in batching engine on 127.0.0.1: requests in flight at
once, transient failures retried, answers kept as they arrive, and a rerun after the server
died sends no answered row again (the real engines are exercised in tests/integration)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks.standin_engine import Engine, Faults, Server
from hpcft.client import HTTPStatusError
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


def long_prompts(tmp_path: Path, rows: int, long_rows: set[int]) -> Path:
    """An eval set whose rows in `long_rows` have prompts past a 100-character context."""
    evalset = tmp_path / "eval.jsonl"
    evalset.write_text(
        "".join(
            json.dumps({"instruction": f"q{i}" + "x" * (200 if i in long_rows else 0), "output": f"answer to q{i}"})
            + "\n"
            for i in range(rows)
        )
    )
    return evalset


def test_rows_the_server_refuses_are_counted_left_out_and_asked_again_by_a_rerun(tmp_path):
    long_rows = {7, 400, 401, 999}
    with Server(Engine(latency_s=0.001, context_chars=100)) as server:
        job, layout = eval_run(tmp_path, 1000, server)
        job = dataclasses.replace(job, evalset=str(long_prompts(tmp_path, 1000, long_rows)))
        run_eval(job)  # 4 of 1000 refused: within the default 1%
    metrics = json.loads(layout.metrics.read_text())
    assert (metrics["rows"], metrics["refused"], metrics["exact_match"]) == (996, 4, 100.0)
    refused = {p["index"] for p in predictions(layout) if "refused" in p}
    assert refused == long_rows and all("context length" in p["refused"] for p in predictions(layout) if "refused" in p)
    # a server with a longer context (a larger deploy.max_model_len): the rerun sends only those rows
    with Server(Engine(latency_s=0.001)) as longer:
        write_json_atomic(layout.endpoint, longer.endpoint)
        run_eval(job)
    assert longer.engine.arrivals == 4
    metrics = json.loads(layout.metrics.read_text())
    assert metrics["rows"] == 1000 and "refused" not in metrics


def test_more_refusals_than_the_limit_fail_the_eval_naming_the_reason_and_keep_the_answers(tmp_path):
    with Server(Engine(latency_s=0.001, context_chars=100)) as server:
        job, layout = eval_run(tmp_path, 100, server)
        job = dataclasses.replace(job, evalset=str(long_prompts(tmp_path, 100, {3, 50})))
        with pytest.raises(RuntimeError, match=r"refused 2 of 100 eval rows.*0\.01.*HTTP 400.*context length"):
            run_eval(job)
    assert len([p for p in predictions(layout) if "predict" in p]) == 98 and not layout.metrics.exists()


def test_a_wrong_key_fails_the_eval_at_once_whatever_the_refusal_limit(tmp_path):
    """401 concerns every row, not one: no row is recorded as refused."""

    class Unauthorized(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the open health route every served model has (hpcft.keyguard)
            self.send_response(200 if self.path == "/health" else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Server(Engine()) as standin:
            job, layout = eval_run(tmp_path, 50, standin, max_refused_fraction=1.0)
        endpoint = {"base_url": f"http://127.0.0.1:{server.server_address[1]}/v1", "model": "m"}
        write_json_atomic(layout.endpoint, endpoint)
        with pytest.raises(HTTPStatusError, match="HTTP 401"):
            run_eval(job)
        assert predictions(layout) == []
    finally:
        server.shutdown()


def test_the_server_is_released_once_every_answer_is_in_before_scoring(tmp_path, monkeypatch):
    """Scoring needs no server: the deploy job's stop marker is written before any row is
    scored, and an eval requeued during its scoring scores the answers on disk, no server up."""
    import hpcft.jobs.evaluate as evaluate_module

    with Server(Engine(latency_s=0.001)) as server:
        job, layout = eval_run(tmp_path, 300, server)
        real = evaluate_module.row_scores_of
        seen: list[bool] = []
        monkeypatch.setattr(
            evaluate_module, "row_scores_of", lambda models: seen.append(layout.stop_serving.exists()) or real(models)
        )
        run_eval(job)
    assert seen == [True], seen  # one scoring (no base model served), after the release
    assert json.loads((layout.eval / "answered.json").read_text())["model"] == server.endpoint["model"]
    first = json.loads(layout.metrics.read_text())
    # requeued while scoring, the server gone (the deploy job marks its endpoint stopped)
    write_json_atomic(layout.endpoint, {**server.endpoint, "stopped": True})
    layout.metrics.unlink()
    run_eval(dataclasses.replace(job, endpoint_timeout_s=1))
    assert json.loads(layout.metrics.read_text()) == first
