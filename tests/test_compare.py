"""`python -m hpcft compare` on run folders the eval job itself wrote (hpcft.jobs.evaluate
against stand-in models served on 127.0.0.1): per-row scores whose means are the reported
metrics, deltas with their paired bootstrap intervals, `--fail-if` gates that exit 1 on a
regressed pair and 0 otherwise, one-line refusals (exit 2) when the rows differ, and the
interval beside the gain in metrics.json and `report`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest

from hpcft.cli import main
from hpcft.frameworks.llamafactory import alpaca_eval_job
from hpcft.jobs.evaluate import run_eval
from hpcft.paired import deltas
from hpcft.rowscores import ModelScores, digest, read_row_scores, row_scores_path, write_row_scores
from hpcft.rundir import RunLayout, write_json_atomic

WORDS = [
    "river",
    "stone",
    "light",
    "paper",
    "garden",
    "winter",
    "signal",
    "harbor",
    "engine",
    "window",
    "silver",
    "forest",
]

Answer = Callable[[int, str], str]
"""What a stand-in model answers to eval row i, whose reference is the second argument."""


def reference(i: int) -> str:
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(6 + i % 5)]
    return f"item {i} is the " + " ".join(words)


def bucket(i: int) -> int:
    return zlib.crc32(f"row {i}".encode()) % 100


def good(i: int, ref: str) -> str:  # right 70 % of the time, else half the answer
    return ref if bucket(i) < 70 else " ".join(ref.split()[: len(ref.split()) // 2])


def regressed(i: int, ref: str) -> str:  # right 45 % of the time, else the first 3 words
    return ref if bucket(i) < 45 else " ".join(ref.split()[:3])


def base_model(i: int, ref: str) -> str:  # right 10 % of the time, else a generic answer
    return ref if bucket(i) < 10 else "I am not sure what you mean."


MODELS: dict[str, Answer] = {"good": good, "regressed": regressed, "base": base_model}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, set[tuple[str, int]]]]:
    """One server answering `/v1/chat/completions` as the model named in the request would;
    a (model, row) in the returned set is refused with a 400, as a prompt past the context."""
    refused: set[tuple[str, int]] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # the health route every served model has (hpcft.keyguard)
            self.send(200, {})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            i = int(body["messages"][-1]["content"].split()[-1])
            if (body["model"], i) in refused:
                self.send(400, {"error": {"message": "This model's maximum context length is exceeded"}})
            else:
                text = MODELS[body["model"]](i, reference(i))
                self.send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

        def send(self, code: int, data: dict[str, Any]) -> None:
            payload = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", refused
    server.shutdown()
    server.server_close()


def evalset(folder: Path, rows: int = 200, name: str = "eval.jsonl") -> Path:
    path = folder / name
    path.write_text(
        "".join(json.dumps({"instruction": f"question {i}", "output": reference(i)}) + "\n" for i in range(rows))
    )
    return path


def evaluated(folder: Path, url: str, tuned: str, base: str | None, data: Path) -> Path:
    """A run folder as a pipeline leaves it: its record, then the eval job's own output."""
    layout = RunLayout(folder)
    endpoint: dict[str, Any] = {"base_url": url, "model": tuned}
    if base:
        endpoint["baseline"] = {"base_url": url, "model": base}
    write_json_atomic(layout.endpoint, endpoint)
    write_json_atomic(layout.manifest, {"run_name": folder.name, "executor": "local", "stages": {}})
    run_eval(alpaca_eval_job(str(folder), str(data), concurrency=8, endpoint_timeout_s=5, retry_backoff_s=0.01))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, served) -> dict[str, Path]:
    """Three runs on the same 200 rows: two of the good model (each beside its base), one
    regressed; and one of the good model on another eval set."""
    url, _ = served
    root = tmp_path_factory.mktemp("runs")
    data = evalset(root)
    found = {
        name: evaluated(root / name, url, model, "base", data)
        for name, model in [("old", "good"), ("new", "regressed")]
    }
    found["again"] = evaluated(root / "again", url, "good", None, data)
    found["elsewhere"] = evaluated(root / "elsewhere", url, "good", None, evalset(root, 150, "other.jsonl"))
    return found


