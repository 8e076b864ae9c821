"""lm-evaluation-harness by hand, as a user runs it against a run's endpoint: the oracle the
suites test (tests/integration/test_vllm_serving.py) compares hpcft's suite scores with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_LLAMA

TASKS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "suites"
TASKS = ("hpcft_mc", "hpcft_gen")


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
