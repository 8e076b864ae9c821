"""`python -m hpcft compare RUN_A [RUN_B]`: B against A, metric by metric, with 95 % intervals.

Per metric: A, B, B−A and its 95 % paired bootstrap interval (eval rows paired by index,
resampled together; seeded), and McNemar's exact p for hit-or-miss metrics (exact match). Two
runs or sweep points compare their fine-tuned models; one run compares its base model (A) with
its fine-tuned one (B). Runs not evaluated on the same rows are refused. Each `--fail-if`
gate is a metric, <, <=, > or >= and a threshold on B−A: exit status 1 when one trips, 0
otherwise, so a CI pipeline can gate a model. Reads `eval/row_scores.json`; needs no numpy
(faster with it).

Examples:
  python -m hpcft compare runs/r1                      # r1's base model vs its fine-tuned one
  python -m hpcft compare runs/old runs/new            # old's fine-tuned model vs new's
  python -m hpcft compare runs/old runs/new --fail-if 'eval.rouge-l<-1' --fail-if 'eval.exact_match<-2'
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcft.cli.common import is_sweep, subcommand_parser
from hpcft.errors import UserError
from hpcft.paired import RESAMPLES, SEED, Delta, deltas, has_numpy
from hpcft.results import interval_text, table
from hpcft.rowscores import BASE, FINE_TUNED, ModelScores, RowScores, different_rows, read_row_scores
from hpcft.sweep.results import sweep_runs

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
GATE = re.compile(r"^\s*(?P<metric>[^<>=\s]+)\s*(?P<op><=|>=|<|>)\s*(?P<threshold>\S+)\s*$")
WHO = {FINE_TUNED: "fine-tuned", BASE: "base"}


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    op: str
    threshold: float

    def trips(self, delta: float) -> bool:
        return OPERATORS[self.op](delta, self.threshold)


def parse_gate(text: str) -> Gate:
    """`eval.rouge-l<-1`: the metric (with or without `eval.`), the comparison, the threshold."""
    match = GATE.match(text)
    try:
        threshold = float(match["threshold"]) if match else float("nan")
    except ValueError:
        threshold = float("nan")
    if match is None or threshold != threshold:
        raise UserError(f"--fail-if {text!r}: not METRIC<OP>THRESHOLD (e.g. 'eval.rouge-l<-1'; OP: <, <=, >, >=)")
    metric = match["metric"].removeprefix("eval.")
    return Gate(text.strip(), metric, match["op"], threshold)


def side(run: Path, model: str) -> tuple[str, RowScores, ModelScores]:
    """A run's model (`fine_tuned` or `base`) as one side of the comparison, with its label."""
    if is_sweep(run):
        points = sweep_runs(run)
        example = f" ({points[0]} ...)" if points else ""
        raise UserError(f"{run}: a sweep; give one of its points{example}")
    scores = read_row_scores(run)
    if model not in scores.models:
        hint = "; compare it with another run" if model == BASE else ""
        raise UserError(f"{run}: its {WHO.get(model, model)} model was not scored ({scores.path}){hint}")
    return f"{run} ({WHO.get(model, model)})", scores, scores.models[model]


def check_gates(gates: list[Gate], metrics: list[str]) -> None:
    """Every gate names a metric both sides have; a one-line error listing them otherwise."""
    valid = [f"eval.{m}" for m in metrics]
    for gate in gates:
        if gate.metric not in metrics:
            close = difflib.get_close_matches(f"eval.{gate.metric}", valid, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(
                f"--fail-if {gate.text!r}: unknown metric 'eval.{gate.metric}'; {hint}valid: {', '.join(valid)}"
            )


def signed(value: float) -> str:
    return f"{value:+.2f}"


def p_value(p: float | None) -> str:
    if p is None:
        return ""
    return "<1e-300" if p < 1e-300 else f"{p:.2g}"


def result_table(found: list[Delta]) -> str:
    rows = [
        [f"eval.{d.metric}", f"{d.a:.2f}", f"{d.b:.2f}", signed(d.delta), interval_text(d.low, d.high)] for d in found
    ]
    for row, d in zip(rows, found, strict=True):
        row.append(p_value(d.mcnemar_p))
    return table(rows, ["metric", "A", "B", "B-A", "95% CI of B-A", "McNemar p"])


def gate_lines(gates: list[Gate], found: list[Delta]) -> tuple[list[str], int]:
    """One line per gate, and how many tripped."""
    by_metric = {d.metric: d for d in found}
    lines, tripped = [], 0
    for gate in gates:
        delta = by_metric[gate.metric].delta
        trips = gate.trips(delta)
        tripped += trips
        lines.append(f"gate {gate.text}: {'TRIPPED' if trips else 'passed'} (B-A = {signed(delta)})")
    return lines, tripped


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("compare", __doc__)
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="one run (its base vs its fine-tuned model) or two (A B)"
    )
    parser.add_argument("--fail-if", action="append", default=[], metavar="GATE", help="e.g. 'eval.rouge-l<-1'")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the bootstrap's seed (default {SEED})")
    args = parser.parse_args(list(argv))
    if len(args.runs) > 2:
        raise UserError(f"compare takes one run or two, not {len(args.runs)}")
    if args.resamples < 1:
        raise UserError(f"--resamples {args.resamples}: must be 1 or more")
    gates = [parse_gate(text) for text in args.fail_if]
    runs = [Path(r) for r in args.runs]
    a, b = (side(runs[0], BASE), side(runs[0], FINE_TUNED)) if len(runs) == 1 else (side(r, FINE_TUNED) for r in runs)
    if why := different_rows(a, b):
        raise UserError(why)
    metrics = [m for m in a[2].scores if m in b[2].scores]
    if not metrics or not a[2].rows:
        raise UserError(f"{a[0]} and {b[0]} have no metric scored on any row in common")
    check_gates(gates, metrics)
    found = deltas(a[2].scores, b[2].scores, args.resamples, args.seed)
    lines, tripped = gate_lines(gates, found)
    how = "numpy" if has_numpy() else "standard library"
    print(f"A: {a[0]}, {a[2].model}\nB: {b[0]}, {b[2].model}\n")
    print(result_table(found))
    print(f"\npaired bootstrap: {len(a[2].rows)} rows, {args.resamples} resamples, seed {args.seed} ({how})")
    print("\n".join(lines))
    return 1 if tripped else 0
