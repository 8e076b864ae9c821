"""A sweep's points and their results as a table (`report`, a local sweep's closing table)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hpcft.errors import UserError
from hpcft.manifest import read_manifest
from hpcft.results import headline, read_metrics, train_results
from hpcft.sweep.record import read_sweep_record


def sweep_runs(sweep_dir: Path) -> list[Path]:
    """The run directories of a sweep's points, in sweep order; none for a sweep whose
    submission was cut off before `sweep.json` was written (its jobs are found by name)."""
    record = read_sweep_record(sweep_dir)
    return [p.run_dir for p in record.points] if record else []


GENERATION_METRICS = ("bleu-4", "rouge-l", "exact_match")
"""The columns of a sweep whose points have no metrics yet (an LLM sweep still running)."""
TRAIN_METRICS = ("train_loss",)
"""The columns of a sweep without an eval stage: the Trainer's own results."""


def point_metrics(run: Path, stages: list[str]) -> dict[str, float]:
    """What a point measured: its eval metrics, or the Trainer's results when it has no eval."""
    evaluated = headline(read_metrics(run) or {})
    if evaluated or "eval" in stages:
        return evaluated
    return headline({k: v for k, v in train_results(run).items() if k in TRAIN_METRICS})


def point_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for run in sweep_runs(sweep_dir):
        try:
            manifest = read_manifest(run)
        except UserError as e:  # one bad point does not hide the others
            print(f"report: skipping a point: {e}", file=sys.stderr)
            continue
        params = dict(o.split("=", 1) for o in manifest.overrides if "=" in o)
        metrics = point_metrics(run, list(manifest.stages))
        rows.append({"run": run.name, **params, "metrics": metrics, "evaluated": "eval" in manifest.stages})
    return rows


def varying(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = [k for k in rows[0] if k not in ("run", "metrics", "evaluated")]
    return [k for k in keys if len({str(r.get(k)) for r in rows}) > 1]


def markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def sweep_table(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The points' rows (varying hyper-parameters, then each metric), those hyper-parameters,
    and the metric names."""
    rows = point_rows(sweep_dir)
    params = varying(rows)  # before the metric columns join the rows
    pending = GENERATION_METRICS if any(r["evaluated"] for r in rows) else TRAIN_METRICS
    metric_names = list(dict.fromkeys(m for r in rows for m in r["metrics"])) or list(pending)
    for r in rows:
        r.update({m: r["metrics"].get(m) for m in metric_names})
    return rows, params, metric_names
