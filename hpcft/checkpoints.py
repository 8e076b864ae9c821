"""The best checkpoint by the task metric (`eval.checkpoints`): which saved checkpoints a run
evaluates, the one it picks, and where that one's weights are.

`last` (the default) evaluates the final model only. `all` evaluates every `checkpoint-<step>`
folder the trainer saved (`framework.save_steps`) and the final model; `every_<n>` the
checkpoints whose step is a multiple of n, and the final model. The deploy job serves each
chosen checkpoint's LoRA adapter beside the final one on the run's one vLLM server
(`<model>-ft-step-<step>`), the eval asks and scores each, and `eval/metrics.json` gets
`checkpoints` (each step's metrics) and `best_checkpoint` (the step the objective picks:
`sweep.objective` when it is an eval metric, else the headline metric). Pure functions:
the login node (config checks, `status`, `report`, `load`) and the jobs share them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcft.errors import ConfigError

LAST, ALL = "last", "all"
CHOICES = "last, all, every_<n> (the checkpoints at multiples of n steps)"
_EVERY = re.compile(r"^every_([1-9][0-9]*)$")
_CHECKPOINT = re.compile(r"^checkpoint-([0-9]+)$")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def checkpoint_every(value: str) -> int:
    """`eval.checkpoints` as a step period: 0 for `last` (the final model only), 1 for `all`,
    n for `every_<n>`; a ConfigError listing the valid values for anything else."""
    text = str(value)
    if text == LAST:
        return 0
    if text == ALL:
        return 1
    if match := _EVERY.match(text):
        return int(match.group(1))
    raise ConfigError("eval.checkpoints", f"{text!r} is not one of {CHOICES}")


def saved_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The `checkpoint-<step>` folders with an adapter in `folder`, in step order."""
    found = []
    for child in folder.glob("checkpoint-*") if folder.is_dir() else []:
        match = _CHECKPOINT.match(child.name)
        if match and any((child / name).is_file() for name in ADAPTER_FILES):
            found.append((int(match.group(1)), child))
    return sorted(found)


def chosen_checkpoints(folder: Path, every: int, final_step: int | None) -> list[tuple[int, Path]]:
    """The saved checkpoints `every` selects, without the one at the final step (the final
    model is those weights, scored under its own name)."""
    if every <= 0:
        return []
    return [(step, path) for step, path in saved_checkpoints(folder) if step % every == 0 and step != final_step]


def final_step(folder: Path) -> int | None:
    """The trainer's last step (`trainer_state.json` of the output folder); None before it is written."""
    try:
        step = json.loads((folder / "trainer_state.json").read_text()).get("global_step")
    except (OSError, ValueError, AttributeError):
        return None
    return int(step) if isinstance(step, int) else None


def pick_best(points: Sequence[dict[str, Any]], metric: str, direction: str) -> dict[str, Any] | None:
    """The point (`{step, metrics, ...}`) with the best `metric`; the earliest step on a tie;
    None when no point has it."""
    scored = [p for p in points if isinstance(p.get("metrics", {}).get(metric), int | float)]
    if not scored:
        return None
    sign = -1.0 if direction == "minimize" else 1.0
    return max(sorted(scored, key=lambda p: int(p["step"])), key=lambda p: sign * float(p["metrics"][metric]))


def checkpoint_points(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """metrics.json's `checkpoints` (`{step, model, path, metrics}` each), in step order; empty
    for a run that evaluated the final model only."""
    found = metrics.get("checkpoints")
    if not isinstance(found, list):
        return []
    points = [p for p in found if isinstance(p, dict) and isinstance(p.get("step"), int)]
    return sorted(points, key=lambda p: int(p["step"]))


def best_of(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """metrics.json's `best_checkpoint` (`{step, path, metric, value, direction, final}`), if any."""
    best = metrics.get("best_checkpoint")
    return best if isinstance(best, dict) and isinstance(best.get("step"), int) else None


def best_summary(metrics: dict[str, Any]) -> str:
    """`best checkpoint: step 4 (rouge-l=12.30 of 3 steps)` for `status`; empty without."""
    best = best_of(metrics)
    if best is None:
        return ""
    value = best.get("value")
    shown = f"{best.get('metric')}={value:.2f}" if isinstance(value, int | float) else str(best.get("metric"))
    return f"best checkpoint: step {best['step']} ({shown} of {len(checkpoint_points(metrics))} steps)"


def best_checkpoint_weights(run: Path) -> Path | None:
    """The folder of the checkpoint the eval picked, where it is not the final model (whose
    weights `hpcft.rundir.fine_tuned_weights` finds as before); None otherwise."""
    try:
        metrics = json.loads((run / "eval" / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    best = best_of(metrics) if isinstance(metrics, dict) else None
    if best is None or best.get("final") or not isinstance(best.get("path"), str):
        return None
    path = Path(best["path"])
    return path if any((path / name).is_file() for name in ADAPTER_FILES) else None
