"""Retrieval metrics and the FlagEmbedding launch (pure; real runs in tests/integration)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from hpcft.cli import main
from hpcft.data import read_retrieval_eval
from hpcft.errors import DataError, UserError
from hpcft.jobs.retrieval import EMBEDDING_METRICS, RERANK_METRICS, cosine_ranking, mean_metrics
from hpcft.retriever import load_embedder, load_reranker, split_passages


def test_metrics_on_a_known_ranking():
    """Graded: nDCG's gain is the relevance; a query whose relevances are all 0 scores 0."""
    metrics = mean_metrics([[3, 1, 0, 2]], [{1: 1, 2: 2}], EMBEDDING_METRICS)
    assert metrics["recall@1"] == 0.0 and metrics["recall@5"] == 100.0 and metrics["mrr@10"] == 50.0
    ideal = 2 + 1 / math.log2(3)
    assert metrics["ndcg@10"] == pytest.approx(100 * (1 / math.log2(3) + 2 / math.log2(5)) / ideal)
    both = mean_metrics([[3, 1, 0, 2], [0, 1]], [{1: 1, 2: 2}, {0: 0}], RERANK_METRICS)
    assert both["ndcg@10"] == pytest.approx(metrics["ndcg@10"] / 2) and both["mrr@10"] == 25.0
    assert mean_metrics([list(range(20))], [{12: 1}], RERANK_METRICS)["mrr@10"] == 0.0  # MRR@10: rank 13 is out


