"""Benchmark 1: submit latency of a 3-stage pipeline, against the floor.

hpcft: `python -m hpcft model=tiny_llama cluster=slurmlab` (compose, type, validate, write the
run directory, 3 sbatch calls through submitit). Floor: `floor_submit.py`, a Python process
that composes the same config with Hydra (hpcft's `compose_config`, one composition: the
framework is named, as hpcft infers it) and calls `sbatch` three times on pre-written scripts
(hpcft's own dry-run scripts). Both go through the same shim, which adds `--hold`; every job is
cancelled right after the measurement. Also: the modules the submit path imports and the peak
RSS of the submitting process.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from benchmarks.common import BENCH, PYTHON, Result, Row, Shim, Timed, calls, fmt, median, rows_of, run_timed, scancel

OVERRIDES = ["model=tiny_llama", "cluster=slurmlab"]
# hpcft picks the framework from the model's kind (a second composition); the floor names it,
# which composes the identical config once.
FLOOR_OVERRIDES = [*OVERRIDES, "framework=llamafactory"]
HEAVY = ("torch", "transformers", "deepspeed", "llamafactory", "FlagEmbedding", "wandb")
TARGET_RATIO = 1.2

# Runs a module or script as __main__ and, at exit, writes the names of every imported module.
PROBE = """
import atexit, json, runpy, sys
out, target = sys.argv[1], sys.argv[2]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = [target, *sys.argv[3:]]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def prepare_scripts(work: Path, shim: Shim) -> Path:
    """hpcft's own sbatch scripts from a dry run, `--dependency` lines removed (the floor passes
    the real job ids on the command line)."""
    root = work / "dry"
    run_timed([PYTHON, "-m", "hpcft", *OVERRIDES, f"run_root={root}", "dry_run=true"], shim.env(work / "x.log")).check()
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    scripts = work / "scripts"
    scripts.mkdir()
    for stage in ("train", "deploy", "eval"):
        text = (run / "dry_run" / f"{stage}.sbatch").read_text()
        (scripts / f"{stage}.sbatch").write_text(re.sub(r"(?m)^#SBATCH --dependency=.*\n", "", text))
    return scripts


def hpcft_argv(root: Path) -> list[str]:
    return ["-m", "hpcft", *OVERRIDES, f"run_root={root}"]


def floor_argv(scripts: Path, root: Path, name: str) -> list[str]:
    return [str(BENCH / "floor_submit.py"), "--name", name, str(scripts), *FLOOR_OVERRIDES, f"run_root={root}"]


def manifest_ids(root: Path) -> list[str]:
    ids = []
    for manifest in root.glob("*/manifest.json"):
        ids += [str(s["job_id"]) for s in json.loads(manifest.read_text())["stages"].values() if s.get("job_id")]
    return ids


def floor_ids(timed: Timed) -> list[str]:
    lines = timed.stdout.strip().splitlines()
    return list(json.loads(lines[-1])["job_ids"]) if lines else []


def measure(argv: list[str], shim: Shim, log: Path, ids_of: Any) -> dict[str, Any]:
    timed = run_timed([PYTHON, *argv], shim.env(log))
    try:
        timed.check()
    finally:
        scancel(ids_of(timed))
    return {"wall_s": timed.wall_s, "maxrss_mb": timed.maxrss_mb, "calls": calls(log)}


def imported(argv: list[str], shim: Shim, work: Path, ids_of: Any) -> list[str]:
    out = work / f"modules-{len(list(work.glob('modules-*')))}.json"
    timed = run_timed([PYTHON, "-c", PROBE, str(out), *argv], shim.env(work / "probe.log"))
    scancel(ids_of(timed))
    timed.check()
    modules: list[str] = json.loads(out.read_text())
    return modules


def run(work: Path, shim: Shim, repeat: int) -> Result:
    scripts = prepare_scripts(work, shim)
    raw: dict[str, Any] = {"hpcft": [], "floor": []}
    for i in range(repeat + 1):  # run 0 warms the caches and is not counted
        root = work / f"hpcft-{i}"
        h = measure(hpcft_argv(root), shim, work / f"hpcft-{i}.log", lambda _t, r=root: manifest_ids(r))
        f = measure(
            floor_argv(scripts, work / f"floor-{i}", f"benchfloor{i}"), shim, work / f"floor-{i}.log", floor_ids
        )
        if i:
            raw["hpcft"].append(h)
            raw["floor"].append(f)
    h_mods = imported(hpcft_argv(work / "probe-hpcft")[1:], shim, work, lambda _t: manifest_ids(work / "probe-hpcft"))
    f_mods = imported(floor_argv(scripts, work / "probe-floor", "benchfloorprobe"), shim, work, floor_ids)
    raw["modules"] = {"hpcft": len(h_mods), "floor": len(f_mods)}
    raw["heavy_modules"] = {"hpcft": heavy(h_mods), "floor": heavy(f_mods)}
    return Result(rows(raw, repeat), raw)


def heavy(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules if m.split(".")[0] in HEAVY})


def rows(raw: dict[str, Any], n: int) -> list[Row]:
    def med(who: str, key: str) -> float:
        return median([r[key] for r in raw[who]])

    h, f = med("hpcft", "wall_s"), med("floor", "wall_s")
    h_rss, f_rss = med("hpcft", "maxrss_mb"), med("floor", "maxrss_mb")
    sbatch = max(r["calls"]["sbatch"] for r in raw["hpcft"])
    found, floor_found = raw["heavy_modules"]["hpcft"], raw["heavy_modules"]["floor"]
    h_mods, f_mods = raw["modules"]["hpcft"], raw["modules"]["floor"]
    row, once = rows_of("latency", n), rows_of("latency", 1)
    return [
        row("submit 3-stage pipeline, median wall (s)", fmt(h), fmt(f), fmt(h / f), f"<= {TARGET_RATIO:g}",
            h / f <= TARGET_RATIO),
        row("sbatch calls per submission", str(sbatch), "3", "", "3", sbatch == 3),
        once(f"ML modules imported ({'/'.join(HEAVY)})", ", ".join(found) or "none", ", ".join(floor_found) or "none",
             "", "none", not found),
        once("modules imported (count)", str(h_mods), str(f_mods), fmt(h_mods / f_mods)),
        row("peak RSS of the submit process (MB)", fmt(h_rss), fmt(f_rss), fmt(h_rss / f_rss)),
    ]  # fmt: skip
