"""The commands hpcft prints after a submission (`Follow: python -m hpcft status <run>`, the
run and sweep folders, a local run's report line) are pasted into shells: a run or sweep
folder with quotes, `$(...)`, backticks or `;` in its name comes out as one intact argument,
and nothing in it runs. Stand-in Slurm commands (tests/conftest.py)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from hpcft.cli import main
from hpcft.cli.run import closing_summary
from hpcft.rundir import RunLayout

HOSTILE = "it's $(touch PWN1) `touch PWN2`; touch PWN3 #"
NAME = '"' + HOSTILE + '"'


def pasted(command: str, cwd: Path) -> list[list[str]]:
    """Each `python ...` command of a printed line, run by bash with `python` printing its
    arguments one per line: the arguments the user's shell would pass."""
    script = 'python() { printf "%s\\0" "$@"; printf "\\n"; }\n' + command
    out = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, check=True).stdout
    return [line.split("\0")[:-1] for line in out.splitlines()]


def line_after(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(label)).removeprefix(label)


def test_a_submitted_runs_printed_commands_are_shell_safe(tmp_path, stand_in_slurm, capsys):
    runs = tmp_path / "runs"
    assert main(["model=tiny_llama", "cluster=slurmlab", f"name={NAME}", f"run_root={runs}"]) == 0
    (root,) = runs.iterdir()
    assert root.name.startswith(HOSTILE)
    out = capsys.readouterr().out
    assert shlex.split(line_after(out, "Run directory: ")) == [str(root)]
    follow = line_after(out, "Follow: ").replace("   |   ", "\n")
    assert pasted(follow, tmp_path) == [
        ["-m", "hpcft", "status", str(root), "--watch", "10"],
        ["-m", "hpcft", "logs", str(root), "-f"],
    ]
    assert list(tmp_path.rglob("PWN*")) == []


def test_a_submitted_sweeps_printed_commands_are_shell_safe(tmp_path, stand_in_slurm, capsys):
    sweep = tmp_path / HOSTILE
    args = ["-m", "model=tiny_llama", "cluster=slurmlab", "stages=[train]", "framework.learning_rate=1e-3,1e-4"]
    assert main([*args, f"run_root={tmp_path}/runs", f'hydra.sweep.dir="{sweep}"']) == 0
    out = capsys.readouterr().out
    assert shlex.split(line_after(out, "Sweep directory: ")) == [str(sweep)]
    assert pasted(line_after(out, "Follow: "), tmp_path) == [["-m", "hpcft", "status", str(sweep)]]
    assert list(tmp_path.rglob("PWN*")) == []


def test_a_local_runs_report_line_is_shell_safe(tmp_path):
    root = tmp_path / HOSTILE
    report = line_after(closing_summary(RunLayout(root)), "report:").strip()
    assert pasted(report, tmp_path) == [["-m", "hpcft", "report", str(root)]]
    assert list(tmp_path.rglob("PWN*")) == []
