"""An Optuna study on the real local cluster: the login command returns at once, the
controller job runs 3 trials 2 at a time (a batch of two, then one), is requeued while the
second batch runs and finishes without running a trial twice; `cancel` stops a study's
controller and its trials."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import needs_slurm, needs_training
from tests.integration.helpers import FAST, NO_BASE, attempt_states, hpcft, manifest, requeues, wait_final, wait_gone

pytestmark = [needs_slurm, needs_training, pytest.mark.slurm]

SEARCH = ("framework.learning_rate=interval(1e-4,1e-2)", "framework.lora_rank=choice(4,8,16)")
QUICK = [*(o for o in FAST if not o.startswith("framework.learning_rate=")), NO_BASE]  # lr is searched


def submit_study(run_root: Path, trials: int) -> tuple[Path, dict]:
    started = time.monotonic()
    result = hpcft(
        "-m", "hydra/sweeper=optuna", f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.n_jobs=2", *SEARCH,
        "model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", "sweep.poll_s=2", *QUICK,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 60  # it submits the controller and returns
    (sweep_dir,) = run_root.iterdir()
    return sweep_dir, json.loads((sweep_dir / "controller.json").read_text())


def sweep_record(sweep_dir: Path) -> dict:
    path = sweep_dir / "sweep.json"
    return json.loads(path.read_text()) if path.is_file() else {"points": [], "status": ""}


def wait_until(what: str, done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(1)


def scored(sweep_dir: Path) -> int:
    return sum((Path(p["run_dir"]) / "eval" / "metrics.json").is_file() for p in sweep_record(sweep_dir)["points"])


def test_an_optuna_study_resumes_after_its_controller_is_requeued_and_runs_no_trial_twice(run_root):
    # 3 trials, not 4: a second batch of one shows the resume as well, and a trial is ~25 s of CPU
    sweep_dir, controller = submit_study(run_root, trials=3)
    job = controller["job_id"]
    # The first batch scored, the second submitted: requeue the controller while it waits.
    wait_until("a second batch", lambda: scored(sweep_dir) >= 2 and len(sweep_record(sweep_dir)["points"]) == 3, 1200)
    wait_until("the second batch queued", lambda: sweep_record(sweep_dir)["status"] == "submitted", 60)
    subprocess.run(["scontrol", "requeue", job], check=True)
    states = wait_final([job], timeout_s=1800)
    log = Path(controller["sweep_dir"], "slurm", f"{job}_0_log.out").read_text()
    assert states[job] == "COMPLETED", log[-3000:]
    assert requeues(job) == 1
    assert "waiting for trials [2] submitted before the restart" in log
    trials = json.loads((sweep_dir / "trials.json").read_text())
    assert [(t["number"], t["state"]) for t in trials["trials"]] == [(n, "COMPLETE") for n in range(3)]
    assert trials["best"]["value"] == max(t["value"] for t in trials["trials"])
    points = sweep_record(sweep_dir)["points"]
    assert [p["num"] for p in points] == list(range(3)) and len({p["run_dir"] for p in points}) == 3
    for p in points:  # every trial's training ran once
        train = manifest(Path(p["run_dir"]))["stages"]["train"]["job_id"]
        assert attempt_states(train) == ["COMPLETED"], (p, attempt_states(train))
    assert (sweep_dir / "optimization_history.png").stat().st_size > 0
    status = hpcft("status", str(sweep_dir))
    assert status.returncode == 0 and "3 of 3 trials scored; best so far: trial" in status.stdout, status.stdout
    report = hpcft("report", str(sweep_dir))
    assert report.returncode == 0 and "Best: trial" in (sweep_dir / "report.md").read_text()


def test_cancel_stops_a_study_and_leaves_none_of_its_jobs_in_the_queue(run_root):
    sweep_dir, controller = submit_study(run_root, trials=4)
    wait_until("the first batch", lambda: len(sweep_record(sweep_dir)["points"]) == 2, 600)
    cancelled = hpcft("cancel", str(sweep_dir))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"controller (job {controller['job_id']})" in cancelled.stdout
    arrays = [a["job_id"] for a in sweep_record(sweep_dir)["arrays"]]
    wait_gone([controller["job_id"], *arrays])
    assert len(sweep_record(sweep_dir)["points"]) == 2  # no trial submitted after the cancel
