"""Per-row scores of an eval: what `compare` pairs row by row and resamples.

The eval job writes `<run>/eval/row_scores.json` beside `metrics.json`, from the same numbers:
each metric in `metrics.json` is the mean of its per-row scores here (per query for
retrieval). One object:

    {"evalset": "<path>", "digest": "sha256:<hex of the eval set's rows>", "total": <rows>,
     "models": {"fine_tuned": {"model": "<name>", "rows": [<eval row index>, ...],
                               "scores": {"rouge-l": [<score of each of those rows>, ...], ...}},
                "base": {...}}}

`rows` are positions in the eval set; rows a server refused are left out, as in the metrics.
Two models were scored on the same rows when the digests and the row lists are equal. Standard
library only: `compare` runs on the login node.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcft.errors import UserError
from hpcft.rundir import RunLayout, write_atomic

FILE_NAME = "row_scores.json"
FINE_TUNED, BASE = "fine_tuned", "base"


@dataclass(frozen=True)
class ModelScores:
    """One model's per-row scores: `scores[metric][i]` is row `rows[i]`'s."""

    model: str
    rows: list[int]
    scores: dict[str, list[float]]


@dataclass(frozen=True)
class RowScores:
    """A run's `row_scores.json`."""

    path: Path
    evalset: str
    digest: str
    total: int
    models: dict[str, ModelScores]


def row_scores_path(run: Path) -> Path:
    return RunLayout(run).eval / FILE_NAME


def digest(items: Iterable[Any]) -> str:
    """A fingerprint of the eval set's rows, in order (keys sorted, so a row's key order does
    not count)."""
    sha = hashlib.sha256()
    for item in items:
        sha.update(json.dumps(item, sort_keys=True, ensure_ascii=False).encode())
        sha.update(b"\n")
    return f"sha256:{sha.hexdigest()}"


def write_row_scores(path: Path, evalset: str, fingerprint: str, total: int, models: dict[str, ModelScores]) -> None:
    record = {
        "evalset": evalset,
        "digest": fingerprint,
        "total": total,
        "models": {name: {"model": m.model, "rows": m.rows, "scores": m.scores} for name, m in models.items()},
    }
    write_atomic(path, json.dumps(record, ensure_ascii=False) + "\n")


def _model(data: Any) -> ModelScores:
    rows = [int(i) for i in data["rows"]]
    scores = {str(k): [float(v) for v in values] for k, values in data["scores"].items()}
    if any(len(values) != len(rows) for values in scores.values()):
        raise ValueError("a metric has not one score per row")
    return ModelScores(str(data["model"]), rows, scores)


def read_row_scores(run: Path) -> RowScores:
    """A run's per-row scores; a one-line error saying why there are none."""
    path = row_scores_path(run)
    if not path.is_file():
        raise UserError(f"{run}: {missing_why(run)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        models = {str(name): _model(m) for name, m in data["models"].items()}
        return RowScores(path, str(data["evalset"]), str(data["digest"]), int(data["total"]), models)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: unreadable per-row scores ({type(e).__name__}: {e})") from None


def missing_why(run: Path) -> str:
    if not run.is_dir():
        return "no such run directory"
    if RunLayout(run).metrics.is_file():
        return (
            f"no per-row scores (eval/{FILE_NAME}): its eval ran before hpcft kept them;"
            " rerun its eval stage to compare it"
        )
    return f"no eval results yet (eval/{FILE_NAME}); has its eval stage finished?"


def _shown(rows: list[int]) -> str:
    return ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")


def different_rows(a: tuple[str, RowScores, ModelScores], b: tuple[str, RowScores, ModelScores]) -> str | None:
    """Why two models' scores cannot be paired row by row (named `a[0]`, `b[0]`); None when
    they were scored on the same rows of the same eval set."""
    (name_a, run_a, model_a), (name_b, run_b, model_b) = a, b
    if run_a.digest != run_b.digest or run_a.total != run_b.total:
        return (
            f"{name_a} and {name_b} were not evaluated on the same rows: their eval sets differ"
            f" ({run_a.evalset}, {run_a.total} rows; {run_b.evalset}, {run_b.total} rows)"
        )
    if model_a.rows != model_b.rows:
        only_a = sorted(set(model_a.rows) - set(model_b.rows))
        only_b = sorted(set(model_b.rows) - set(model_a.rows))
        said = [f"only {n} scored rows {_shown(r)}" for n, r in ((name_a, only_a), (name_b, only_b)) if r]
        why = "; ".join(said) or "their rows are in another order"
        return (
            f"{name_a} and {name_b} were not evaluated on the same rows of {run_a.evalset} ({why}:"
            " rows a server refused); rerun the eval that left rows out"
        )
    return None
