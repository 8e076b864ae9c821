"""`python -m hpcft cancel [RUN_DIR ...] [--stage STAGE]`: cancel runs, or a stage and the
stages after it, with one `scancel` for everything; the manifests record it.

Examples:
  python -m hpcft cancel                      # the latest run, all stages
  python -m hpcft cancel runs/*               # every run
  python -m hpcft cancel runs/r1 --stage deploy   # deploy and eval; train goes on
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcft.cli.common import resolve_run_dirs, subcommand_parser
from hpcft.errors import UserError
from hpcft.rundir import read_json, write_json_atomic
from hpcft.scheduler import cancel_jobs, query_jobs


def stages_from(manifest: dict[str, Any], stage: str | None) -> list[str]:
    """The stage and every stage after it (they depend on it), or all stages."""
    names = list(manifest["stages"])
    if stage is None:
        return names
    if stage not in names:
        raise UserError(f"--stage {stage}: stages are {', '.join(names)}")
    return names[names.index(stage) :]


def main(argv: Sequence[str]) -> int:
    parser = subcommand_parser("cancel", __doc__)
    parser.add_argument("runs", nargs="*", help="run directories (default: the latest run)")
    parser.add_argument("--stage", help="cancel this stage and the ones after it")
    args = parser.parse_args(list(argv))
    targets: list[tuple[Path, dict[str, Any], str]] = []
    for run in resolve_run_dirs(args.runs):
        manifest = read_json(run / "manifest.json")
        if manifest["executor"] != "slurm":
            raise UserError(f"{run.name} ran on this machine (cluster=local); stop it with Ctrl-C")
        targets += [(run, manifest, name) for name in stages_from(manifest, args.stage)]
    ids = [str(m["stages"][name]["job_id"]) for _, m, name in targets if m["stages"][name]["job_id"]]
    live = {j for j, info in query_jobs(ids).items() if not info.final}
    cancel_jobs(sorted(live))
    for run, manifest, name in targets:
        if str(manifest["stages"][name]["job_id"]) in live:
            manifest["stages"][name]["state"] = "CANCELLED"
            print(f"cancelled {run.name} {name} (job {manifest['stages'][name]['job_id']})")
    for run, manifest in {run: m for run, m, _ in targets}.items():
        write_json_atomic(run / "manifest.json", manifest)
    if not live:
        print("nothing to cancel: every selected stage has already ended")
    return 0
