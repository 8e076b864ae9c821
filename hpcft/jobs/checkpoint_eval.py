"""The eval's part of `eval.checkpoints` (hpcft.checkpoints): each served checkpoint's answers
on the eval set (`eval/checkpoints/predictions_step<step>.jsonl`, resumed as the final model's
are), their scores, and the best step by the run's objective.

`metrics.json` gets `checkpoints` (`{step, model, path, metrics}` per checkpoint, the final
model last with `final: true`) and `best_checkpoint` (`{step, path, metric, value, direction,
final}`), which `status`, `report` and `load` read (hpcft.checkpoints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpcft.checkpoints import final_step, pick_best
from hpcft.jobs.answers import answered, final_answers
from hpcft.jobs.metrics import mean_scores, row_scores_of
from hpcft.jobs.spec import CheckpointEval, EvalJob
from hpcft.rundir import RunLayout


def checkpoint_predictions(layout: RunLayout, step: int) -> Path:
    """Where a checkpoint's answers are kept."""
    return layout.eval / "checkpoints" / f"predictions_step{step}.jsonl"


def served_points(job: EvalJob, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """The checkpoints the server publishes (`{step, model, path}` each); none unless asked."""
    found = endpoint.get("checkpoints") if job.checkpoints else None
    return [dict(p) for p in found] if isinstance(found, list) else []


def checkpoint_metrics(job: EvalJob, layout: RunLayout, steps: list[int], total: int) -> list[dict[str, float]]:
    """The metrics of each checkpoint's kept answers, scored as the final model's are, all in
    one pool of the job's CPUs (hpcft.jobs.metrics: each reference analysed once)."""
    kept = [answered(final_answers(checkpoint_predictions(layout, s), total), job.max_refused_fraction) for s in steps]
    answers = [([r["predict"] for r in records], [r["label"] for r in records]) for records in kept]
    out = []
    for records, per_row in zip(kept, row_scores_of(answers) if answers else [], strict=True):
        metrics = mean_scores(per_row)
        if len(records) != total:
            metrics["refused"] = float(total - len(records))
        out.append(metrics)
    return out


def best_record(spec: CheckpointEval, points: list[dict[str, Any]]) -> dict[str, Any]:
    """`best_checkpoint` for metrics.json: the step `spec`'s metric picks; empty when no point has it."""
    best = pick_best(points, spec.metric, spec.direction)
    if best is None:
        print(f"eval: no checkpoint has {spec.metric}; no best checkpoint picked", flush=True)
        return {}
    value = float(best["metrics"][spec.metric])
    chosen = {"step": best["step"], "path": best["path"], "metric": spec.metric, "value": value}
    return {"best_checkpoint": {**chosen, "direction": spec.direction, "final": bool(best.get("final"))}}


def scored_checkpoints(
    job: EvalJob, layout: RunLayout, asked: list[dict[str, Any]], model: str, final: dict[str, float], total: int
) -> dict[str, Any]:
    """What metrics.json gets for `eval.checkpoints`: each asked checkpoint's metrics, the final
    model's (`final`, served as `model`) at its step, and the best of them."""
    spec = job.checkpoints
    if spec is None:
        return {}
    scores = checkpoint_metrics(job, layout, [int(p["step"]) for p in asked], total)
    points = [{**p, "metrics": metrics} for p, metrics in zip(asked, scores, strict=True)]
    last = final_step(Path(spec.folder))
    step = last if last is not None else max((int(p["step"]) for p in points), default=0)
    points.append({"step": step, "model": model, "path": spec.folder, "metrics": final, "final": True})
    return {"checkpoints": points, **best_record(spec, points)}
