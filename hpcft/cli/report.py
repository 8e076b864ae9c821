"""`python -m hpcft report RUN_OR_SWEEP_DIR`: a run's or a sweep's results.

A run: `report.md` with the metrics of the fine-tuned model beside its base (and the gain),
with `eval.checkpoints` each scored step's metrics and `checkpoints.png` (the metric vs the
step, the best ringed), and its loss curve (`train/training_loss.png`, drawn from the Trainer's log if the framework
drew none). A sweep: `report.csv` and `report.md` (one row per point: the hyper-parameters
that vary across the sweep, then the eval metrics), one PNG per metric and varying
hyper-parameter, and `report_loss.png` with every point's loss curve overlaid. An Optuna
study adds its best trial, `optimization_history.png` and `param_importances.png`. The
Markdown table is printed.

Examples:
  python -m hpcft report runs/tiny_llama-llamafactory-20261128-101500-abc123
  python -m hpcft report runs/tiny_llama-llamafactory-sweep-20261128-101500-abc123
  python -m hpcft report runs/my-sweep --out /tmp/report
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcft.checkpoints import best_of, checkpoint_points
from hpcft.cli.common import is_sweep, pointless_sweep, subcommand_parser
from hpcft.errors import UserError
from hpcft.manifest import read_manifest
from hpcft.plots import draw_checkpoints, draw_loss, ensure_loss_plot, loss_curve
from hpcft.results import comparison_table, headline, read_metrics, table
from hpcft.rundir import RunLayout, write_atomic
from hpcft.study import controller_cause, controller_of
from hpcft.sweep.controller import draw_study, write_trials
from hpcft.sweep.results import markdown, sweep_runs, sweep_table


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


def run_report(run: Path, out: Path) -> int:
    """One run: base vs fine-tuned, and where its pictures and files are."""
    read_manifest(run)  # a one-line error for what is not a run
    metrics = read_metrics(run)
    layout = RunLayout(run)
    plot = ensure_loss_plot(layout.train_output, f"training loss: {run.name}")
    lines = [f"# {run.name}", ""]
    if metrics:
        lines += ["```", comparison_table(metrics), "```", ""]
    else:
        lines += ["No eval metrics yet.", ""]
    lines += checkpoint_lines(run, metrics or {}, out)
    if plot:
        lines.append(f"![training loss]({plot})")
    text = "\n".join(lines) + "\n"
    write_atomic(out / "report.md", text)
    print(text, end="")
    print(f"\nwrote {out}/report.md" + (f" and {plot}" if plot else " (no training log to plot yet)"))
    return 0


def checkpoint_lines(run: Path, metrics: dict[str, Any], out: Path) -> list[str]:
    """With `eval.checkpoints`: each scored step's metrics (the best marked), and the picture
    of the objective's metric against the step (`checkpoints.png`); nothing otherwise."""
    points, best = checkpoint_points(metrics), best_of(metrics)
    if not points:
        return []
    names = [k for k in headline(points[-1].get("metrics", {})) if k not in ("rows", "refused")]

    def label(p: dict[str, Any]) -> str:
        is_best = best is not None and p["step"] == best["step"]
        return f"{p['step']}" + (" final" if p.get("final") else "") + (" best" if is_best else "")

    rows = [[label(p)] + [f"{float(p['metrics'][k]):.2f}" if k in p["metrics"] else "" for k in names] for p in points]
    lines = ["```", table(rows, ["step", *names]), "```", ""]
    metric = str(best["metric"]) if best else "rouge-l"
    curve = [(int(p["step"]), float(p["metrics"][metric])) for p in points if metric in p.get("metrics", {})]
    picture = out / "checkpoints.png"
    title = f"{metric} by step, {len(curve)} checkpoints"
    if draw_checkpoints(curve, metric, best["step"] if best else None, picture, title):
        lines += [f"![{metric} by step]({picture})", ""]
    return lines


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("report", __doc__)
    parser.add_argument("target", help="a run directory, or a sweep directory (it holds sweep.json)")
    parser.add_argument("--out", help="where to write the report (default: the run or sweep directory)")
    args = parser.parse_args(list(argv))
    target = Path(args.target)
    out = Path(args.out) if args.out else target
    if (target / "manifest.json").is_file():
        return run_report(target, out)
    if is_sweep(target) and (said := pointless_sweep(target)):
        raise UserError(said)
    if not (target / "sweep.json").is_file():
        raise UserError(f"{args.target}: neither a run directory (manifest.json) nor a sweep directory (sweep.json)")
    return sweep_report(target, out)


def sweep_report(sweep_dir: Path, out: Path) -> int:
    rows, params, metric_names = sweep_table(sweep_dir)
    columns = ["run", *params, *metric_names]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "report.csv", buffer.getvalue())
    table = markdown(rows, columns)
    write_atomic(out / "report.md", table)
    for param in params:
        for metric in metric_names:
            plot(rows, param, metric, out / f"report_{metric}_vs_{param.replace('/', '_')}.png")
    curves = [(run.name, loss_curve(run / "train")) for run in sweep_runs(sweep_dir)]
    draw_loss(curves, out / "report_loss.png", f"training loss, {len(curves)} points")
    study = study_lines(sweep_dir, out)
    if study:
        table += "\n" + "\n".join(study) + "\n"
        write_atomic(out / "report.md", table)
    print(table, end="")
    done = sum(bool(r["metrics"]) for r in rows)
    print(f"\n{done} of {len(rows)} points have metrics; wrote {out}/report.csv, report.md and plots")
    return 0


def study_lines(sweep_dir: Path, out: Path) -> list[str]:
    """An Optuna study's part of a sweep report: the best trial, and the optimisation history
    and parameter importances (drawn from the stored study where Optuna is installed here)."""
    record = controller_of(sweep_dir)
    if record is None:
        return []
    try:
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        study = optuna.load_study(study_name=record.study_name, storage=record.storage)
    except (ImportError, KeyError) as e:  # no Optuna here, or no study yet
        return [f"Study {record.study_name}: not readable here ({type(e).__name__}: {e})"]
    trials = write_trials(study, record, "completed" if len(study.trials) >= record.n_trials else "running")
    goal = f"{record.objective.direction} {record.objective}"
    lines = [f"## Study {record.study_name}: {len(trials['trials'])} of {record.n_trials} trials, {goal}", ""]
    if best := trials["best"]:
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        lines.append(
            f"Best: trial {best['number']}, {record.objective}={best['value']:.4g} ({params}), {best['run_dir']}"
        )
    if cause := controller_cause(record):
        lines.append(f"Controller stopped: {cause}")
    lines += [f"![{p.stem}]({p})" for p in draw_study(study, out)]
    return lines