def compare(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["compare", *args])
    out, err = capsys.readouterr()
    return code, out, err


def metric_line(out: str, metric: str) -> list[str]:
    return next(line.split() for line in out.splitlines() if line.startswith(f"eval.{metric} "))


def test_each_metric_is_the_mean_of_the_row_scores_the_eval_keeps(runs):
    for run in (runs["old"], runs["new"]):
        metrics = json.loads(RunLayout(run).metrics.read_text())
        scores = read_row_scores(run)
        tuned, base = scores.models["fine_tuned"], scores.models["base"]
        assert tuned.rows == base.rows == list(range(200)) and scores.total == 200
        assert set(tuned.scores) == {"rouge-1", "rouge-2", "rouge-l", "bleu-4", "exact_match"}
        for metric, values in tuned.scores.items():
            assert fmean(values) == metrics[metric], metric  # equal, not approximately
            assert fmean(base.scores[metric]) == metrics["base"][metric], metric
    assert json.loads(RunLayout(runs["old"]).metrics.read_text())["exact_match"] == exact_matches()["good"]


def exact_matches() -> dict[str, float]:
    """Each stand-in model's exact match on the 200 rows, as they answer."""
    return {
        name: 100 * fmean(answer(i, reference(i)) == reference(i) for i in range(200))
        for name, answer in MODELS.items()
    }


def test_a_regressed_pair_trips_the_gate_and_the_other_way_round_passes(runs, capsys):
    old, new = str(runs["old"]), str(runs["new"])
    code, out, err = compare(capsys, old, new, "--fail-if", "eval.rouge-l<-1")
    assert (code, err) == (1, "")
    delta, low, high = metric_line(out, "rouge-l")[3:6]
    assert float(delta) < -1 and float(low.strip("[,")) <= float(delta) <= float(high.strip("]"))
    assert "gate eval.rouge-l<-1: TRIPPED" in out
    code, out, _ = compare(capsys, new, old, "--fail-if", "eval.rouge-l<-1", "--fail-if", "exact_match < 0")
    assert code == 0 and out.count(": passed") == 2
    code, out, _ = compare(capsys, old, str(runs["again"]), "--fail-if", "eval.rouge-l<-1")
    assert code == 0 and metric_line(out, "rouge-l")[3:6] == ["+0.00", "[+0.00,", "+0.00]"]


def test_the_table_shows_a_b_the_delta_its_interval_and_mcnemar_for_exact_match(runs, capsys):
    code, out, _ = compare(capsys, str(runs["old"]), str(runs["new"]))
    assert code == 0  # no gate: nothing to trip
    assert "metric" in out and "95% CI of B-A" in out and "McNemar p" in out
    old, new = read_row_scores(runs["old"]), read_row_scores(runs["new"])
    found = {d.metric: d for d in deltas(old.models["fine_tuned"].scores, new.models["fine_tuned"].scores)}
    em, right = metric_line(out, "exact_match"), exact_matches()
    assert em[1:4] == [
        f"{right['good']:.2f}",
        f"{right['regressed']:.2f}",
        f"{right['regressed'] - right['good']:+.2f}",
    ]
    assert float(em[6]) == pytest.approx(found["exact_match"].mcnemar_p, rel=0.01)
    assert len(metric_line(out, "rouge-l")) == 6  # no McNemar for a graded score
    assert "paired bootstrap: 200 rows, 2000 resamples, seed 0" in out


def test_one_run_compares_its_base_with_its_fine_tuned_model_as_metrics_json_does(runs, capsys):
    code, out, _ = compare(capsys, str(runs["old"]), "--fail-if", "eval.exact_match<0")
    assert code == 0 and f"A: {runs['old']} (base), base" in out and f"B: {runs['old']} (fine-tuned), good" in out
    metrics = json.loads(RunLayout(runs["old"]).metrics.read_text())
    low, high = metrics["ci95"]["rouge-l"]
    assert metric_line(out, "rouge-l")[4:6] == [f"[{low:+.2f},", f"{high:+.2f}]"]
    assert low <= metrics["gain"]["rouge-l"] <= high
    assert set(metrics["ci95"]) == {"rouge-1", "rouge-2", "rouge-l", "bleu-4", "exact_match"}
    assert set(metrics["mcnemar_p"]) == {"exact_match"} and metrics["mcnemar_p"]["exact_match"] < 1e-6
    assert metrics["bootstrap"] == {"resamples": 2000, "seed": 0, "rows": 200}


