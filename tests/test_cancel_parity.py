"""`Run.cancel()` and `python -m hpcft cancel` are one code path (`hpcft.runstate`): the same
jobs cancelled, finished ones skipped, and the same manifest afterwards. Stand-in Slurm
commands (tests/conftest.py); tests/integration/test_day2.py cancels real jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpcft.api import Run
from hpcft.cli import main

RUN = ("model=tiny_llama", "cluster=slurmlab")


def submitted_run(run_root: Path) -> Path:
    before = set(run_root.iterdir()) if run_root.exists() else set()
    assert main([*RUN, f"run_root={run_root}"]) == 0
    (run,) = set(run_root.iterdir()) - before
    return run


def comparable(run: Path) -> dict[str, Any]:
    """The manifest without what differs between two runs by nature (names, ids, paths, times)."""
    record = json.loads((run / "manifest.json").read_text())
    return {
        "status": record["status"],
        "executor": record["executor"],
        "stages": {name: (s["state"], s["after"]) for name, s in record["stages"].items()},
    }


def test_the_api_and_the_command_line_cancel_alike(tmp_path, stand_in_slurm, capsys):
    by_api, by_cli = submitted_run(tmp_path / "runs"), submitted_run(tmp_path / "runs")
    # train has finished in both (jobs 100 and 103); deploy and eval are still queued
    stand_in_slurm.accounting.write_text("100|COMPLETED|00:01:00|n1\n103|COMPLETED|00:01:00|n1\n")
    assert Run(by_api).cancel() == ["deploy", "eval"]
    assert main(["cancel", str(by_cli)]) == 0
    assert "deploy" in capsys.readouterr().out
    assert sorted(stand_in_slurm.cancelled.read_text().split()) == ["101", "102", "104", "105"]
    assert comparable(by_api) == comparable(by_cli)
    assert comparable(by_api)["stages"]["train"][0] == "COMPLETED"
    assert comparable(by_api)["stages"]["eval"][0] == "CANCELLED"


def test_cancelling_one_stage_cancels_it_and_what_depends_on_it_alike(tmp_path, stand_in_slurm, capsys):
    by_api, by_cli = submitted_run(tmp_path / "runs"), submitted_run(tmp_path / "runs")
    assert Run(by_api).cancel("deploy") == ["deploy", "eval"]
    assert main(["cancel", str(by_cli), "--stage", "deploy"]) == 0
    assert comparable(by_api) == comparable(by_cli)
    assert [state for state, _ in comparable(by_cli)["stages"].values()] == ["SUBMITTED", "CANCELLED", "CANCELLED"]
