"""The deploy job's part of `eval.checkpoints` (hpcft.checkpoints): the training output's saved
checkpoints, listed when the server starts (they exist only after training), each served as a
LoRA adapter beside the final one on the same vLLM server, and published in `endpoint.json`
(`checkpoints`: `{step, model, path}` each) for the eval to ask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpcft.checkpoints import chosen_checkpoints, final_step
from hpcft.jobs.spec import DeployJob


def served_checkpoints(job: DeployJob) -> list[dict[str, Any]]:
    """The checkpoints the server serves beside the final adapter: `{step, model, path}` each,
    in step order; empty without `eval.checkpoints`."""
    serving = job.checkpoints
    if serving is None:
        return []
    folder = Path(serving.folder)
    chosen = chosen_checkpoints(folder, serving.every, final_step(folder))
    return [{"step": step, "model": f"{serving.model_name}-step-{step}", "path": str(path)} for step, path in chosen]


def with_checkpoints(job: DeployJob, argv: list[str], served: list[dict[str, Any]]) -> list[str]:
    """The server command with the checkpoints' `--lora-modules` entries spliced in where it
    says `{checkpoints}` (vLLM's JSON form: a path may hold `=`), and the adapters' count."""
    if job.checkpoints is None:
        return argv
    entries = [json.dumps({"name": s["model"], "path": s["path"]}) for s in served]
    count = len(served) + 1  # and the final adapter
    values = {"{loras}": str(count), "{max_loras}": str(min(count, job.checkpoints.max_in_batch))}
    return [m for a in argv for m in (entries if a == "{checkpoints}" else [values.get(a, a)])]