def graded_rankings(queries: int, seed: int = 0) -> tuple[list[list[int]], list[dict[int, int]]]:
    """Rankings over 5,000 passages with qrels graded 0-3 (1 query in 10 all 0): each ranking
    holds some of its query's judged passages among others, anywhere in its first 30."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rankings, qrels = [], []
    for q in range(queries):
        judged = rng.choice(5_000, size=int(rng.integers(1, 7)), replace=False)
        grades = np.zeros(len(judged), dtype=int) if q % 10 == 0 else rng.integers(0, 4, len(judged))
        qrels.append({int(p): int(g) for p, g in zip(judged, grades, strict=True)})
        shown = [int(p) for p in judged if rng.random() < 0.7]
        others = [int(p) for p in rng.choice(5_000, size=40, replace=False) if p not in judged]
        ranking = shown + others[: 30 - len(shown)]
        rankings.append([ranking[i] for i in rng.permutation(len(ranking))])
    return rankings, qrels


@pytest.mark.skipif(importlib.util.find_spec("FlagEmbedding") is None, reason="training extra not installed")
def test_metrics_equal_flagembeddings_evaluator_on_graded_qrels():
    """FlagEmbedding's own `evaluate_metrics` and `evaluate_mrr` (what its evaluator's
    `compute_metrics` calls) on the same rankings, as its searcher hands them (docid -> score,
    best first, uncut): 1,200 queries, relevance 0-3, 120 queries whose relevances are all 0."""
    from FlagEmbedding.abc.evaluation.utils import evaluate_metrics, evaluate_mrr

    rankings, qrels = graded_rankings(1_200)
    assert {g for grades in qrels for g in grades.values()} == {0, 1, 2, 3}
    theirs_qrels = {f"q{q}": {f"d{p}": g for p, g in grades.items()} for q, grades in enumerate(qrels)}
    results = {f"q{q}": {f"d{p}": 1.0 - i / 100 for i, p in enumerate(r)} for q, r in enumerate(rankings)}
    ndcg, _, recall, _ = evaluate_metrics(theirs_qrels, results, [1, 5, 10])
    theirs = {
        "recall@1": recall["Recall@1"],
        "recall@5": recall["Recall@5"],
        "recall@10": recall["Recall@10"],
        "mrr@10": evaluate_mrr(theirs_qrels, results, [10])["MRR@10"],
        "ndcg@10": ndcg["NDCG@10"],
    }
    ours = mean_metrics(rankings, qrels, EMBEDDING_METRICS)
    assert {name: round(value / 100, 5) for name, value in ours.items()} == theirs
    assert mean_metrics(rankings, qrels, RERANK_METRICS) == {k: ours[k] for k in RERANK_METRICS}


def test_eval_rows_make_a_deduplicated_knowledge_base(tmp_path):
    rows = tmp_path / "eval.jsonl"
    rows.write_text('{"query": "a", "pos": ["p1"], "neg": ["p2"]}\n{"query": "b", "pos": ["p2", "p3"]}\n')
    data = read_retrieval_eval(rows)
    assert data.passages == ["p1", "p2", "p3"] and data.qrels == [{0: 1}, {1: 1, 2: 1}]
    assert data.candidates == [[0, 1], [1, 2]]


def test_flagembedding_eval_layout(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(
        '{"id": "d1", "title": "Cats", "text": "purr"}\n{"id": "d2", "text": "bark"}\n{"id": "d3", "text": "moo"}\n'
    )
    (tmp_path / "test_queries.jsonl").write_text('{"id": "q1", "text": "which purrs?"}\n{"id": "q2", "text": "?"}\n')
    (tmp_path / "test_qrels.jsonl").write_text('{"qid": "q1", "docid": "d1", "relevance": 2}\n')
    data = read_retrieval_eval(tmp_path)
    assert data.passages == ["Cats purr", "bark", "moo"]
    assert data.queries == ["which purrs?"] and data.qrels == [{0: 2}]  # q2 has no qrels row
    (tmp_path / "test_qrels.jsonl").write_text(
        '{"qid": "q1", "docid": "d1", "relevance": 3}\n{"qid": "q2", "docid": "d2", "relevance": 0}\n'
    )
    assert read_retrieval_eval(tmp_path).qrels == [{0: 3}, {1: 0}]  # q2 stays: it scores 0, as in FlagEmbedding
    (tmp_path / "test_qrels.jsonl").write_text('{"qid": "q1", "docid": "d1", "relevance": 0.5}\n')
    with pytest.raises(DataError, match=r"test_qrels\.jsonl:1: relevance must be an integer grade \(got 0\.5\)"):
        read_retrieval_eval(tmp_path)
    (tmp_path / "test_qrels.jsonl").write_text('{"qid": "q1", "docid": "d1"}\n{"qid": "q1", "docid": "d9"}\n')
    with pytest.raises(DataError, match=r"test_qrels\.jsonl:2: qid 'q1' or docid 'd9'"):
        read_retrieval_eval(tmp_path)


def test_loading_never_falls_back_to_a_base_model(tmp_path):
    with pytest.raises(UserError, match="no such run directory or model folder"):
        load_embedder(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no fine-tuned weights"):
        load_reranker(empty)


def test_split_passages():
    assert split_passages("a b\n\n  c\nd  \n") == ["a b", "c", "d"]
    assert split_passages("a\nb\n\nc", by="paragraph") == ["a b", "c"]


def test_cosine_ranking():
    assert cosine_ranking([1.0, 0.0], [[0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]]) == [1, 0, 2]


def test_embedder_dry_run_launches_torchrun_with_flagembedding_arguments(run_root, tmp_path, capsys):
    rows = tmp_path / "train.jsonl"  # one batch of 8 GPUs x 16 rows (the 16 demo rows would train 0 steps)
    rows.write_text("".join(f'{{"query": "q{i}", "pos": ["p"], "neg": ["n"]}}\n' for i in range(128)))
    args = ["model=bge_large_zh_v1_5", "cluster=8gpu", f"trainset={rows}", "dry_run=true", f"run_root={run_root}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    launch = next(line for line in out.splitlines() if line.startswith("train: each of"))
    assert "torchrun --nnodes=1" in launch and "--nproc_per_node=8" in launch
    assert "-m hpcft.jobs.launch FlagEmbedding.finetune.embedder.encoder_only.base" in launch
    for arg in (
        "--train_group_size 8",
        "--query_max_len 64",
        "--passage_max_len 256",
        "--temperature 0.02",
        "--negatives_cross_device True",
        "--sentence_pooling_method cls",
    ):
        assert arg in launch, arg
    assert "--kind embedding" in out or "deploy" in out


def test_retrieval_eval_rows_are_checked(run_root, tmp_path, capsys):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"query": "q", "pos": ["p"]}\n{"query": "q2", "pos": []}\n')
    assert main(["model=minilm", f"evalset={bad}", f"run_root={run_root}"]) == 2
    assert f"{bad}:2: field 'pos' must be a non-empty list of strings" in capsys.readouterr().err


def test_qrels_without_a_relevant_passage_are_refused_on_the_login_node(run_root, tmp_path, capsys):
    (tmp_path / "corpus.jsonl").write_text('{"id": "d1", "text": "purr"}\n{"id": "d2", "text": "bark"}\n')
    (tmp_path / "test_queries.jsonl").write_text('{"id": "q1", "text": "which purrs?"}\n')
    qrels = tmp_path / "test_qrels.jsonl"
    qrels.write_text('{"qid": "q1", "docid": "d1", "relevance": 0}\n{"qid": "q1", "docid": "d2", "relevance": 0}\n')
    assert main(["model=minilm", f"evalset={tmp_path}", f"run_root={run_root}"]) == 2
    err = capsys.readouterr().err
    assert f"{qrels}: no relevance above 0 in any row" in err and len(err.strip().splitlines()) == 1
