"""`deploy.placement=after_train` on the real cluster: one Slurm job trains, serves and
evaluates; a requeue during the eval resumes without training again or asking a row twice."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import FAST, hpcft, logs, manifest, only_run, requeues, wait_final

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]


def wait_for(what: str, ready, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(0.2)


def test_train_deploy_and_eval_run_in_one_job_and_a_requeue_mid_eval_resumes_it(run_root, tmp_path):
    # Bounded by state: Slurm's warning signal (USR2, what slurmctld sends before the time
    # limit) goes to the job once 60 of the 300 rows are answered, so the requeue lands
    # mid-eval however fast this machine answers.
    rows, signal_at = 300, 60
    evalset = tmp_path / "eval.json"
    evalset.write_text(json.dumps([{"instruction": f"Say {i}", "output": str(i)} for i in range(rows)]))
    args = [*FAST, f"evalset={evalset}", "eval.baseline=false", "eval.concurrency=1", "deploy.placement=after_train"]
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *args, "cluster.max_requeues=5")
    assert result.returncode == 0, result.stderr
    assert "deploy, eval: in the train job's allocation" in result.stdout
    run = only_run(run_root)
    stages = manifest(run)["stages"]
    assert list(stages) == ["train"]
    job = str(stages["train"]["job_id"])
    answers = run / "eval" / "predictions.jsonl"
    wait_for("eval answers", lambda: answers.exists() and len(answers.read_text().splitlines()) >= signal_at, 600)
    subprocess.run(["scancel", "--signal=USR2", job], check=False)
    states = wait_final([job], timeout_s=600)
    assert states[job] == "COMPLETED", logs(run)[-3000:]
    assert requeues(job) >= 1, logs(run)[-3000:]
    text = logs(run)
    assert "training finished in an earlier attempt of this job; serving and evaluating" in text
    resumed = [int(n) for n in re.findall(rf"{rows} rows, (\d+) already answered", text)]
    assert any(signal_at <= n < rows for n in resumed), resumed  # went on from the answers kept
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["rows"] == rows and 0 <= metrics["rouge-l"] <= 100
    indices = [json.loads(line)["index"] for line in answers.read_text().splitlines()]
    assert sorted(indices) == list(range(rows))  # no row asked twice
    assert json.loads((run / "deploy" / "endpoint.json").read_text())["stopped"] is True
    assert (run / "train" / "hpcft_train_done").is_file()
    assert Path(run / "train" / "adapter_model.safetensors").is_file()


def test_the_server_runs_in_the_deploy_stages_own_environment_inside_the_train_job(run_root):
    """vLLM in its own environment (`cluster.deploy.python`) serves inside the train job."""
    from tests.integration.test_vllm_serving import SERVE_PYTHON

    if not SERVE_PYTHON.exists():
        pytest.skip("no vLLM environment (scripts/install.sh serve)")
    result = hpcft(
        "model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "deploy.placement=after_train",
        "deploy.backend=vllm", f"cluster.deploy.python=[{SERVE_PYTHON}]", "deploy.ready_timeout_s=600",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    job = str(manifest(run)["stages"]["train"]["job_id"])
    states = wait_final([job], timeout_s=900)
    assert states[job] == "COMPLETED", logs(run)[-3000:]
    assert f"hpcft: serving with {SERVE_PYTHON} in this job's allocation" in logs(run)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["model"] == "tiny_llama-ft" and set(metrics["base"]) >= {"rouge-l", "bleu-4"}
    assert json.loads((run / "deploy" / "endpoint.json").read_text())["stopped"] is True
