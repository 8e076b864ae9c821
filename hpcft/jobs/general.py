"""General retrieval sets beside the in-domain one, and the forgetting guard.

A fine-tuned embedder may gain on its own domain and lose on everything else. Each general
set (`eval.general_sets`: folders in FlagEmbedding's evaluation layout, e.g. a BEIR or
C-MTEB task saved locally, since compute nodes are offline) is scored like the in-domain set,
through the same models (served, or loaded by the eval: `eval.encode`), base and fine-tuned,
with the gain's paired bootstrap interval. `eval.max_general_drop` marks the run as regressed
when a general set's headline metric falls by more than that many points.

`metrics.json` keeps them under `general` (name -> the same shape as the in-domain results)
and, where the guard tripped, `regressed` (the names); `status`, `report` and the closing
table read them through `hpcft.results`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hpcft.jobs.retrieval import Sides, evaluate_retrieval
from hpcft.jobs.spec import EvalJob

HEADLINE = {"embedding": "ndcg@10", "retrieval": "ndcg@10", "rerank": "ndcg@10"}
"""The metric the forgetting guard watches, per eval task: nDCG@10, BEIR's and MTEB's headline."""


def set_name(path: str) -> str:
    """A general set's name in the results: its folder's name (`eval.general_sets` must not
    repeat one)."""
    return Path(path).name


def evaluate_general(models: Sides, job: EvalJob) -> dict[str, dict[str, Any]]:
    """Each general set's results (fine_tuned, base, gain, ci95, queries), by name."""

    results = {}
    for path in job.general_sets:
        print(f"eval: general set {set_name(path)} ({path})", flush=True)
        results[set_name(path)] = evaluate_retrieval(models, dataclasses.replace(job, evalset=path))
    return results


def regressed(general: dict[str, dict[str, Any]], task: str, max_drop: float | None) -> list[str]:
    """The general sets whose headline metric dropped by more than `max_drop` points from the
    base model to the fine-tuned one; none without a limit."""
    if max_drop is None:
        return []
    metric = HEADLINE[task]
    return [name for name, result in general.items() if result["gain"][metric] < -max_drop]


def with_general(results: dict[str, Any], models: Sides, job: EvalJob) -> dict[str, Any]:
    """The in-domain results with the general sets' and the guard's verdict added."""
    if not job.general_sets:
        return results
    general = evaluate_general(models, job)
    return {**results, "general": general, "regressed": regressed(general, job.task, job.max_general_drop)}
