"""Day-2 commands (`status`, `cancel`, `logs`, `report`) under faults: an unreachable
scheduler, a tampered run record, a full disk, sweep folders without any point. Each answers
in one line (or shows what it can and says what it could not), never with a traceback.
Stand-in Slurm commands (tests/conftest.py); tests/integration/test_day2.py uses the real cluster."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

import hpcft.manifest
from hpcft.cli import main

RUN = ("model=tiny_llama", "cluster=slurmlab")
UNREACHABLE = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"


def submitted_run(run_root: Path) -> Path:
    assert main([*RUN, f"run_root={run_root}"]) == 0
    (run,) = run_root.iterdir()
    return run


def one_line(text: str) -> str:
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    return text


def test_status_and_cancel_say_in_one_line_that_the_scheduler_is_unreachable(
    tmp_path, stand_in_slurm, capsys, monkeypatch
):
    run = submitted_run(tmp_path / "runs")
    capsys.readouterr()
    squeue = stand_in_slurm.queue.parent / "squeue"
    squeue.write_text(f"#!/bin/sh\necho '{UNREACHABLE}' >&2\nexit 1\n")
    for command in ("status", "cancel"):
        assert main([command, str(run)]) == 1
        err = one_line(capsys.readouterr().err)
        assert err == f"hpcft: the scheduler is unreachable: squeue failed (exit 1): {UNREACHABLE}\n"
    assert not stand_in_slurm.cancelled.exists()
    monkeypatch.setenv("PATH", str(squeue.parent / "none"))  # no Slurm client at all on this machine
    assert main(["status", str(run)]) == 1
    assert "the scheduler is unreachable: squeue could not run" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("job_id", ["abc", "-5", "0", "12; scancel -u me", 3.5, True])
def test_a_run_record_whose_job_id_is_no_job_id_is_named_with_file_and_field(job_id, tmp_path, stand_in_slurm, capsys):
    run = submitted_run(tmp_path / "runs")
    asked = stand_in_slurm.queue.parent / "sacct.args"
    (stand_in_slurm.queue.parent / "sacct").write_text(f'#!/bin/sh\necho "$@" >> {asked}\n')
    record = json.loads((run / "manifest.json").read_text())
    record["stages"]["train"]["job_id"] = job_id
    (run / "manifest.json").write_text(json.dumps(record))
    capsys.readouterr()
    said = f"{run / 'manifest.json'}: stages.train.job_id: {job_id!r} is not a job id (a positive integer)"
    for command in (["logs", str(run)], ["report", str(run)]):
        assert main(command) == 2
        assert one_line(capsys.readouterr().err) == f"hpcft: error: {said}\n"
    # status shows it as it shows any unreadable record, and finds the run's jobs by name
    assert main(["status", str(run)]) == 0
    assert said in capsys.readouterr().out
    assert not asked.exists()  # no id of the record reaches sacct; squeue finds the run's jobs by name


def test_status_on_a_full_disk_shows_the_states_and_says_it_could_not_record_them(
    tmp_path, stand_in_slurm, capsys, monkeypatch
):
    run = submitted_run(tmp_path / "runs")
    stand_in_slurm.accounting.write_text("100|COMPLETED|00:01:00|n1\n101|RUNNING|00:00:10|n2\n")

    def full(path, data):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hpcft.manifest, "write_json_atomic", full)
    capsys.readouterr()
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "COMPLETED" in out and "RUNNING" in out
    assert f"could not record these states in {run / 'manifest.json'}: No space left on device" in out
    assert json.loads((run / "manifest.json").read_text())["stages"]["train"]["state"] == "SUBMITTED"
    assert main(["cancel", str(run)]) == 0
    captured = capsys.readouterr()
    assert "cancelled" in captured.out and "Traceback" not in captured.err
    assert captured.err.splitlines() == [
        f"hpcft: could not record {what} in {run / 'manifest.json'}: No space left on device"
        for what in ("these states", "the cancel")
    ]
    assert sorted(stand_in_slurm.cancelled.read_text().split()) == ["101", "102"]


def sweep_folder(tmp_path: Path, *extra: str) -> Path:
    args = ["-m", *RUN, "framework.lora_rank=4,8", f"run_root={tmp_path / 'runs'}", "dry_run=true", *extra]
    assert main(args) == 0
    (sweep,) = (tmp_path / "runs").iterdir()
    return sweep


def refusal(command: list[str], capsys) -> str:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert main(command) == 2
    return one_line(capsys.readouterr().err)


def test_a_dry_run_sweep_or_study_says_what_it_is_to_logs_and_report(tmp_path, capsys):
    sweep = sweep_folder(tmp_path)
    for command in ("logs", "report"):
        err = refusal([command, str(sweep)], capsys)
        assert f"{sweep}: a dry-run sweep, nothing was submitted (its job scripts are in {sweep / 'dry_run'})" in err
    study = sweep_folder(tmp_path / "s", "hydra/sweeper=optuna", "framework.lora_rank=choice(4,8)")
    for command in ("logs", "report"):
        assert f"{study}: a dry-run Optuna study, nothing was submitted" in refusal([command, str(study)], capsys)


def test_a_sweep_cut_off_before_any_point_and_one_with_points(tmp_path, capsys):
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "multirun.yaml").write_text("hydra: {}\n")
    for command in ("logs", "report"):
        err = refusal([command, str(cut)], capsys)
        assert "a sweep whose submission stopped before any point was recorded" in err
        assert f"python -m hpcft cancel {cut} cancels them" in err
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"points": [{"num": 0, "run_dir": str(sweep / "0")}]}))
    err = refusal(["logs", str(sweep)], capsys)
    assert f"{sweep}: a sweep of 1 points, each with its own logs; give one of their folders ({sweep / '0'} ...)" in err
    assert "only an Optuna study has a controller" in refusal(["logs", str(sweep), "--stage", "controller"], capsys)


def test_cancelling_a_study_records_it_in_trials_json(tmp_path, stand_in_slurm, capsys):
    args = ["-m", "hydra/sweeper=optuna", "framework.lora_rank=choice(4,8)", *RUN, f"run_root={tmp_path / 'runs'}"]
    assert main(args) == 0
    (study,) = (tmp_path / "runs").iterdir()
    (study / "trials.json").write_text(json.dumps({"status": "running", "trials": [], "best": None}))
    stand_in_slurm.queue.write_text(f"100|RUNNING|0:42|n1|None|{study.name}.controller\n")
    scancel = stand_in_slurm.queue.parent / "scancel"  # a cancelled job leaves the queue
    scancel.write_text(f'#!/bin/sh\necho "$@" >> {stand_in_slurm.cancelled}\n: > {stand_in_slurm.queue}\n')
    stand_in_slurm.accounting.write_text("100|CANCELLED by 0|0:43|n1\n")
    assert main(["cancel", str(study)]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert json.loads((study / "trials.json").read_text())["status"] == "cancelled"
    assert main(["status", str(study)]) == 0
    out = capsys.readouterr().out
    assert "CANCELLED" in out and "controller stopped: cancelled (python -m hpcft cancel)" in out


def test_a_study_whose_controller_failed_says_why_in_status_logs_and_report(tmp_path, stand_in_slurm, capsys):
    """The controller ran the Optuna sweeper, which refused the search space before any trial."""
    args = ["-m", "hydra/sweeper=optuna", "framework.lora_rank=choice(4,8)", *RUN, f"run_root={tmp_path / 'runs'}"]
    assert main(args) == 0
    (study,) = (tmp_path / "runs").iterdir()
    record = json.loads((study / "controller.json").read_text())
    log = Path(record["logs"]["stderr"])
    log.parent.mkdir(parents=True, exist_ok=True)
    cause = "ValueError: The `low` value must be smaller than or equal to the `high` value (low=0.01, high=0.0001)."
    log.write_text(f'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n{cause}\n')
    stand_in_slurm.accounting.write_text("100|FAILED|0:12|n1\n")
    capsys.readouterr()
    assert main(["status", str(study)]) == 0
    assert f"controller stopped: {cause}" in capsys.readouterr().out
    assert main(["logs", str(study)]) == 0
    captured = capsys.readouterr()
    assert f"controller stopped: {cause}" in captured.err and cause in captured.out
    err = refusal(["report", str(study)], capsys)
    assert f"{study}: an Optuna study with no trial yet; its controller (job 100) stopped: {cause}" in err


def test_a_controller_that_fails_records_why_in_trials_json(tmp_path):
    from hpcft.study import ControllerRecord, Objective
    from hpcft.sweep.controller import run_controller

    sweep = tmp_path / "study"
    sweep.mkdir()
    objective = Objective(stage="train", metric="train_loss", direction="minimize")
    storage = f"sqlite:///{tmp_path / 'gone' / 'optuna.db'}"  # a folder that does not exist
    ControllerRecord(
        sweep_dir=str(sweep),
        overrides=[],
        implied_keys=[],
        objective=objective,
        n_trials=2,
        n_jobs=1,
        storage=storage,
        study_name="s",
        poll_s=0.01,
    ).write()
    with pytest.raises(Exception) as raised:
        run_controller(str(sweep))
    trials = json.loads((sweep / "trials.json").read_text())
    assert trials["status"] == "failed"
    assert trials["error"] == f"{type(raised.value).__name__}: {str(raised.value).splitlines()[0]}"
