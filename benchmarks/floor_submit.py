"""The submit floor: compose the same config with Hydra, then `sbatch` each stage's script.

    python benchmarks/floor_submit.py [--points N] [--name NAME] SCRIPTS_DIR OVERRIDE ...

SCRIPTS_DIR holds `train.sbatch`, `deploy.sbatch`, `eval.sbatch`, written beforehand (hpcft's
own dry-run scripts without their `--dependency` line). The config is composed once with
hpcft's Hydra composition (`compose_config`, the same config tree and overrides) and resolved;
then, for each of N points, three `sbatch --parsable` calls chain the stages the way hpcft
does (deploy `afterok:train`, eval `afterok:train,after:deploy`). N=1 is the latency floor;
N=256 is the one-sbatch-per-point sweep baseline. Prints the job ids and the seconds
spent inside sbatch as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from omegaconf import OmegaConf

from hpcft.configure import compose_config


class Submitter:
    """Calls sbatch on the pre-written scripts; keeps the seconds spent inside sbatch."""

    def __init__(self, scripts: Path) -> None:
        self.scripts = scripts
        self.sbatch_s = 0.0

    def sbatch(self, stage: str, name: str, dependency: str | None) -> str:
        argv = ["sbatch", "--parsable", f"--job-name={name}.{stage}"]
        if dependency:
            argv.append(f"--dependency={dependency}")
        start = time.perf_counter()
        out = subprocess.run([*argv, str(self.scripts / f"{stage}.sbatch")], capture_output=True, text=True, check=True)
        self.sbatch_s += time.perf_counter() - start
        return out.stdout.strip().split(";")[0]

    def point(self, name: str) -> list[str]:
        train = self.sbatch("train", name, None)
        deploy = self.sbatch("deploy", name, f"afterok:{train}")
        return [train, deploy, self.sbatch("eval", name, f"afterok:{train},after:{deploy}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scripts", type=Path)
    parser.add_argument("--points", type=int, default=1)
    parser.add_argument("--name", default="floor")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = OmegaConf.to_container(compose_config(args.overrides), resolve=True)
    assert isinstance(cfg, dict)
    submitter = Submitter(args.scripts)
    ids = [job for i in range(args.points) for job in submitter.point(f"{args.name}-{i}")]
    print(json.dumps({"job_ids": ids, "sbatch_s": submitter.sbatch_s}))


if __name__ == "__main__":
    main()
