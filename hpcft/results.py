"""A run's results as people read them: the headline metrics, and base vs fine-tuned.

`eval/metrics.json` has two shapes: generation metrics at the top level (with `base` and
`gain` beside them when the base model was scored too), and retrieval metrics under
`fine_tuned`, `base` and `gain`. Everything that shows metrics (`status`, `report`, the
quick start's closing table) reads them through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpcft.rundir import RunLayout

NOT_METRICS = frozenset({"rows", "queries", "refused"})
"""Counts beside the metrics: rows scored, queries ranked, rows the server refused."""


def read_metrics(run: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when there is none (or it cannot be read)."""
    try:
        metrics: dict[str, Any] = json.loads(RunLayout(run).metrics.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def train_results(run: Path) -> dict[str, Any]:
    """The Trainer's `train/all_results.json` (train_loss, train_runtime, ...); empty before
    training ends."""
    try:
        data = json.loads((run / "train" / "all_results.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and k not in NOT_METRICS}


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The fine-tuned model's metrics, whichever shape the file has."""
    if "fine_tuned" in metrics:
        return _numbers(metrics["fine_tuned"])
    return {k: v for k, v in _numbers(metrics).items() if not isinstance(metrics[k], bool)}


def base_of(metrics: dict[str, Any]) -> dict[str, float]:
    """The base model's metrics on the same eval set; empty when it was not scored."""
    return _numbers(metrics.get("base"))


def interval_text(low: float, high: float) -> str:
    """A 95 % interval of a difference, as `[-1.20, +3.40]`."""
    return f"[{low:+.2f}, {high:+.2f}]"


def intervals(metrics: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """The gain's 95 % paired bootstrap interval per metric (`ci95`); empty when not computed
    (no base model, an eval from before hpcft kept per-row scores)."""
    found = metrics.get("ci95")
    if not isinstance(found, dict):
        return {}
    return {
        k: (float(v[0]), float(v[1]))
        for k, v in found.items()
        if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int | float) for x in v)
    }


def comparison_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """`[metric, base, fine-tuned, gain]` per metric (base and gain blank when not scored),
    and the gain's 95 % interval after them where metrics.json has it (`ci95`)."""
    tuned, base, ci = headline(metrics), base_of(metrics), intervals(metrics)
    rows = []
    for name, value in tuned.items():
        if name in base:
            rows.append([name, f"{base[name]:.2f}", f"{value:.2f}", f"{value - base[name]:+.2f}"])
        else:
            rows.append([name, "", f"{value:.2f}", ""])
        if ci:
            rows[-1].append(interval_text(*ci[name]) if name in ci else "")
    return rows


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns two spaces apart, header first."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def general_sets(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The general sets' results by name (`eval.general_sets`, hpcft.jobs.general); empty without."""
    found = metrics.get("general")
    return {k: v for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}


def regressed(metrics: dict[str, Any]) -> list[str]:
    """The general sets the forgetting guard (`eval.max_general_drop`) found regressed."""
    found = metrics.get("regressed")
    return [str(name) for name in found] if isinstance(found, list) else []


def comparison_table(metrics: dict[str, Any]) -> str:
    """Base vs fine-tuned per metric: the eval set's, then each general set's (its name before
    the metric), so the in-domain gain and what it cost elsewhere are read side by side."""
    general = general_sets(metrics)
    with_ci = bool(intervals(metrics)) or any(intervals(g) for g in general.values())
    header = ["metric", "base", "fine-tuned", "gain"] + (["95% CI of gain"] if with_ci else [])
    rows = [row + [""] * (len(header) - len(row)) for row in comparison_rows(metrics)]
    for name, result in general.items():
        rows += [[f"{name}: {r[0]}", *r[1:]] + [""] * (len(header) - len(r)) for r in comparison_rows(result)]
    lines = table(rows, header)
    if found := regressed(metrics):
        lines += f"\nREGRESSED on {', '.join(found)}: nDCG@10 fell more than eval.max_general_drop points"
    return lines


def general_summary(metrics: dict[str, Any]) -> str:
    """`general: arguana ndcg@10 -1.20 [-2.31, -0.12]; REGRESSED`, for `status`; empty without sets."""
    parts = []
    for name, result in general_sets(metrics).items():
        gain, ci = gains(result), intervals(result)
        if "ndcg@10" in gain:
            low_high = f" {interval_text(*ci['ndcg@10'])}" if "ndcg@10" in ci else ""
            parts.append(f"{name} ndcg@10 {gain['ndcg@10']:+.2f}{low_high}")
    if not parts:
        return ""
    return "general: " + ", ".join(parts) + ("; REGRESSED" if regressed(metrics) else "")


def gains(metrics: dict[str, Any]) -> dict[str, float]:
    """Fine-tuned minus base, per metric scored for both."""
    tuned, base = headline(metrics), base_of(metrics)
    return {k: tuned[k] - base[k] for k in tuned if k in base}
