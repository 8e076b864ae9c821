"""The pipeline on the real local Slurm cluster (scripts/slurmlab/up.sh): real jobs, real
dependencies, real LLaMA-Factory training, serving and eval."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import (
    FAST,
    assert_eval_outputs,
    hpcft,
    job_names,
    manifest,
    only_run,
    wait_final,
)

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]


def job_ids(run: Path) -> dict[str, str]:
    return {name: info["job_id"] for name, info in manifest(run)["stages"].items()}


def dependency_of(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return next(word for word in out.split() if word.startswith("Dependency="))


@pytest.mark.canary
def test_pipeline_runs_as_three_chained_slurm_jobs(run_root):
    started = time.monotonic()
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST)
    returned_s = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    ids = job_ids(run)
    assert f"train={ids['train']} deploy={ids['deploy']} eval={ids['eval']}" in result.stdout
    # The command returned while the jobs were still queued or running (it never waits).
    queued = subprocess.run(
        ["squeue", "-h", "-o", "%i", "-j", ",".join(ids.values())], capture_output=True, text=True, check=True
    ).stdout.split()
    assert queued, f"jobs already gone from the queue {returned_s:.1f} s after submitting"
    assert dependency_of(ids["deploy"]).startswith(f"Dependency=afterok:{ids['train']}")
    assert dependency_of(ids["eval"]).startswith(f"Dependency=afterok:{ids['train']}")
    assert f"after:{ids['deploy']}" in dependency_of(ids["eval"])
    states = wait_final(list(ids.values()))
    assert set(states.values()) == {"COMPLETED"}, states
    assert (run / "train" / "adapter_model.safetensors").is_file()
    endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
    assert endpoint["node"].startswith("node") and endpoint["base_url"].endswith("/v1")
    assert_eval_outputs(run, eval_rows=6)


@pytest.mark.fault
def test_failed_train_cancels_deploy_and_eval(run_root):
    # Valid on the login node, fails at run time inside LLaMA-Factory/PEFT.
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "framework.lora_target=nope")
    assert result.returncode == 0, result.stderr
    ids = job_ids(only_run(run_root))
    states = wait_final(list(ids.values()), timeout_s=300)
    assert states[ids["train"]] == "FAILED"
    assert states[ids["deploy"]] == "CANCELLED" and states[ids["eval"]] == "CANCELLED", states
    status = hpcft("status", str(only_run(run_root))).stdout
    assert f"--- {only_run(run_root).name} train (FAILED)" in status and "nope" in status.split("(FAILED)")[-1]


@pytest.fixture
def sbatch_refusing_third(tmp_path, monkeypatch) -> Path:
    """A `sbatch` that passes the first two calls to the real one and refuses the third,
    as a scheduler would (e.g. QOS limits); it sits first on PATH."""
    real = subprocess.run(["which", "sbatch"], capture_output=True, text=True, check=True).stdout.strip()
    bin_dir, count = tmp_path / "bin", tmp_path / "count"
    bin_dir.mkdir()
    wrapper = bin_dir / "sbatch"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'n=$(($(cat "{count}" 2>/dev/null || echo 0) + 1)); echo $n > "{count}"\n'
        'if [ "$n" -ge 3 ]; then echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1; fi\n'
        f'exec "{real}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return count


@pytest.mark.fault
def test_refused_stage_cancels_the_stages_already_submitted(run_root, sbatch_refusing_third):
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST)
    assert result.returncode == 1
    assert "submitting stage 'eval' failed; cancelled deploy, train." in result.stderr
    assert "Traceback" not in result.stderr
    m = manifest(only_run(run_root))
    assert m["status"] == "submit_failed" and "QOSMaxSubmitJobPerUserLimit" in m["error"]
    ids = [m["stages"][s]["job_id"] for s in ("train", "deploy")]
    states = wait_final(ids, timeout_s=120)
    assert set(states.values()) == {"CANCELLED"}, states


@pytest.mark.canary
@pytest.mark.parametrize(
    "bad",
    [
        ["cluster=nope"],
        ["framework.per_device_train_batch_size=0"],
        ["+framework.args.lora_dropoutt=0.1"],
        ["cluster.nodes=9"],
        ["trainset=/no/such/file.json"],
    ],
)
def test_refused_input_submits_nothing_to_the_cluster(run_root, bad, tmp_path):
    """The refusal comes before any call to Slurm: a recording wrapper around each client
    (first on PATH, passing on to the real one) is never run. Waiting for accounting instead
    would pass vacuously whenever sacct lags."""
    calls = tmp_path / "slurm-calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun", "scancel"):
        real = subprocess.run(["which", name], capture_output=True, text=True, check=True).stdout.strip()
        (bin_dir / name).write_text(f'#!/bin/sh\necho {name} >> "{calls}"\nexec "{real}" "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    token = f"refused-{uuid.uuid4().hex[:12]}"
    result = hpcft("model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", f"name={token}", *bad, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not calls.exists(), calls.read_text()
    assert token not in job_names()


def test_hostile_paths_and_names_reach_the_job_intact(tmp_path):
    """Quotes, `;`, `$(...)`, backticks and spaces in the run folder, the data path and the run
    name: the train job runs on them as data, and nothing is executed."""
    hostile = tmp_path / "it's a $(touch PWNED1) `touch PWNED2`; dir"
    hostile.mkdir()
    data = hostile / "my train's data.json"
    data.write_text((Path(__file__).parents[2] / "hpcft/assets/demo/llamafactory_train.json").read_text())
    run_root = hostile / "runs"
    name = "x'; touch PWNED3; echo '$(touch PWNED4)"
    result = hpcft(
        "model=tiny_llama",
        "cluster=slurmlab",
        "run_root=" + hydra_quote(str(run_root)),
        *FAST,
        "name=" + hydra_quote(name),
        "trainset=" + hydra_quote(str(data)),
        "stages=[train]",
    )
    assert result.returncode == 0, result.stderr
    run = only_run(run_root)
    assert run.name.startswith(name)
    states = wait_final(list(job_ids(run).values()), timeout_s=300)
    assert set(states.values()) == {"COMPLETED"}, states
    assert (run / "train" / "adapter_model.safetensors").is_file()
    info = json.loads((run / "native" / "dataset_info.json").read_text())
    assert info["hpcft_train"]["file_name"] == str(data)
    for root in (tmp_path, Path.cwd(), Path(__file__).parents[2], Path.home()):
        assert not list(root.glob("PWNED*")), f"something executed in {root}"


def hydra_quote(value: str) -> str:
    """Quote a value for a Hydra override (single quotes, escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