def test_report_shows_the_interval_beside_the_gain(runs, capsys, tmp_path):
    assert main(["report", str(runs["old"]), "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    metrics = json.loads(RunLayout(runs["old"]).metrics.read_text())
    low, high = metrics["ci95"]["bleu-4"]
    line = next(line for line in report.splitlines() if line.startswith("bleu-4 "))
    assert "95% CI of gain" in report and line.endswith(f"{metrics['gain']['bleu-4']:+.2f}  [{low:+.2f}, {high:+.2f}]")


def test_retrieval_metrics_are_the_means_of_the_query_scores_the_eval_keeps(tmp_path, capsys):
    """An embedder's eval through the stand-in engine (texts of a topic point the same way):
    each query's one relevant passage is among three of its topic, so the scores vary."""
    from benchmarks.standin_engine import Engine, Server
    from hpcft.jobs.spec import EvalJob

    rows = [
        {"query": f"t{j % 20}: question {j}", "pos": [f"t{j % 20}: passage {j % 3}"], "neg": [f"t{j % 20}: other"]}
        for j in range(120)
    ]
    data = tmp_path / "retrieval.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    layout = RunLayout(tmp_path / "run")
    with Server(Engine(dims=64)) as server:
        write_json_atomic(layout.endpoint, {**server.endpoint, "base_model": "standin"})
        run_eval(EvalJob(run_dir=str(layout.root), evalset=str(data), task="embedding", endpoint_timeout_s=5))
    metrics, scores = json.loads(layout.metrics.read_text()), read_row_scores(layout.root)
    assert scores.total == 120 and scores.models["base"].rows == list(range(120))
    for metric, values in scores.models["fine_tuned"].scores.items():
        assert fmean(values) == metrics["fine_tuned"][metric], metric
        assert fmean(scores.models["base"].scores[metric]) == metrics["base"][metric], metric
    assert 0 < metrics["fine_tuned"]["recall@1"] < 100 and len(set(scores.models["base"].scores["ndcg@10"])) > 2
    assert metrics["ci95"]["ndcg@10"] == [0.0, 0.0]  # the stand-in serves the same model as its base
    capsys.readouterr()
    code, out, _ = compare(capsys, str(layout.root), "--fail-if", "eval.ndcg@10<0")
    assert code == 0 and metric_line(out, "recall@1")[3] == "+0.00" and "gate eval.ndcg@10<0: passed" in out


def refusal(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = compare(capsys, *args)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    return err


def test_runs_not_evaluated_on_the_same_rows_are_refused(runs, served, tmp_path, capsys):
    err = refusal(capsys, str(runs["old"]), str(runs["elsewhere"]))
    assert "not evaluated on the same rows: their eval sets differ" in err and "other.jsonl, 150 rows" in err
    url, refused = served
    refused.add(("regressed", 17))  # the server refuses row 17 (under eval.max_refused_fraction)
    try:
        short = evaluated(tmp_path / "short", url, "regressed", None, Path(read_row_scores(runs["old"]).evalset))
    finally:
        refused.clear()
        capsys.readouterr()  # the eval's own lines
    assert json.loads(RunLayout(short).metrics.read_text())["refused"] == 1.0
    err = refusal(capsys, str(runs["old"]), str(short))
    assert f"only {runs['old']} (fine-tuned) scored rows 17" in err and "rerun the eval" in err


def test_gates_and_targets_that_are_wrong_are_one_line_exit_2(runs, tmp_path, capsys):
    old, new = str(runs["old"]), str(runs["new"])
    err = refusal(capsys, old, new, "--fail-if", "eval.rouge_l<-1")
    assert "unknown metric 'eval.rouge_l'; did you mean 'eval.rouge-l'?" in err
    assert "valid: eval.rouge-1, eval.rouge-2, eval.rouge-l, eval.bleu-4, eval.exact_match" in err
    assert "not METRIC<OP>THRESHOLD" in refusal(capsys, old, new, "--fail-if", "eval.rouge-l=-1")
    assert "not METRIC<OP>THRESHOLD" in refusal(capsys, old, new, "--fail-if", "eval.rouge-l<one")
    assert "its base model was not scored" in refusal(capsys, str(runs["again"]))
    assert "--resamples 0: must be 1 or more" in refusal(capsys, old, new, "--resamples", "0")
    assert "no such run directory" in refusal(capsys, old, str(tmp_path / "missing"))
    legacy = tmp_path / "legacy"
    write_json_atomic(RunLayout(legacy).metrics, json.loads(RunLayout(runs["old"]).metrics.read_text()))
    assert "its eval ran before hpcft kept them; rerun its eval stage" in refusal(capsys, old, str(legacy))
    sweep = tmp_path / "sweep"
    write_json_atomic(sweep / "sweep.json", {"points": [{"run_dir": old}]})
    assert "a sweep; give one of its points" in refusal(capsys, str(sweep), new)


def ten_thousand_row_run(folder: Path, seed: int, shift: float) -> Path:
    """A run whose eval scored 10,000 rows, written with the eval's own writer: graded scores
    rounded to 4 decimals as LLaMA-Factory's, and exact match."""
    import numpy as np

    rng = np.random.default_rng(seed)
    skill = np.random.default_rng(0).beta(2, 2, 10_000)  # the rows' difficulty, shared by both runs
    scores = {
        name: np.round(np.clip(100 * skill + shift + rng.normal(0, 15, 10_000), 0, 100), 4).tolist()
        for name in ("rouge-1", "rouge-2", "rouge-l", "bleu-4")
    }
    scores["exact_match"] = (100.0 * (rng.random(10_000) < skill + shift / 100)).tolist()
    fingerprint = digest({"instruction": f"question {i}"} for i in range(10_000))
    models = {"fine_tuned": ModelScores(f"m{seed}", list(range(10_000)), scores)}
    write_row_scores(row_scores_path(folder), "eval.jsonl", fingerprint, 10_000, models)
    return folder


PROBE = """
import json, sys, time
if sys.argv[1] == "no-numpy":
    sys.modules["numpy"] = None  # import numpy fails, as on a login node without it
from hpcft.cli import main
started = time.perf_counter()
code = main(["compare", *sys.argv[2:]])
took = time.perf_counter() - started
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "jieba", "nltk", "pytrec_eval"))
print(json.dumps({"code": code, "took": took, "heavy": heavy, "numpy": sys.modules.get("numpy") is not None}))
"""


@pytest.mark.parametrize("numpy_path", ["numpy", "no-numpy"])
def test_10k_rows_compare_with_or_without_numpy_and_nothing_heavy(tmp_path, numpy_path):
    a, b = ten_thousand_row_run(tmp_path / "a", 1, 0.0), ten_thousand_row_run(tmp_path / "b", 2, -2.0)
    gate = ["--fail-if", "eval.rouge-l<-1"]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, numpy_path, str(a), str(b), *gate], capture_output=True, text=True
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\ncompare of 10,000 rows ({numpy_path}): {measured['took']:.2f} s")
    assert measured["code"] == 1 and "gate eval.rouge-l<-1: TRIPPED" in result.stdout
    assert measured["heavy"] == [] and measured["numpy"] == (numpy_path == "numpy")
    # The time is printed, not bounded: a unit test on a loaded machine is no measure of speed.


def test_the_help_is_the_modules_docstring(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--help"])
    assert exit_.value.code == 0 and "--fail-if" in capsys.readouterr().out
    assert main(["comapre"]) == 2 and "'compare'" in capsys.readouterr().err  # a listed subcommand
