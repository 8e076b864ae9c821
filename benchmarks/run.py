"""Run hpcft's benchmarks against the local Slurm cluster; print a table and write JSON.

    .venv/bin/python benchmarks/run.py [--repeat 5]
        [--only latency,sweep,status,training,data,eval,retrieval,serving,keyguard,study,suites]
        [--sweep-budget 150] [--out benchmarks/results.json]

Needs the local cluster up (`bash scripts/slurmlab/up.sh`; SLURM_CONF is taken from
/tmp/hpcft-slurmlab when not set) and the tiny model (`scripts/setup.sh`). Every job the
benchmarks submit is held or cancelled right after it is measured. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/run.py` from anywhere

from benchmarks import (
    data_check,
    eval_speed,
    latency,
    retrieval_eval,
    serving,
    status,
    study,
    suites_speed,
    sweep,
    training,
)
from benchmarks.common import REPO, Result, Row, Shim, table

ALL = ("latency", "sweep", "status", "training", "data", "eval", "retrieval", "serving", "keyguard", "study", "suites")
LAB_CONF = Path("/tmp/hpcft-slurmlab/etc/slurm.conf")
README = REPO / "benchmarks" / "README.md"
MARKERS = ("<!-- results:start -->", "<!-- results:end -->")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument(
        "--sweep-budget",
        type=float,
        default=150,
        help="seconds for rounds of the 256-point sweep benchmark: at least one round, at most --repeat (default 150)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--update-readme", action="store_true", help=f"put the table into {README}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (run dirs, logs)")
    args = parser.parse_args(argv)
    args.only = [b.strip() for b in args.only.split(",") if b.strip()]
    if unknown := set(args.only) - set(ALL):
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {ALL}")
    return args


def check_environment(selected: list[str]) -> None:
    if "SLURM_CONF" not in os.environ and LAB_CONF.is_file():
        os.environ["SLURM_CONF"] = str(LAB_CONF)
    needs_slurm = bool(
        set(selected) & {"latency", "sweep", "status", "training", "study"}
    )  # data, eval, suites: no cluster
    if needs_slurm and subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        sys.exit("benchmarks: Slurm is not reachable; start the local cluster: bash scripts/slurmlab/up.sh")
    home = Path(os.environ.get("HPCFT_HOME") or Path.home() / ".cache" / "hpcft")
    if "training" in selected and not (home / "models" / "tiny_llama").is_dir():
        sys.exit(f"benchmarks: no tiny model in {home}/models; run scripts/setup.sh")


def guarded(name: str, results: dict[str, Result], fn: Callable[[], Result]) -> None:
    """Run one benchmark; a failure is recorded (and shown in the table) and the others go on."""
    print(f"== {name} ...", flush=True)
    start = time.monotonic()
    try:
        results[name] = fn()
    except Exception as e:
        traceback.print_exc()
        why = (str(e).splitlines() or [""])[0][:100]
        results[name] = Result([Row(name, "FAILED", type(e).__name__, why, met=False)])
    results[name].raw["seconds"] = round(time.monotonic() - start, 1)
    print(f"   {name}: {results[name].raw['seconds']} s", flush=True)


def run_all(args: argparse.Namespace, work: Path) -> dict[str, Result]:
    shim, results = Shim(work), dict[str, Result]()
    only = args.only
    if "latency" in only:
        # A submission takes ~0.5 s and the machine's noise is of that order: 3x the runs.
        guarded("latency", results, lambda: latency.run(work / "latency", shim, 3 * args.repeat))

    def status_hook(sweep_dir: Path, array_ids: list[str]) -> None:
        guarded("status", results, lambda: status.run(sweep_dir, array_ids, shim, work / "status", args.repeat))

    if "sweep" in only:
        hook = status_hook if "status" in only else None
        guarded("sweep", results, lambda: sweep.run(work / "sweep", shim, args.repeat, args.sweep_budget, hook))
    elif "status" in only:

        def standalone() -> Result:  # the status benchmark needs a sweep of its own
            h = sweep.run_hpcft(work / "status", shim, "sweep")
            return status.run(Path(h["sweep_dir"]), h["array_ids"], shim, work / "status", args.repeat)

        guarded("status", results, standalone)
    if "training" in only:
        guarded("training", results, lambda: training.run(work / "training", shim, args.repeat))
    if "data" in only:
        guarded("data", results, lambda: data_check.run(work / "data", args.repeat))
    if "eval" in only:
        guarded("eval", results, lambda: eval_speed.run(work / "eval", args.repeat))
    if "retrieval" in only:
        guarded("retrieval", results, lambda: retrieval_eval.run(work / "retrieval", args.repeat))
    if "serving" in only:
        guarded("serving", results, lambda: serving.run(work / "serving", args.repeat))
    if "keyguard" in only:
        guarded("keyguard", results, lambda: serving.run_keyguard(work / "keyguard", args.repeat))
    if "study" in only:
        guarded("study", results, lambda: study.run(work / "study", shim, args.repeat))
    if "suites" in only:
        guarded("suites", results, lambda: suites_speed.run(work / "suites", args.repeat))
    return results


def versions() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        return done.stdout.strip() if done.returncode == 0 else "?"

    return {
        "hpcft_commit": out(["git", "rev-parse", "--short", "HEAD"]),
        "hpcft_dirty": str(bool(out(["git", "status", "--porcelain", "--", "hpcft", "hydra_plugins", "conf"]))),
        "slurm": out(["sbatch", "--version"]),
        "python": platform.python_version(),
    }


def update_readme(text: str) -> None:
    readme = README.read_text()
    start, end = readme.index(MARKERS[0]) + len(MARKERS[0]), readme.index(MARKERS[1])
    README.write_text(readme[:start] + "\n" + text + "\n" + readme[end:])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_environment(args.only)
    started, load_before = time.time(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="hpcft-bench-"))
    try:
        for name in args.only:
            (work / name).mkdir(exist_ok=True)
        results = run_all(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    total = time.time() - started
    rows = [row for name in ALL if name in results for row in results[name].rows]
    meta = {
        "command": " ".join(["python", "benchmarks/run.py", *argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "total_s": round(total, 1),
        "cpus": os.cpu_count(),
        "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        **versions(),
    }
    text = table(rows)
    footer = f"{meta['date']}, {meta['cpus']} CPUs, {meta['slurm']}, hpcft {meta['hpcft_commit']}; total {total:.0f} s"
    print(f"\n{text}\n\n{footer}")
    args.out.write_text(json.dumps({"meta": meta, "results": {k: v.to_json() for k, v in results.items()}}, indent=1))
    print(f"JSON: {args.out}")
    if args.update_readme:
        update_readme(f"{text}\n\n{footer}")
    return 1 if any(r.metric == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
