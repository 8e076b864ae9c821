"""The controller job of an adaptive sweep: it runs the user's sweeper (Optuna's) with hpcft's
launcher, which submits each batch of trials as job arrays and waits for their objective.

It runs in a one-CPU job on the cluster, so the login node is free at once. The study lives
in Optuna's RDB storage (SQLite in the sweep folder): a controller stopped by a time limit,
a preemption or `scontrol requeue` starts again, tells the study the results of the trials
it had submitted (their jobs ran on regardless), and asks only for the trials still to go,
numbered after the earlier ones; no trial runs twice. A trial whose pipeline failed is told
to the study as failed, and the study goes on. At the end: `trials.json`, the best trial,
and the optimisation history and parameter importances as PNGs.

    python -m hpcft.sweep.controller SWEEP_DIR    # what the job runs, through submitit
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit

from hpcft.errors import SchedulerUnreachable, UserError
from hpcft.interrupts import interruptions_raised
from hpcft.once import per_command
from hpcft.rundir import write_json_atomic
from hpcft.runstate import RunState, read_states
from hpcft.scheduler import StageState
from hpcft.study import (
    TRIALS_RECORD,
    ControllerRecord,
    Objective,
    metric_value,
    record_study_ended,
    stage_metrics,
    sweep_points,
)
from hpcft.sweep.multirun import run_multirun
from hpcft.sweep.record import read_sweep_record
from hpcft.sweep.task import LauncherSettings, PipelineTask


class TrialFailed(Exception):
    """A trial's pipeline ended without its objective; the sweeper records the trial as failed."""


def objective_value(state: RunState, objective: Objective) -> float | TrialFailed:
    """The objective of a run whose objective stage has ended, or why there is none."""
    info = state.stages.get(objective.stage)
    if state.error or info is None or info.state is not StageState.COMPLETED:
        why = state.error or (f"{objective.stage} {info.describe()}" if info else f"no {objective.stage} stage")
        return TrialFailed(f"{state.run.name}: {why}")
    value = metric_value(state.run, objective)
    if value is None:
        found = ", ".join(sorted(stage_metrics(state.run, objective.stage))) or "no metrics"
        return TrialFailed(f"{state.run.name}: {objective} not among {found}")
    return value


def _ended(state: RunState, stage: str) -> bool:
    info = state.stages.get(stage)
    return state.error is not None or info is None or info.state.final or info.state is StageState.UNKNOWN


def await_objectives(runs: Sequence[Path], objective: Objective, poll_s: float) -> list[float | TrialFailed]:
    """Wait until the objective stage of every run has ended (each poll is one scheduler
    query for all), then each run's objective value or why it has none."""
    while True:
        try:
            states = read_states(runs)
        except SchedulerUnreachable as e:  # slurmctld restarting: the trials' jobs run on; ask again
            print(f"controller: {e}; asking again in {poll_s:g} s", flush=True)
            states = []
        if states and all(_ended(s, objective.stage) for s in states):
            return [objective_value(s, objective) for s in states]
        time.sleep(poll_s)


def batches_so_far(sweep_dir: Path) -> int:
    try:
        record = read_sweep_record(sweep_dir)
    except UserError:
        return 0
    return record.batches if record else 0


def open_study(record: ControllerRecord) -> Any:
    import optuna

    return optuna.create_study(
        study_name=record.study_name,
        storage=record.storage,
        directions=[record.objective.direction],
        load_if_exists=True,
    )


def settle_unfinished(study: Any, record: ControllerRecord, poll_s: float) -> None:
    """Trials an earlier run of the controller asked for but did not tell: wait for the
    pipelines it submitted and tell their results; one never submitted has failed."""
    import optuna

    unfinished = [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    if not unfinished:
        return
    points = sweep_points(Path(record.sweep_dir))
    submitted = [n for n in unfinished if n in points]
    print(f"controller: resuming; waiting for trials {submitted} submitted before the restart", flush=True)
    values = await_objectives([points[n] for n in submitted], record.objective, poll_s)
    for number, value in zip(submitted, values, strict=True):
        tell(study, number, value)
    for number in set(unfinished) - set(submitted):
        tell(study, number, TrialFailed(f"trial {number} was asked for but never submitted"))


def tell(study: Any, number: int, value: float | TrialFailed) -> None:
    import optuna

    if isinstance(value, TrialFailed):
        print(f"controller: trial {number} failed: {value}", flush=True)
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(number, value)


def trials_record(study: Any, record: ControllerRecord, status: str) -> dict[str, Any]:
    """`trials.json`: every trial (number, state, value, parameters, run directory) and the best."""
    points = sweep_points(Path(record.sweep_dir))
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "run_dir": str(points[t.number]) if t.number in points else None,
        }
        for t in study.trials
    ]
    done = [t for t in trials if t["state"] == "COMPLETE"]
    pick = max if record.objective.direction == "maximize" else min
    best = pick(done, key=lambda t: t["value"]) if done else None
    return {
        "status": status,
        "controller_cpu_s": round(time.process_time(), 2),
        "objective": str(record.objective),
        "direction": record.objective.direction,
        "n_trials": record.n_trials,
        "best": best,
        "trials": trials,
    }


