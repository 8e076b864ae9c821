"""A running training's progress as `status` shows it (step/total, last loss, ETA), read from
the tail of its log; a sweep's summary line; what `cancel` says of a sweep; `status --watch`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcft.cli import main
from hpcft.cli.status import render
from hpcft.progress import (
    TrainProgress,
    duration_text,
    parse_duration,
    progress_record,
    read_train_progress,
    tail_records,
)
from hpcft.rundir import RunLayout, write_json_atomic
from tests.test_submit_path_imports import HEAVY

FIXTURE = Path(__file__).parent / "fixtures" / "progress" / "trainer_log.jsonl"
"""LLaMA-Factory's `trainer_log.jsonl` (LogCallback.on_log's fields) at step 40 of 120: four
training records, then an eval's, which carries no `loss`."""


def log_at(path: Path, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE, path)
    written = time.time() - age_s
    os.utime(path, (written, written))
    return path


def test_the_last_record_gives_the_step_and_eta_and_the_last_loss_comes_from_the_last_record_with_one(tmp_path):
    progress = read_train_progress(log_at(tmp_path / "trainer_log.jsonl"))
    assert progress is not None and (progress.step, progress.total, progress.loss) == (40, 120, 1.2345)
    # the rate of the records: 30 steps in 13 s, so 80 steps left take 34.7 s
    assert progress.eta_s is not None and 33 <= progress.eta_s <= 35
    assert progress.describe() in (f"step 40/120, loss 1.234, ETA {s} s" for s in (33, 34))


def test_a_resumed_run_s_eta_comes_from_the_rate_it_trains_at_now(tmp_path):
    """LLaMA-Factory divides the time since the attempt began by every step since step 0:
    60 s into a resume from step 5000 it says 58 s are left of 4900 steps."""
    before = [{"current_steps": s, "total_steps": 10000, "loss": 1.0, "elapsed_time": f"0:{s // 100:02d}:00"}
              for s in range(4900, 5001, 50)]  # fmt: skip
    after = [
        {"current_steps": 5010, "total_steps": 10000, "elapsed_time": "0:00:20", "remaining_time": "3:23:00"},
        {"current_steps": 5100, "total_steps": 10000, "elapsed_time": "0:01:00", "remaining_time": "0:00:58"},
    ]
    path = tmp_path / "trainer_log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*before, *after]))
    progress = read_train_progress(path, now=path.stat().st_mtime)
    assert progress is not None and progress.eta_s == pytest.approx(4900 * 40 / 90)  # 90 steps in 40 s


def test_the_eta_counts_down_from_when_the_record_was_written(tmp_path):
    progress = read_train_progress(log_at(tmp_path / "trainer_log.jsonl", age_s=20))
    assert progress is not None and progress.eta_s is not None and 13 <= progress.eta_s <= 15
    stale = read_train_progress(log_at(tmp_path / "old.jsonl", age_s=3600))
    assert stale is not None and stale.eta_s == 0.0


def test_only_the_tail_of_a_long_log_is_read_and_a_half_written_line_is_skipped(tmp_path):
    path = tmp_path / "trainer_log.jsonl"
    line = json.dumps({"current_steps": 1, "total_steps": 10**6, "loss": 9.0, "remaining_time": "1 day, 2:03:04"})
    with path.open("w") as f:
        f.writelines(line + "\n" for _ in range(40_000))  # ~4 MB: a long run's log
        f.write(FIXTURE.read_text())
        f.write('{"current_steps": 41, "total_st')  # the trainer is writing this one now
    progress = read_train_progress(path)
    assert 0 < len(tail_records(path)) < 40_000 // 10  # the tail's records, not the whole log's
    assert progress is not None and (progress.step, progress.loss) == (40, 1.2345)


def test_no_progress_before_the_first_record_or_from_a_file_that_is_no_such_log(tmp_path):
    assert read_train_progress(tmp_path / "missing.jsonl") is None
    (tmp_path / "empty.jsonl").write_text("")
    assert read_train_progress(tmp_path / "empty.jsonl") is None
    (tmp_path / "other.jsonl").write_text('{"prompt": "x"}\n[1, 2]\nnot json\n')
    assert read_train_progress(tmp_path / "other.jsonl") is None


def test_durations_read_as_timedelta_writes_them_and_shown_as_a_person_reads_them():
    assert parse_duration("0:00:34") == 34 and parse_duration("12:03:04") == 43384
    assert parse_duration("2 days, 0:00:05") == 2 * 86400 + 5 and parse_duration("1 day, 1:00:00") == 90000
    assert parse_duration("") is None and parse_duration(None) is None and parse_duration("0:00:01.5") is None
    assert [duration_text(s) for s in (0, 45, 125, 3 * 3600 + 5 * 60, 2 * 86400 + 4 * 3600)] == [
        "0 s", "45 s", "2 min", "3 h 05 min", "2 d 04 h",
    ]  # fmt: skip
    assert TrainProgress(step=3, total=0, loss=None, eta_s=None).describe() == "step 3"


