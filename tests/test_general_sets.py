"""General retrieval sets beside the in-domain one, and the forgetting guard
(`eval.general_sets`, `eval.max_general_drop`): checked before submit, handed to the eval
job, scored by the same code as the in-domain set, and read back by status, report and the
closing table with the gain's interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcft.cli.status import metric_summary
from hpcft.configure import check, load_config
from hpcft.errors import UserError
from hpcft.jobs.general import regressed
from hpcft.plan import build_pipeline
from hpcft.results import comparison_table
from hpcft.rundir import RunLayout

DEMO_GENERAL = Path(__file__).parents[1] / "hpcft" / "assets" / "demo" / "flagembedding_general"
EMBED = ["model=minilm", "framework=flagembedding", "cluster=slurmlab"]


def result(gain: float, ci: tuple[float, float]) -> dict:
    return {
        "fine_tuned": {"ndcg@10": 50.0 + gain, "recall@1": 40.0},
        "base": {"ndcg@10": 50.0, "recall@1": 40.0},
        "gain": {"ndcg@10": gain, "recall@1": 0.0},
        "ci95": {"ndcg@10": list(ci)},
        "queries": 10,
    }


def test_the_eval_job_gets_each_general_set_and_the_guard(tmp_path):
    cfg = load_config([*EMBED, f"eval.general_sets=[{DEMO_GENERAL}]", "eval.max_general_drop=2"])
    job = build_pipeline(check(cfg), RunLayout(tmp_path / "r")).stage("eval").job
    assert job.general_sets == (str(DEMO_GENERAL),) and job.max_general_drop == 2.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ([*EMBED, "eval.general_sets=[/no/such/folder]"], "/no/such/folder: a general set is a folder"),
        ([*EMBED, f"eval.general_sets=[{DEMO_GENERAL},{DEMO_GENERAL}]"], "eval.general_sets: two sets share"),
        ([*EMBED, "eval.max_general_drop=-1"], "eval.max_general_drop: must be >= 0"),
        (["model=minilm", "model.kind=rerank", "cluster=slurmlab", f"eval.general_sets=[{DEMO_GENERAL}]"],
         "eval.general_sets: general sets score embedders"),
        (["model=tiny_llama", "cluster=slurmlab", f"eval.general_sets=[{DEMO_GENERAL}]"],
         "eval.general_sets: general retrieval sets score embedders; an LLM's are eval.suites"),
    ],
)  # fmt: skip
def test_a_general_set_that_cannot_be_scored_is_refused_before_submit(overrides, refusal):
    with pytest.raises(UserError) as refused:
        check(load_config(overrides))
    assert str(refused.value).startswith(refusal), refused.value


def test_a_malformed_general_folder_is_refused_naming_its_file_and_line(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("corpus.jsonl", "test_queries.jsonl"):
        (folder / name).write_text((DEMO_GENERAL / name).read_text())
    (folder / "test_qrels.jsonl").write_text('{"qid": "q1", "docid": "nope", "relevance": 1}\n')
    with pytest.raises(UserError, match=r"test_qrels\.jsonl:1: qid 'q1' or docid 'nope'"):
        check(load_config([*EMBED, f"eval.general_sets=[{folder}]"]))


def test_the_guard_marks_a_drop_past_the_limit_and_nothing_without_one():
    general = {"arguana": result(-2.5, (-4.0, -1.0)), "scifact": result(-0.5, (-1.5, 0.5))}
    assert regressed(general, "embedding", 1.0) == ["arguana"]
    assert regressed(general, "embedding", 3.0) == []
    assert regressed(general, "embedding", None) == []


def test_status_and_the_closing_table_show_the_general_change_beside_the_in_domain_gain(tmp_path):
    metrics = {**result(30.0, (20.0, 40.0)), "general": {"arguana": result(-2.5, (-4.0, -1.0))}}
    metrics["regressed"] = ["arguana"]
    table = comparison_table(metrics)
    rows = {line.split("  ")[0]: line.split() for line in table.splitlines()[1:-1]}
    assert rows["ndcg@10"][1:] == ["50.00", "80.00", "+30.00", "[+20.00,", "+40.00]"], table
    assert rows["arguana: ndcg@10"][2:] == ["50.00", "47.50", "-2.50", "[-4.00,", "-1.00]"], table
    assert table.endswith("REGRESSED on arguana: nDCG@10 fell more than eval.max_general_drop points")
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    assert metric_summary(run).endswith("general: arguana ndcg@10 -2.50 [-4.00, -1.00]; REGRESSED")