def write_trials(study: Any, record: ControllerRecord, status: str) -> dict[str, Any]:
    trials = trials_record(study, record, status)
    write_json_atomic(Path(record.sweep_dir) / TRIALS_RECORD, trials)
    return trials


def draw_study(study: Any, out: Path) -> list[Path]:
    """The optimisation history (Optuna's own plot) and the parameters' importances, as PNGs.
    matplotlib and scikit-learn may be missing where this runs: then there are none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as plots
    except ImportError:
        return []
    drawn = []
    for name, draw in (("optimization_history", plots.plot_optimization_history), ("param_importances", _importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its plots experimental
                axes = draw(study)
        except (ImportError, ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials, one value
            print(f"controller: no {name} plot: {e}", flush=True)
            continue
        path = out / f"{name}.png"
        axes.figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        drawn.append(path)
    return drawn


def _importances(study: Any) -> Any:
    """Optuna's parameter importances as bars. Its default evaluator (fANOVA) and its own
    importance plot fail with today's numpy and matplotlib in Optuna 2.10; mean decrease in
    impurity (a random forest, scikit-learn's) and a bar chart do not."""
    import matplotlib.pyplot as plt
    from optuna.importance import MeanDecreaseImpurityImportanceEvaluator, get_param_importances

    importances = get_param_importances(study, evaluator=MeanDecreaseImpurityImportanceEvaluator())
    _, ax = plt.subplots(figsize=(6, 1 + 0.5 * len(importances)))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (mean decrease in impurity)")
    ax.set_title(f"parameter importances, {len(study.trials)} trials")
    return ax


def run_controller(sweep_dir: str) -> str:
    """Run (or resume) the study until it has `n_trials` trials; returns a one-line summary.
    If it fails, `trials.json` says so and why (for `status`, `report` and `logs`)."""
    record = ControllerRecord.read(Path(sweep_dir))
    try:
        with per_command():  # the whole study is one command: each file is checked once
            return run_study(record)
    except Exception as e:
        cause = (str(e).strip().splitlines() or [""])[0]
        record_study_ended(Path(sweep_dir), "failed", f"{type(e).__name__}: {cause}".rstrip(": "))
        raise


def run_study(record: ControllerRecord) -> str:
    sweep_dir = record.sweep_dir
    poll_s = float(record.poll_s)
    with interruptions_raised():  # scancel or a requeue: stop before submitting more trials
        study = open_study(record)
        settle_unfinished(study, record, poll_s)
        done = len(study.trials)
        if done < record.n_trials:
            task = PipelineTask(
                LauncherSettings(
                    implied_keys=tuple(record.implied_keys),
                    objective=record.objective,
                    first_num=done,
                    first_batch=batches_so_far(Path(sweep_dir)),
                    before_batch=lambda: write_trials(study, record, "running"),
                )
            )
            run_trials(study, record, task, record.n_trials - done)
    trials = write_trials(study, record, "completed")
    drawn = draw_study(study, Path(sweep_dir))
    best = trials["best"]
    said = f"best trial {best['number']}: {record.objective}={best['value']:.4g}" if best else "no trial completed"
    return f"{len(trials['trials'])} trials; {said}; plots: {', '.join(p.name for p in drawn) or 'none'}"


def run_trials(study: Any, record: ControllerRecord, task: PipelineTask, n_trials: int) -> None:
    """The sweeper's trials. Optuna's grid sampler stops the study once every point of the grid
    is told, which Hydra's sweeper lets through as an error when the last one told failed: the
    grid is done then, and the batch's other trials are told here."""
    try:
        run_multirun([*record.overrides, f"hydra.sweeper.n_trials={n_trials}"], task)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise
        print("controller: the grid sampler has tried every point", flush=True)
        settle_unfinished(study, record, float(record.poll_s))


class ResumableController(submitit.helpers.Checkpointable):
    """Requeued by submitit on the time-limit warning; the rerun resumes the study."""

    def __call__(self, sweep_dir: str) -> str:
        return run_controller(sweep_dir)


if __name__ == "__main__":
    print(run_controller(sys.argv[1]))
