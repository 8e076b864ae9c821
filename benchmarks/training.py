"""Benchmark 4: training overhead. The same tiny LLaMA-Factory LoRA SFT run three ways:

- direct: `llamafactory-cli train <yaml>`, the YAML hpcft writes (`<run>/native/train.yaml`
  of a dry run), with its `output_dir` moved to a fresh folder, and the environment hpcft
  gives its jobs (offline, unbuffered);
- hpcft local: `python -m hpcft ... cluster=local stages=[train]` (the stage runs on this
  machine under submitit's local executor; the command returns when it has ended);
- hpcft on Slurm: `python -m hpcft ... cluster=slurmlab stages=[train]`, timed from the
  command's start until the job's result file is written.

All three get OMP_NUM_THREADS=1 (see THREADS) and run interleaved.

Measured: wall time, and the trainer's own `train_runtime` (from `all_results.json`). The
fixed start-up overhead is the median (wall - train_runtime) minus the direct run's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import (
    JOB_ENV,
    PYTHON,
    Result,
    Row,
    Shim,
    fmt,
    median,
    only_child,
    read_json,
    rows_of,
    run_timed,
    scancel,
    until,
)

TARGET_RATIO = 1.05
# FAST-like settings of the integration tests, with enough epochs that train_runtime is a few seconds.
TRAIN = [
    "model=tiny_llama",
    "stages=[train]",
    "framework.num_train_epochs=48",
    "framework.per_device_train_batch_size=4",
    "framework.gradient_accumulation_steps=1",
    "framework.cutoff_len=64",
    "framework.learning_rate=1e-3",
    "framework.save_steps=100000",
    "framework.logging_steps=50",
]
CLI = str(Path(PYTHON).parent / "llamafactory-cli")
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Given to all three alike: with torch's default (one thread per core) on a 2-core machine,
any other load makes OpenMP threads wait on each other and a step takes 10-40x longer."""


def native_yaml(work: Path) -> dict[str, Any]:
    """The LLaMA-Factory config hpcft writes for these settings (a dry run, nothing runs)."""
    root = work / "dry"
    run_timed([PYTHON, "-m", "hpcft", *TRAIN, "cluster=local", "dry_run=true", f"run_root={root}"]).check()
    config: dict[str, Any] = yaml.safe_load((only_child(root) / "native" / "train.yaml").read_text())
    return config


def train_runtime(output: Path) -> float:
    return float(read_json(output / "all_results.json")["train_runtime"])


def run_direct(work: Path, config: dict[str, Any], tag: str) -> dict[str, Any]:
    folder = work / tag
    folder.mkdir(parents=True)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump({**config, "output_dir": str(folder / "output")}, sort_keys=False))
    timed = run_timed([CLI, "train", str(path)], {**os.environ, **JOB_ENV, **THREADS}, cwd=folder).check()
    return {"wall_s": timed.wall_s, "train_runtime_s": train_runtime(folder / "output")}


def run_local(work: Path, tag: str) -> dict[str, Any]:
    root = work / tag
    argv = [PYTHON, "-m", "hpcft", *TRAIN, "cluster=local", f"run_root={root}"]
    timed = run_timed(argv, {**os.environ, **THREADS}).check()
    return {"wall_s": timed.wall_s, "train_runtime_s": train_runtime(only_child(root) / "train")}


def run_slurm(work: Path, shim: Shim, tag: str, timeout_s: float = 300) -> dict[str, Any]:
    root = work / tag
    start = time.perf_counter()
    # The job gets the CPUs the direct run has: with the lab's default of 1, something in the
    # stack sizes itself by Slurm's CPU count and train_runtime grows ~15 % (measured).
    cpus = f"cluster.cpus_per_node={os.cpu_count() or 1}"
    argv = [PYTHON, "-m", "hpcft", *TRAIN, "cluster=slurmlab", cpus, f"run_root={root}"]
    submit = run_timed(argv, shim.env(work / f"{tag}.log", hold=False, **THREADS)).check()  # sbatch exports it
    run = only_child(root)
    job_id = str(read_json(run / "manifest.json")["stages"]["train"]["job_id"])
    result = run / "slurm" / f"{job_id}_0_result.pkl"
    if not until(result.is_file, timeout_s, 0.05):
        scancel([job_id])
        raise RuntimeError(f"Slurm train job {job_id} gave no result in {timeout_s} s; see {run / 'slurm'}")
    wall = time.perf_counter() - start
    output = run / "train"
    if not (output / "all_results.json").is_file():
        raise RuntimeError(f"Slurm train job {job_id} failed; see {run / 'slurm'}/{job_id}_0_log.err")
    return {"wall_s": wall, "submit_s": submit.wall_s, "train_runtime_s": train_runtime(output), "job_id": job_id}


def run(work: Path, shim: Shim, repeat: int) -> Result:
    config = native_yaml(work)
    raw: dict[str, Any] = {"direct": [], "local": [], "slurm": [], "overrides": TRAIN}
    for i in range(repeat):  # interleaved, so a slow spell of the machine hits all three alike
        raw["direct"].append(run_direct(work, config, f"direct-{i}"))
        raw["local"].append(run_local(work, f"local-{i}"))
        raw["slurm"].append(run_slurm(work, shim, f"slurm-{i}"))
    return Result(rows(raw, repeat), raw)


def rows(raw: dict[str, Any], n: int) -> list[Row]:
    def med(who: str, key: str) -> float:
        return median([r[key] for r in raw[who]])

    def startup(who: str) -> float:
        return median([r["wall_s"] - r["train_runtime_s"] for r in raw[who]])

    d_rt, d_wall = med("direct", "train_runtime_s"), med("direct", "wall_s")
    out = []
    for who, label in (("local", "hpcft cluster=local"), ("slurm", "hpcft on Slurm")):
        rt, wall = med(who, "train_runtime_s"), med(who, "wall_s")
        row = rows_of(f"training: {label} vs llamafactory-cli", n)
        out += [
            row("train_runtime (s), median", fmt(rt), fmt(d_rt), fmt(rt / d_rt), "<= 1.05", rt / d_rt <= TARGET_RATIO),
            row("wall time (s), median", fmt(wall), fmt(d_wall), fmt(wall / d_wall)),
            row("start-up overhead (s): median wall - train_runtime, minus direct's",
                fmt(startup(who) - startup("direct")), "0", "", "report"),
        ]  # fmt: skip
    return out
