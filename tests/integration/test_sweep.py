"""A real sweep on the local Slurm cluster: 2 learning rates x 2 LoRA ranks as three chained
job arrays, every point trained, served and evaluated, then status and report over it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import FAST, NO_BASE, hpcft, wait_final, wait_gone

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]


@pytest.fixture
def sbatch_calls(tmp_path) -> Path:
    """An sbatch wrapper first on PATH that counts calls, then runs the real one."""
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch.log"
    bin_dir.mkdir()
    real = subprocess.run(["which", "sbatch"], capture_output=True, text=True, check=True).stdout.strip()
    wrapper = bin_dir / "sbatch"
    wrapper.write_text(f'#!/bin/sh\necho call >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return log


def test_a_two_by_two_sweep_runs_as_three_arrays(run_root, sbatch_calls):
    env = {"PATH": f"{sbatch_calls.parent / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    result = hpcft(
        "-m",
        "model=tiny_llama",
        "cluster=slurmlab",
        f"run_root={run_root}",
        *FAST,
        "framework.learning_rate=1e-3,1e-4",
        "framework.lora_rank=4,16",  # a 2 x 2 grid: as many stages as 4 points need (the suite's time)
        "cluster.array_parallelism=2",  # two points at a time on this 2-core machine
        NO_BASE,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Submitted 4 points as 3 job arrays" in result.stdout
    assert len(sbatch_calls.read_text().split()) == 3
    (sweep_dir,) = run_root.iterdir()
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [a["stage"] for a in sweep["arrays"]] == ["train", "deploy", "eval"]
    assert all(a["tasks"] == 4 for a in sweep["arrays"])
    deploy = subprocess.run(
        ["scontrol", "show", "job", sweep["arrays"][1]["job_id"]], capture_output=True, text=True, check=True
    ).stdout
    assert f"aftercorr:{sweep['arrays'][0]['job_id']}" in deploy

    task_ids = [
        json.loads((Path(p["run_dir"]) / "manifest.json").read_text())["stages"][stage]["job_id"]
        for p in sweep["points"]
        for stage in ("train", "deploy", "eval")
    ]
    states = wait_final(task_ids, timeout_s=1200)
    assert set(states.values()) == {"COMPLETED"}, states
    for point in sweep["points"]:
        metrics = json.loads((Path(point["run_dir"]) / "eval" / "metrics.json").read_text())
        assert metrics["rows"] == 6

    status = hpcft("status", str(sweep_dir))
    assert status.returncode == 0 and status.stdout.count("COMPLETED") == 12

    report = hpcft("report", str(sweep_dir))
    assert report.returncode == 0, report.stderr
    rows = (sweep_dir / "report.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:3] == ["run", "framework.learning_rate", "framework.lora_rank"]
    assert {"rouge-1", "rouge-2", "rouge-l", "bleu-4", "exact_match"} == set(header[3:]) and len(header) == 8
    assert len(rows) == 5
    plot = sweep_dir / "report_rouge-l_vs_framework.lora_rank.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cancel_on_a_sweep_leaves_none_of_its_jobs_in_the_queue(run_root):
    result = hpcft(
        "-m", "model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "framework.lora_rank=4,8,16"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = run_root.iterdir()
    arrays = [a["job_id"] for a in json.loads((sweep_dir / "sweep.json").read_text())["arrays"]]
    cancelled = hpcft("cancel", str(sweep_dir))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "9 jobs of 3 points (train 3, deploy 3, eval 3)" in cancelled.stdout  # one line for the sweep
    wait_gone(arrays)


def test_a_sweep_in_batches_is_seen_whole_by_status_and_cancel(run_root):
    """`hydra.sweeper.max_batch_size=2` over 4 points: two batches, one sweep.json."""
    result = hpcft(
        "-m", "model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "hydra.sweeper.max_batch_size=2",
        "framework.lora_rank=4,8,16,32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = run_root.iterdir()
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["batches"] == 2 and [p["num"] for p in record["points"]] == [0, 1, 2, 3]
    arrays = [a["job_id"] for a in record["arrays"]]
    assert len(arrays) == 6  # 2 batches x 3 stages
    status = hpcft("status", str(sweep_dir))
    assert status.returncode == 0 and sum(" train " in line for line in status.stdout.splitlines()) == 4
    cancelled = hpcft("cancel", str(sweep_dir))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "12 jobs of 4 points (train 4, deploy 4, eval 4)" in cancelled.stdout
    wait_gone(arrays)


def test_a_local_sweep_is_a_sweep_that_status_and_report_read(run_root):
    args = ["-m", "model=tiny_llama", f"run_root={run_root}", *FAST, "stages=[train]", "framework.lora_rank=4,8"]
    result = hpcft(*args, env={"PATH": "/usr/bin:/bin"})  # no Slurm on PATH: cluster=local
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = run_root.iterdir()
    assert f"Sweep directory: {sweep_dir}" in result.stdout and "| run | framework.lora_rank |" in result.stdout
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["status"] == "completed" and len(sweep["points"]) == 2
    status = hpcft("status", str(sweep_dir))
    assert status.returncode == 0 and status.stdout.count("COMPLETED") == 2, status.stdout
    report = hpcft("report", str(sweep_dir))
    assert report.returncode == 0 and (sweep_dir / "report.csv").read_text().count("\n") == 3
