"""`eval.encode=local`: the retrieval eval encodes with FlagEmbedding in its own job, on its
own device, instead of through a served endpoint. Checked on the login node, planned without
a deploy job, and scored to the endpoint path's metrics on the same model."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcft.cli import main
from hpcft.config.schema import StageName
from hpcft.configure import check, load_config
from hpcft.errors import UserError
from hpcft.plan import Dependency, build_pipeline
from hpcft.rundir import RunLayout

EMBED = ["model=minilm", "cluster=slurmlab"]
GPU_EMBED = [
    "model=bge_large_zh_v1_5",
    "cluster=8gpu",
    "cluster.cpu_partition=cpu",
    "framework.per_device_train_batch_size=2",
]
needs_flagembedding = pytest.mark.skipif(
    importlib.util.find_spec("FlagEmbedding") is None, reason="training extra not installed"
)


def plan(*overrides: str):  # type: ignore[no-untyped-def]
    return build_pipeline(check(load_config(list(overrides))), RunLayout(Path("/runs/r")))


def test_local_encode_plans_no_deploy_and_gives_the_eval_the_servers_gpus():
    served, local = plan(*GPU_EMBED), plan(*GPU_EMBED, "eval.encode=local")
    assert [s.name for s in local.stages] == [StageName.train, StageName.eval]
    evaluation = local.stage("eval")
    assert evaluation.after == (Dependency(kind="afterok", stage=StageName.train),)
    server = served.stage("deploy").resources
    assert (evaluation.resources.gpus_per_node, evaluation.resources.cpus_per_task, evaluation.resources.mem) == (
        server.gpus_per_node,
        server.cpus_per_task,
        server.mem,
    )
    assert evaluation.resources.partition == "gpu"  # not the CPU partition: it computes
    job = evaluation.job
    assert job.local is not None and job.local.pooling == "cls"  # type: ignore[union-attr]
    assert job.local.weights == "/runs/r/train" and job.local.model_name == "bge_large_zh_v1_5-ft"  # type: ignore[union-attr]
    assert served.stage("eval").job.local is None  # type: ignore[union-attr]


def test_a_kept_server_is_still_planned_but_the_eval_does_not_wait_for_it():
    pipeline = plan(*EMBED, "eval.encode=local", "deploy.keep_serving=true")
    assert [s.name for s in pipeline.stages] == [StageName.train, StageName.deploy, StageName.eval]
    assert pipeline.stage("eval").after == (Dependency(kind="afterok", stage=StageName.train),)
    assert pipeline.notes[-1].endswith("the deploy job serves beside it (deploy.keep_serving)")
    assert plan(*EMBED, "eval.encode=local").notes[-1].endswith("(eval.encode=local); no deploy job")


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ([*EMBED, "eval.encode=remote"], "eval.encode: unknown value 'remote'"),
        (["model=tiny_llama", "cluster=slurmlab", "eval.encode=local"], "eval.encode: local encodes embedders"),
        ([*EMBED, "eval.encode=local", "cluster.eval.python=[/usr/bin/python3]"],
         "eval.encode: local encodes with FlagEmbedding in the eval job, and its interpreter (/usr/bin/python3)"),
    ],
)  # fmt: skip
def test_what_local_encoding_cannot_do_is_refused_before_submit(overrides, refusal):
    if "/usr/bin/python3" in str(overrides) and not Path("/usr/bin/python3").is_file():
        pytest.skip("no system python to ask")
    with pytest.raises(UserError) as refused:
        check(load_config(overrides))
    assert str(refused.value).startswith(refusal), refused.value


def test_an_unknown_value_exits_2_with_one_line_naming_the_valid_ones(capsys, run_root):
    assert main([*EMBED, "eval.encode=vllm", f"run_root={run_root}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eval.encode" in err and "valid: endpoint, local" in err, err


@contextlib.contextmanager
def served_minilm(folder: Path, tuned: str | None = None) -> Iterator[dict[str, str]]:
    """`tuned` (else the base MiniLM) and the base MiniLM on hpcft's own server (the endpoint
    path without GPUs), published as the deploy job publishes them, with a key in `folder`."""
    from http.server import ThreadingHTTPServer

    from hpcft.serve import Models, make_handler

    path = load_config(EMBED).model.path
    models = Models("embedding", {"minilm-ft": tuned or path, "base": path}, "mean", normalize=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(models, "k"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (key := folder / "api_key").write_text("k")
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield {"base_url": url, "model": "minilm-ft", "base_model": "base", "api_key_file": str(key)}
    finally:
        server.shutdown()


@needs_flagembedding
def test_local_encoding_scores_what_the_endpoint_path_scores_on_the_same_model(tmp_path):
    from hpcft.jobs.local_encode import local_models
    from hpcft.jobs.retrieval import evaluate_retrieval, served_models
    from hpcft.jobs.spec import EvalJob

    cfg = load_config([*EMBED, "eval.encode=local"])
    job = build_pipeline(check(cfg), RunLayout(tmp_path)).stage("eval").job
    assert isinstance(job, EvalJob) and job.local is not None
    base_as_tuned = dataclasses.replace(job.local, weights=cfg.model.path)  # no training here: both are the base
    here = evaluate_retrieval(local_models(base_as_tuned, job.task), job)
    with served_minilm(tmp_path) as endpoint:
        there = evaluate_retrieval(served_models(endpoint, job), job)
    for side in ("fine_tuned", "base"):
        assert here[side] == pytest.approx(there[side], abs=1e-9), (side, here[side], there[side])
    assert here["fine_tuned"]["ndcg@10"] > 0


class StubReranker:
    """Scores a pair by how many words its passage shares with its query; records the cut."""

    def __init__(self) -> None:
        self.cuts: list[int] = []

    def compute_score(self, pairs: list[list[str]], batch_size: int, max_length: int) -> list[float]:
        self.cuts.append(max_length)
        return [float(len(set(q.split()) & set(p.split()))) for q, p in pairs]


def test_a_local_reranker_orders_each_querys_candidates_by_its_scores(tmp_path):
    from hpcft.data import read_retrieval_eval
    from hpcft.jobs.local_encode import LocalModel
    from hpcft.jobs.spec import EvalJob

    evalset = tmp_path / "eval.jsonl"
    evalset.write_text(
        '{"query": "red cat", "pos": ["a red cat"], "neg": ["a dog", "blue sky"]}\n'
        '{"query": "blue sky", "pos": ["the blue sky"], "neg": ["a red cat"]}\n'
    )
    model = LocalModel("unused", "rerank", "cls")
    model._model = stub = StubReranker()
    stub.tokenizer = type("T", (), {"model_max_length": 512})()  # type: ignore[attr-defined]
    job = EvalJob(run_dir=str(tmp_path), evalset=str(evalset), task="rerank", truncation=(64, 256))
    scores = model(read_retrieval_eval(str(evalset)), job)
    assert scores["recall@1"] == [100.0, 100.0] and stub.cuts == [320, 320]
