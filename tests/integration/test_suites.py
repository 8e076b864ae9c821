"""Standard LLM suites for real: on the local Slurm cluster, the tiny Llama is fine-tuned
(LoRA, a few steps), served by vLLM on CPU beside its base, and the eval job scores two local
lm-evaluation-harness tasks (tests/fixtures/suites: one multiple-choice, one generative, 10
rows each) for both models. The scores equal what `python -m lm_eval` itself reports when run
by hand against the same, kept-serving endpoint with the same settings; then
`python -m hpcft cancel` stops the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_LLAMA, needs_slurm, needs_training
from tests.integration.helpers import FAST, hpcft, manifest, only_run, sacct_states, wait_final, wait_gone
from tests.integration.test_vllm_serving import SERVE_PYTHON, needs_vllm

TASKS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "suites"
TASKS = ("hpcft_mc", "hpcft_gen")
pytestmark = [needs_slurm, needs_training, needs_vllm, pytest.mark.slurm]


def by_hand(side: dict, key: str, out: Path) -> dict:
    """lm-eval's own results for both tasks, run as a user types it, the key in its environment."""
    model_args = f"base_url={side['base_url']}/completions,model={side['model']},tokenizer={TINY_LLAMA}"
    # One request at a time, as hpcft sends them to a server with LoRA (hpcft.jobs.suites says why).
    model_args += ",tokenizer_backend=huggingface,num_concurrent=1"
    argv = [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", model_args,
            "--tasks", ",".join(TASKS), "--num_fewshot", "2", "--include_path", str(TASKS_DIR),
            "--output_path", str(out)]  # fmt: skip
    env = {**os.environ, "OPENAI_API_KEY": key, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(argv, cwd=TASKS_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (found,) = out.glob("**/results_*.json")
    results: dict = json.loads(found.read_text())["results"]
    return results


def scores(values: dict) -> dict:
    return {k: v for k, v in values.items() if "," in k}


def test_suites_score_base_and_fine_tuned_as_lm_eval_does_by_hand(run_root, tmp_path):
    started = time.monotonic()
    result = hpcft(
        "model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "deploy.backend=vllm",
        f"cluster.deploy.python=[{SERVE_PYTHON}]", "deploy.keep_serving=true", "deploy.ready_timeout_s=600",
        f"eval.suites=[{','.join(TASKS)}]", f"eval.suite_tasks_dir={TASKS_DIR}", "eval.suite_fewshot=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(run_root)
    ids = {name: info["job_id"] for name, info in manifest(run)["stages"].items()}
    try:
        states = wait_final([ids["train"], ids["eval"]], timeout_s=1500)  # deploy keeps serving
        assert set(states.values()) == {"COMPLETED"}, (states, sacct_states([ids["deploy"]]))
        suites = json.loads((run / "eval" / "suites.json").read_text())
        metrics = json.loads((run / "eval" / "metrics.json").read_text())
        endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
        key = Path(endpoint["api_key_file"]).read_text().strip()
        for label, side in (("fine_tuned", endpoint), ("base", endpoint["baseline"])):
            hand = by_hand(side, key, tmp_path / label)
            for task in TASKS:
                assert scores(suites[label][task]["results"][task]) == scores(hand[task]), (label, task)
            tuned_or_base = metrics if label == "fine_tuned" else metrics["base"]
            assert tuned_or_base[f"{TASKS[0]}/acc"] == 100 * hand[TASKS[0]]["acc,none"]
            assert tuned_or_base[f"{TASKS[1]}/exact_match"] == 100 * hand[TASKS[1]]["exact_match,none"]
        assert {"rouge-l", "hpcft_mc/acc", "hpcft_mc/acc_norm"} <= set(metrics["gain"])
        low, high = metrics["ci95"]["hpcft_mc/acc"]  # from lm-eval's own per-row samples
        assert low <= metrics["gain"]["hpcft_mc/acc"] <= high
        assert {"hpcft_mc/acc", "hpcft_gen/exact_match"} <= set(metrics["mcnemar_p"])
        files = [p for p in run.rglob("*") if p.is_file() and p.name != "api_key"]
        assert [str(p) for p in files if key.encode() in p.read_bytes()] == []
        status = hpcft("status", str(run))
        assert "hpcft_mc/acc=" in status.stdout, status.stdout
    finally:
        cancelled = hpcft("cancel", str(run))
        wait_gone([ids["deploy"]], timeout_s=120)
        print(f"suites integration test: {time.monotonic() - started:.0f} s")
    assert cancelled.returncode == 0, cancelled.stderr
