"""`python -m hpcft report SWEEP_DIR`: a sweep's results side by side.

Writes `report.csv` and `report.md` (one row per point: the hyper-parameters that vary
across the sweep, then the eval metrics) and one PNG per metric and varying
hyper-parameter into the sweep folder, and prints the Markdown table.

Examples:
  python -m hpcft report runs/tiny_llama-llamafactory-sweep-20261128-101500-abc123
  python -m hpcft report runs/my-sweep --out /tmp/report
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcft.cli.common import subcommand_parser, sweep_runs
from hpcft.errors import UserError
from hpcft.rundir import read_manifest, write_atomic

METRICS = ("bleu-4", "rouge-l", "exact_match")


def point_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for run in sweep_runs(sweep_dir):
        try:
            manifest = read_manifest(run)
        except UserError as e:  # one bad point does not hide the others
            print(f"report: skipping a point: {e}", file=sys.stderr)
            continue
        params = dict(o.split("=", 1) for o in manifest.get("overrides", []) if "=" in o)
        metrics_path = run / "eval" / "metrics.json"
        try:
            metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        except ValueError:
            metrics = {}
        rows.append({"run": run.name, **params, **{m: metrics.get(m) for m in METRICS}})
    return rows


def varying(rows: list[dict[str, Any]]) -> list[str]:
    keys = [k for k in rows[0] if k not in ("run", *METRICS)]
    return [k for k in keys if len({str(r.get(k)) for r in rows}) > 1]


def as_number(value: Any) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def plot(rows: list[dict[str, Any]], param: str, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r[metric] is not None]
    if not done:  # no point has this metric (e.g. a sweep without the eval stage)
        return
    xs = [as_number(r[param]) for r in done]
    numbers = [x for x in xs if isinstance(x, float)]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(xs, [r[metric] for r in done])
    if len(numbers) == len(xs) and min(numbers) > 0 and max(numbers) / min(numbers) >= 100:
        ax.set_xscale("log")  # learning rates and the like
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {param} ({len(done)} points)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("report", __doc__)
    parser.add_argument("sweep", help="a sweep directory (it holds sweep.json)")
    parser.add_argument("--out", help="where to write the report (default: the sweep directory)")
    args = parser.parse_args(list(argv))
    sweep_dir = Path(args.sweep)
    if not (sweep_dir / "sweep.json").is_file():
        raise UserError(f"{args.sweep}: not a sweep directory (no sweep.json)")
    out = Path(args.out) if args.out else sweep_dir
    rows = point_rows(sweep_dir)
    params = varying(rows)
    columns = ["run", *params, *METRICS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "report.csv", buffer.getvalue())
    table = markdown(rows, columns)
    write_atomic(out / "report.md", table)
    for param in params:
        for metric in METRICS:
            plot(rows, param, metric, out / f"report_{metric}_vs_{param.replace('/', '_')}.png")
    print(table, end="")
    done = sum(r[METRICS[0]] is not None for r in rows)
    print(f"\n{done} of {len(rows)} points have metrics; wrote {out}/report.csv, report.md and plots")
    return 0