def local_run(root: Path, name: str, states: dict[str, str], files: dict[str, object] | None = None) -> Path:
    """A run of `cluster=local` (its states are its manifest's: no scheduler is asked)."""
    run = root / name
    stages = {stage: {"job_id": str(100 + i), "state": state} for i, (stage, state) in enumerate(states.items())}
    write_json_atomic(RunLayout(run).manifest, {"run_name": name, "executor": "local", "stages": stages})
    for relpath, data in (files or {}).items():
        write_json_atomic(run / relpath, data)
    return run


def row(text: str, run: Path, stage: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"{run.name} ") and f" {stage} " in line)


def test_status_shows_a_running_train_stage_step_loss_and_eta(tmp_path):
    run = local_run(tmp_path, "run", {"train": "RUNNING", "deploy": "PENDING", "eval": "PENDING"})
    log_at(RunLayout(run).train_progress)
    text, done = render([run])
    assert not done
    assert "step 40/120, loss 1.234, ETA 3" in row(text, run, "train")
    finished = local_run(tmp_path, "finished", {"train": "COMPLETED"})
    log_at(RunLayout(finished).train_progress)
    assert "step" not in render([finished])[0]  # a finished stage shows no progress
    rows = {"done": 150, "total": 300, "rows_per_s": 12.0, "eta_s": 750}
    states = {"train": "COMPLETED", "eval": "RUNNING"}
    evaluating = local_run(tmp_path, "evaluating", states, {"eval/progress.json": rows})
    assert row(render([evaluating])[0], evaluating, "eval").endswith("150/300 rows, 12.0 rows/s, ETA 12 min")


POINTS = {
    "lr1e-4_0": ({"train": "COMPLETED", "eval": "COMPLETED"}, {"rouge-l": 40.0, "bleu-4": 10.0}),
    "lr1e-3_1": ({"train": "COMPLETED", "eval": "COMPLETED"}, {"rouge-l": 61.2, "bleu-4": 30.0}),
    "lr1e-2_2": ({"train": "RUNNING", "eval": "PENDING"}, None),
    "lr1e-1_3": ({"train": "FAILED", "eval": "CANCELLED"}, None),
}


def sweep_of(root: Path) -> tuple[Path, list[Path]]:
    sweep = root / "my-sweep"
    runs = []
    for name, (states, metrics) in POINTS.items():
        files = {"eval/metrics.json": {**metrics, "rows": 6.0}} if metrics else {}
        runs.append(local_run(sweep, name, states, files))
    log_at(RunLayout(runs[2]).train_progress)
    points = [{"num": i, "overrides": [], "run_dir": str(run)} for i, run in enumerate(runs)]
    write_json_atomic(sweep / "sweep.json", {"points": points, "arrays": []})
    return sweep, runs


