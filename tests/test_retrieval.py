"""Retrieval metrics and the FlagEmbedding launch (pure; real runs in tests/integration)."""

from __future__ import annotations

import math

import pytest

from hpcft.cli import main
from hpcft.jobs.retrieval import cosine_ranking, knowledge_base, mrr_at, ndcg_at, recall_at


def test_metrics_on_a_known_ranking():
    ranking, relevant = [3, 1, 0, 2], {1, 2}
    assert recall_at(ranking, relevant, 1) == 0.0
    assert recall_at(ranking, relevant, 2) == 0.5
    assert recall_at(ranking, relevant, 4) == 1.0
    assert mrr_at(ranking, relevant, 10) == 0.5
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    assert ndcg_at(ranking, relevant, 10) == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert ndcg_at([1, 2, 0], relevant, 10) == pytest.approx(1.0)


def test_knowledge_base_deduplicates_passages():
    rows = [{"query": "a", "pos": ["p1"], "neg": ["p2"]}, {"query": "b", "pos": ["p2", "p3"]}]
    passages, relevant = knowledge_base(rows)
    assert passages == ["p1", "p2", "p3"] and relevant == [{0}, {1, 2}]


def test_cosine_ranking():
    assert cosine_ranking([1.0, 0.0], [[0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]]) == [1, 0, 2]


def test_embedder_dry_run_launches_torchrun_with_flagembedding_arguments(run_root, capsys):
    assert main(["model=bge_large_zh_v1_5", "cluster=8gpu", "dry_run=true", f"run_root={run_root}"]) == 0
    out = capsys.readouterr().out
    launch = next(line for line in out.splitlines() if line.startswith("train: each of"))
    assert "torchrun --nnodes=1" in launch and "--nproc_per_node=8" in launch
    assert "-m FlagEmbedding.finetune.embedder.encoder_only.base" in launch
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
