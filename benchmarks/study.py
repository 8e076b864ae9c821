"""Benchmark 10: an Optuna study (`-m hydra/sweeper=optuna`) on the local cluster.

- Login node: the wall time of the command that checks the study and submits its controller
  job (held, then cancelled), against the floor of submitting one plain pipeline the same way
  (`python -m hpcft model=tiny_llama cluster=slurmlab`, 3 sbatch calls). Target: about a
  second, and the same order as one run.
- Controller: one real study, 4 trials of `stages=[train]`, 2 at a time, `sweep.poll_s=2`.
  Its overhead per batch is the time from the last trial of a batch ending to the next
  batch's train array being submitted (sacct's End and Submit); its floor is the polling
  interval. Also the controller's own CPU time per trial.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, Result, Row, Shim, fmt, median, rows_of, run_timed, scancel

COMMON = ("model=tiny_llama", "cluster=slurmlab")
STUDY = (
    "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_jobs=2",
    "framework.learning_rate=interval(1e-4,1e-2)", "framework.lora_rank=choice(4,8,16)",
)  # fmt: skip
QUICK = (
    "stages=[train]", "framework.num_train_epochs=1", "framework.per_device_train_batch_size=4",
    "framework.gradient_accumulation_steps=1", "framework.cutoff_len=64", "framework.save_steps=100",
)  # fmt: skip
POLL_S = 2.0
TRIALS = 4


def login_times(work: Path, shim: Shim, repeat: int) -> dict[str, list[float]]:
    """Submit the study and a plain run `repeat` times each, held, and cancel what they queued."""
    times: dict[str, list[float]] = {"study": [], "run": []}
    for i in range(repeat):
        for kind, args in (("study", [*STUDY, "hydra.sweeper.n_trials=64"]), ("run", [])):
            root = work / f"{kind}-{i}"
            env = shim.env(work / f"{kind}-{i}.log", hold=True)
            timed = run_timed([PYTHON, "-m", "hpcft", *args, *COMMON, f"run_root={root}"], env=env).check()
            times[kind].append(timed.wall_s)
            scancel(queued_ids(root))
    return times


def queued_ids(root: Path) -> list[str]:
    ids = []
    for record in [*root.glob("*/controller.json"), *root.glob("*/manifest.json")]:
        data = json.loads(record.read_text())
        ids += [data["job_id"]] if "job_id" in data else [s["job_id"] for s in data["stages"].values()]
    return [str(i) for i in ids if i]


def sacct_times(job_ids: list[str]) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,Submit,End,State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.count("|") == 3]
    return {r[0]: {"submit": r[1], "end": r[2], "state": r[3]} for r in rows}


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def real_study(work: Path, shim: Shim) -> dict[str, Any]:
    """One real study to its end; the gaps between batches, from accounting."""
    root = work / "real"
    env = shim.env(work / "real.log", hold=False)
    args = [*STUDY, f"hydra.sweeper.n_trials={TRIALS}", *COMMON, *QUICK, f"run_root={root}", f"sweep.poll_s={POLL_S}"]
    run_timed([PYTHON, "-m", "hpcft", *args], env=env).check()
    (sweep_dir,) = root.iterdir()
    controller = json.loads((sweep_dir / "controller.json").read_text())["job_id"]
    deadline = time.monotonic() + 900
    while sacct_times([controller]).get(controller, {}).get("state", "") in ("", "PENDING", "RUNNING"):
        if time.monotonic() > deadline:
            scancel([controller])
            raise RuntimeError("the study did not finish in 900 s")
        time.sleep(2)
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    arrays = [a["job_id"] for a in sweep["arrays"]]
    points = [json.loads((Path(p["run_dir"]) / "manifest.json").read_text()) for p in sweep["points"]]
    tasks = [p["stages"]["train"]["job_id"] for p in points]
    acct = sacct_times([controller, *arrays, *tasks])
    gaps = []
    for before, after in itertools.pairwise(arrays):
        ended = max(seconds(acct[t]["end"]) for t in tasks if t.startswith(f"{before}_"))
        first = min(seconds(acct[t]["submit"]) for t in tasks if t.startswith(f"{after}_"))
        gaps.append(first - ended)
    trials = json.loads((sweep_dir / "trials.json").read_text())
    return {
        "trials": len(trials["trials"]),
        "complete": sum(t["state"] == "COMPLETE" for t in trials["trials"]),
        "gaps_s": gaps,
        "controller_cpu_s": trials["controller_cpu_s"],  # its last run's (accounting here has no CPU times)
        "controller_state": acct[controller]["state"],
    }


def run(work: Path, shim: Shim, repeat: int) -> Result:
    raw: dict[str, Any] = {"login": login_times(work, shim, repeat), "real": real_study(work, shim)}
    return Result(rows(raw), raw)


STUDY_RATIO = 1.5
"""The study's login-node submit against one plain run's (issue 34)."""


def rows(raw: dict[str, Any]) -> list[Row]:
    study, single = median(raw["login"]["study"]), median(raw["login"]["run"])
    real = raw["real"]
    gap = median(real["gaps_s"]) if real["gaps_s"] else float("nan")
    row = rows_of("Optuna study", len(raw["login"]["study"]))
    done = real["complete"] == real["trials"] == TRIALS and real["controller_state"] == "COMPLETED"
    return [
        row("login node: submit the study (s), vs one plain run", fmt(study), fmt(single), f"{study / single:.2g}x",
            f"<= {STUDY_RATIO:g}x", study / single <= STUDY_RATIO),
        row(f"controller: batch end -> next submitted (s, sacct: 1 s steps), vs its poll ({TRIALS} trials)",
            fmt(gap), fmt(POLL_S), f"{gap / POLL_S:.2g}x", "<= poll + 5 s", gap <= POLL_S + 5),
        row("controller: its own CPU time per trial (s)", fmt(real["controller_cpu_s"] / max(real["trials"], 1))),
        row(f"trials completed | in all ({real['controller_state']})", str(real["complete"]), str(real["trials"]),
            "", f"{TRIALS} of {TRIALS}", done),
    ]  # fmt: skip
