"""The submit floor: compose the same config with Hydra, then `sbatch` each stage's script.

    python benchmarks/floor_submit.py SCRIPTS_DIR [--points N] [--name NAME] OVERRIDE ...

SCRIPTS_DIR holds `train.sbatch`, `deploy.sbatch`, `eval.sbatch`, written beforehand (hpcft's
own dry-run scripts without their `--dependency` line). The config is composed once with
hpcft's Hydra composition (`compose_config`, the same config tree and overrides) and resolved;
then, for each of N points, three `sbatch --parsable` calls chain the stages the way hpcft
does (deploy `afterok:train`, eval `afterok:train,after:deploy`). N=1 is the latency floor;
N=256 is the one-sbatch-per-point sweep baseline. Prints the job ids as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from omegaconf import OmegaConf

from hpcft.config.compose import compose_config

STAGES = ("train", "deploy", "eval")


def sbatch(script: Path, name: str, dependency: str | None) -> str:
    argv = ["sbatch", "--parsable", f"--job-name={name}"]
    if dependency:
        argv.append(f"--dependency={dependency}")
    out = subprocess.run([*argv, str(script)], capture_output=True, text=True, check=True).stdout
    return out.strip().split(";")[0]


def submit_point(scripts: Path, name: str) -> dict[str, str]:
    ids: dict[str, str] = {}
    ids["train"] = sbatch(scripts / "train.sbatch", f"{name}.train", None)
    ids["deploy"] = sbatch(scripts / "deploy.sbatch", f"{name}.deploy", f"afterok:{ids['train']}")
    ids["eval"] = sbatch(scripts / "eval.sbatch", f"{name}.eval", f"afterok:{ids['train']},after:{ids['deploy']}")
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scripts", type=Path)
    parser.add_argument("--points", type=int, default=1)
    parser.add_argument("--name", default="floor")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = OmegaConf.to_container(compose_config(args.overrides), resolve=True)
    assert isinstance(cfg, dict)
    ids = [submit_point(args.scripts, f"{args.name}-{i}") for i in range(args.points)]
    print(json.dumps({"job_ids": [j for point in ids for j in point.values()]}))


if __name__ == "__main__":
    main()
