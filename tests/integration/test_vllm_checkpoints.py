"""`eval.checkpoints=all` for real on the local Slurm cluster: LLaMA-Factory trains the tiny
model 6 steps saving a checkpoint every 2, the deploy job (vLLM CPU build, `.venv-serve`)
serves the 3 adapters (steps 2 and 4, and the final one at step 6) on one server, the eval
scores each, picks the best, and `report` draws the metric against the step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcft.rundir import fine_tuned_weights
from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import FAST, hpcft, manifest, only_run, wait_final
from tests.integration.test_vllm_serving import SERVE_PYTHON, needs_vllm

pytestmark = [needs_slurm, needs_training, needs_vllm, pytest.mark.slurm]


@pytest.mark.xdist_group("vllm_checkpoints")
def test_eval_checkpoints_all_scores_every_saved_checkpoint_through_one_server(run_root):
    """24 rows at 4 a step: 6 steps, checkpoints at 2, 4 and 6 (the final model), one server."""
    fast = [o for o in FAST if not o.startswith("framework.save_steps=")]
    result = hpcft(
        "model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *fast, "framework.save_steps=2",
        "eval.checkpoints=all", "eval.baseline=false", "deploy.backend=vllm",
        f"cluster.deploy.python=[{SERVE_PYTHON}]", "deploy.ready_timeout_s=600",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(run_root)
    ids = {name: info["job_id"] for name, info in manifest(run)["stages"].items()}
    states = wait_final(list(ids.values()), timeout_s=1200)
    assert set(states.values()) == {"COMPLETED"}, states

    endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
    assert [(c["step"], c["model"]) for c in endpoint["checkpoints"]] == [
        (2, "tiny_llama-ft-step-2"),
        (4, "tiny_llama-ft-step-4"),
    ]  # beside tiny_llama-ft (step 6) on the one server the deploy job started
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    points = metrics["checkpoints"]
    assert [(p["step"], p.get("final", False)) for p in points] == [(2, False), (4, False), (6, True)]
    for p in points:
        assert {"rouge-l", "bleu-4"} <= set(p["metrics"]) and p["metrics"]["rows"] == 6
        answers = run / "eval" / "checkpoints" / f"predictions_step{p['step']}.jsonl"
        assert p.get("final") or len(answers.read_text().splitlines()) == 6
    assert points[-1]["metrics"]["rouge-l"] == metrics["rouge-l"]  # the final model's, as before
    best = metrics["best_checkpoint"]
    values = {p["step"]: p["metrics"]["rouge-l"] for p in points}
    assert best["metric"] == "rouge-l" and best["value"] == max(values.values())
    assert best["step"] == min(s for s, v in values.items() if v == best["value"])
    expected = run / "train" if best["final"] else run / "train" / f"checkpoint-{best['step']}"
    assert fine_tuned_weights(run) == expected  # what `load` and Run.model_path give

    report = hpcft("report", str(run))
    assert report.returncode == 0, report.stderr
    assert (run / "checkpoints.png").stat().st_size > 0
    assert "rouge-l by step" in report.stdout and f"{best['step']}" in report.stdout
    status = hpcft("status", str(run))
    assert f"best checkpoint: step {best['step']}" in status.stdout, status.stdout
    deploy_log = Path(manifest(run)["stages"]["deploy"]["logs"]["stdout"]).read_text()
    assert "serving tiny_llama-ft, tiny_llama-ft-step-2, tiny_llama-ft-step-4 at" in deploy_log
