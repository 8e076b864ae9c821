"""A site's way of running jobs, on the real local Slurm cluster: hpcft installed on the
"login node" without the training extra (scripts/install.sh login), jobs run by the training
environment's interpreter through a stand-in container runtime (`cluster.python`), the
deploy stage through its own image (`cluster.deploy.python`), and a site variable exported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import FAST, NO_BASE, REPO, manifest, only_run, wait_final

# One worker for the module: its tests share one login-node install (a module fixture).
pytestmark = [needs_slurm, needs_training, pytest.mark.slurm, pytest.mark.xdist_group("site_wrappers")]

RUNTIME = REPO / "tests" / "integration" / "bin" / "standin-apptainer"
TRAIN_PYTHON = sys.executable  # the environment with the training stack


@pytest.fixture(scope="module")
def login_python(tmp_path_factory) -> Path:
    """A login-node install: hpcft and its four submit-side dependencies, nothing else."""
    venv = tmp_path_factory.mktemp("login") / "venv"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh"), "login", str(venv)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    python = venv / "bin" / "python"
    missing = subprocess.run([python, "-c", "import llamafactory"], capture_output=True, text=True)
    assert "No module named 'llamafactory'" in missing.stderr
    return python


def submit(login_python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(
        [str(login_python), "-m", "hpcft", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def site(record: Path) -> list[str]:
    return [
        f"cluster.python=[{RUNTIME},exec,--nv,--bind,/tmp,train.sif,{TRAIN_PYTHON}]",
        f"cluster.deploy.python=[{RUNTIME},exec,serve.sif,{TRAIN_PYTHON}]",
        f"+cluster.env.STANDIN_RECORD={record}",
    ]


def recorded(record: Path) -> list[tuple[str, str, str]]:
    """(job name's stage, task rank, image) of every task that went through the runtime."""
    lines = [line.split("\t") for line in record.read_text().splitlines()]
    return sorted((name.rsplit(".", 1)[1], rank, image) for name, _, rank, image, _ in lines)


def test_login_install_without_training_stack_runs_the_pipeline_through_a_container_wrapper(
    login_python, run_root, tmp_path
):
    record = tmp_path / "runtime.tsv"
    result = submit(
        login_python, "model=tiny_llama", "cluster=slurmlab", "cluster.nodes=2", f"run_root={run_root}", *FAST,
        NO_BASE, *site(record),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(run_root)
    ids = [info["job_id"] for info in manifest(run)["stages"].values()]
    states = wait_final(ids, timeout_s=900)
    assert set(states.values()) == {"COMPLETED"}, states
    # Both nodes of the train job, the server and the eval client each started through it.
    assert recorded(record) == [
        ("deploy", "0", "serve.sif"),
        ("eval", "0", "train.sif"),
        ("train", "0", "train.sif"),
        ("train", "1", "train.sif"),
    ]
    assert json.loads((run / "eval" / "metrics.json").read_text())["rows"] == 6
    script = (run / "slurm").glob("*_submission.sh")
    assert any(f"{RUNTIME} exec serve.sif" in p.read_text() for p in script)


def test_a_sweep_array_runs_every_task_through_the_wrapper(login_python, run_root, tmp_path):
    record = tmp_path / "runtime.tsv"
    result = submit(
        login_python, "-m", "model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST,
        "stages=[train]", "framework.learning_rate=1e-3,1e-4", *site(record),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Submitted 2 points as 1 job arrays" in result.stdout
    (sweep_dir,) = run_root.iterdir()
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    tasks = [
        json.loads(Path(p["run_dir"], "manifest.json").read_text())["stages"]["train"]["job_id"]
        for p in sweep["points"]
    ]
    states = wait_final(tasks, timeout_s=900)
    assert set(states.values()) == {"COMPLETED"}, states
    assert recorded(record) == [("train", "0", "train.sif"), ("train", "0", "train.sif")]
