"""Retrieval metrics and the FlagEmbedding launch (pure; real runs in tests/integration)."""

from __future__ import annotations

import math

import pytest

from hpcft.cli import main
from hpcft.data import read_retrieval_eval
from hpcft.errors import DataError, UserError
from hpcft.jobs.retrieval import cosine_ranking, mrr_at, ndcg_at, recall_at
from hpcft.retriever import load_embedder, load_reranker, split_passages


def test_metrics_on_a_known_ranking():
    ranking, relevant = [3, 1, 0, 2], {1, 2}
    assert recall_at(ranking, relevant, 1) == 0.0
    assert recall_at(ranking, relevant, 2) == 0.5
    assert recall_at(ranking, relevant, 4) == 1.0
    assert mrr_at(ranking, relevant, 10) == 0.5
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    assert ndcg_at(ranking, relevant, 10) == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert ndcg_at([1, 2, 0], relevant, 10) == pytest.approx(1.0)


def test_eval_rows_make_a_deduplicated_knowledge_base(tmp_path):
    rows = tmp_path / "eval.jsonl"
    rows.write_text('{"query": "a", "pos": ["p1"], "neg": ["p2"]}\n{"query": "b", "pos": ["p2", "p3"]}\n')
    data = read_retrieval_eval(rows)
    assert data.passages == ["p1", "p2", "p3"] and data.relevant == [{0}, {1, 2}]
    assert data.candidates == [[0, 1], [1, 2]]


def test_flagembedding_eval_layout(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(
        '{"id": "d1", "title": "Cats", "text": "purr"}\n{"id": "d2", "text": "bark"}\n{"id": "d3", "text": "moo"}\n'
    )
    (tmp_path / "test_queries.jsonl").write_text('{"id": "q1", "text": "which purrs?"}\n{"id": "q2", "text": "?"}\n')
    (tmp_path / "test_qrels.jsonl").write_text('{"qid": "q1", "docid": "d1", "relevance": 1}\n')
    data = read_retrieval_eval(tmp_path)
    assert data.passages == ["Cats purr", "bark", "moo"]
    assert data.queries == ["which purrs?"] and data.relevant == [{0}]  # q2 has no relevant doc
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