def test_a_sweep_starts_with_its_points_by_state_and_the_best_so_far(tmp_path, capsys):
    sweep, runs = sweep_of(tmp_path)
    assert main(["status", str(sweep)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "my-sweep: 4 points: 1 running, 2 completed, 1 failed; best so far: lr1e-3_1 eval.rouge-l=61.2"
    header = lines[1]
    state_width = header.index("elapsed") - header.index("state")
    assert state_width <= len("CANCELLED  ")  # metrics and progress stay out of the state column
    assert "rouge-l=61.20" in row("\n".join(lines), runs[1], "eval")
    assert "step 40/120, loss 1.234" in row("\n".join(lines), runs[2], "train")


def test_a_tall_sweep_table_ends_with_the_summary_line_too(tmp_path, capsys):
    sweep, _ = sweep_of(tmp_path)
    assert main(["status", str(sweep)]) == 0
    short = capsys.readouterr().out.splitlines()
    assert short[-1] != short[0]
    runs = [local_run(sweep, f"p{i}", {"train": "PENDING", "eval": "PENDING"}) for i in range(16)]  # 32 rows
    write_json_atomic(sweep / "sweep.json", {"points": [{"num": i, "run_dir": str(r)} for i, r in enumerate(runs)]})
    assert main(["status", str(sweep)]) == 0
    tall = capsys.readouterr().out.splitlines()
    assert tall[0] == "my-sweep: 16 points: 16 pending" and tall[-1] == tall[0]


def test_a_sweep_without_eval_is_judged_by_its_training_loss(tmp_path, capsys):
    sweep = tmp_path / "s"
    runs = [
        local_run(sweep, f"p{i}", {"train": "COMPLETED"}, {"train/all_results.json": {"train_loss": loss}})
        for i, loss in enumerate((0.9, 0.4, 0.7))
    ]
    write_json_atomic(sweep / "sweep.json", {"points": [{"num": i, "run_dir": str(r)} for i, r in enumerate(runs)]})
    assert main(["status", str(sweep)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "s: 3 points: 3 completed; best so far: p1 train.train_loss=0.4"


def slurm_sweep(root: Path, points: int) -> Path:
    """A sweep on Slurm whose every stage is queued: job `<100 + point>_<stage>`-like ids."""
    sweep = root / "big"
    records = []
    for p in range(points):
        run = sweep / f"p{p}"
        stages = {
            s: {"job_id": str(1000 + 3 * p + i), "state": "PENDING"} for i, s in enumerate(("train", "deploy", "eval"))
        }
        write_json_atomic(run / "manifest.json", {"run_name": run.name, "executor": "slurm", "stages": stages})
        records.append({"num": p, "run_dir": str(run)})
    write_json_atomic(sweep / "sweep.json", {"points": records, "arrays": []})
    return sweep


def test_cancel_says_what_it_cancelled_of_a_sweep_in_one_line(tmp_path, capsys, stand_in_slurm):
    sweep = slurm_sweep(tmp_path, points=20)
    jobs = [(json.loads((sweep / f"p{p}" / "manifest.json").read_text()), p) for p in range(20)]
    stand_in_slurm.queue.write_text(
        "".join(f"{s['job_id']}|PENDING|0:00|(None)|None|p{p}.{n}\n" for m, p in jobs for n, s in m["stages"].items())
    )
    assert main(["cancel", str(sweep)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["cancelled big: 60 jobs of 20 points (train 20, deploy 20, eval 20)"]
    assert len(stand_in_slurm.cancelled.read_text().split()) == 60


def test_watch_redraws_until_the_run_has_ended_without_a_terminal(tmp_path, capsys, monkeypatch):
    run = local_run(tmp_path, "run", {"train": "RUNNING"})
    log_at(RunLayout(run).train_progress)
    naps = []

    def training_ends(seconds: float) -> None:  # the run ends while `status` waits
        naps.append(seconds)
        local_run(tmp_path, "run", {"train": "COMPLETED"})

    monkeypatch.setattr("hpcft.cli.status.time.sleep", training_ends)
    assert main(["status", str(run), "--watch", "0.5"]) == 0
    out = capsys.readouterr().out
    assert naps == [0.5] and out.count("\n--- ") + out.startswith("--- ") == 2 and "\033" not in out
    assert "step 40/120" in out and "COMPLETED" in out.split("--- ")[-1]


def test_watch_refuses_an_interval_that_is_not_positive(tmp_path, capsys):
    run = local_run(tmp_path, "run", {"train": "RUNNING"})
    assert main(["status", str(run), "--watch", "0"]) == 2
    assert "--watch 0: the interval must be a number of seconds > 0" in capsys.readouterr().err


def test_the_records_hpcft_writes_for_a_trainer_read_back_as_llamafactory_s(tmp_path):
    """FlagEmbedding's HF Trainer writes no trainer_log.jsonl: hpcft's callback writes these
    (hpcft.jobs.progress; its wiring is tested on the cluster, test_slurm_embeddings.py)."""
    path, started = tmp_path / "trainer_log.jsonl", time.time() - 60
    records = [
        progress_record(step=0, total=100, logs={}, since=None, now=started),  # no rate yet
        progress_record(step=20, total=100, logs={"loss": 2.5, "epoch": 0.2}, since=(started, 0), now=started + 20),
        progress_record(step=30, total=100, logs={}, since=(started, 0), now=started + 30),  # between logging steps
    ]
    assert "remaining_time" not in records[0] and records[1]["remaining_time"] == "0:01:20"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.utime(path, (started + 30, started + 30))
    progress = read_train_progress(path, now=started + 40)
    assert progress == TrainProgress(step=30, total=100, loss=2.5, eta_s=60.0)


def test_status_and_cancel_import_nothing_heavy():
    """The login node reads progress files; the training stack stays in the jobs."""
    probe = "import sys, hpcft.cli.status, hpcft.cli.cancel; print(' '.join(sorted(sys.modules)))"
    modules = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []


def test_only_a_trainer_that_writes_no_progress_log_gets_hpcft_s_callback(tmp_path):
    """FlagEmbedding: its command runs under hpcft.jobs.launch, told where to write by the
    environment; LLaMA-Factory writes its own trainer_log.jsonl there already."""
    from hpcft.configure import load_config
    from hpcft.frameworks import adapter_for
    from hpcft.jobs.spec import PROGRESS_ENV

    layout = RunLayout(tmp_path)
    embedder = adapter_for(load_config(["model=minilm", "cluster=slurmlab"])).train_job(layout)
    assert embedder.env[PROGRESS_ENV] == str(layout.train_progress) and "hpcft.jobs.launch" in embedder.argv
    llm = adapter_for(load_config(["model=tiny_llama", "cluster=slurmlab"])).train_job(layout)
    assert PROGRESS_ENV not in llm.env


def test_the_python_api_reads_the_same_progress(tmp_path):
    from hpcft.api.run import Run

    run = local_run(tmp_path, "run", {"train": "RUNNING"})
    assert Run(run).progress() is None
    log_at(RunLayout(run).train_progress)
    progress = Run(run).progress()
    assert progress is not None and (progress.step, progress.total, progress.loss) == (40, 120, 1.2345)
