"""An eval stopped to be requeued keeps its server; one that has ended releases it, also when
it cannot write the marker; a half-written save of an earlier attempt does not fail the next.

The requeue is submitit's own: its USR2 handler (what Slurm's time-limit warning runs in a
job) checkpoints the pickled stage, requeues and exits; only the job environment it asks to
requeue is a stand-in, recording the call instead of running `scontrol requeue`."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
import submitit
from submitit.core.job_environment import SignalHandler
from submitit.core.submission import process_job
from submitit.core.utils import DelayedSubmission, JobPaths, UncompletedJobError

from benchmarks.standin_engine import Engine, Faults, Server
from hpcft.frameworks.llamafactory import alpaca_eval_job
from hpcft.jobs import evaluate, requeue
from hpcft.jobs.entry import ResumableStage
from hpcft.jobs.spec import EvalJob
from hpcft.rundir import RunLayout, write_atomic, write_json_atomic

SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGCONT)


@pytest.fixture(autouse=True)
def fresh_job_process(monkeypatch):
    """Each test is a new job process: no requeue asked yet, submitit's signal handlers undone."""
    monkeypatch.setattr(requeue, "_requeue", threading.Event())
    handlers = {s: signal.getsignal(s) for s in SIGNALS}
    yield
    for s, handler in handlers.items():
        signal.signal(s, handler)


class SignalledAt(Engine):
    """A stand-in engine that sends this process USR2 (Slurm's time-limit warning) once it
    has answered `at` rows."""

    at: int = 50

    def leave(self, prompt: str | None) -> None:
        super().leave(prompt)
        if sum(self.answered.values()) == self.at and prompt is not None:
            os.kill(os.getpid(), signal.SIGUSR2)


class Requeues:
    """Stands in for SlurmJobEnvironment inside submitit's handler: `scontrol requeue` recorded."""

    global_rank = 0

    def __init__(self) -> None:
        self.countdowns: list[int] = []

    def _requeue(self, countdown: int) -> None:
        self.countdowns.append(countdown)


def eval_run(root: Path, rows: int, server: Server) -> tuple[EvalJob, RunLayout]:
    evalset = root / "eval.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    evalset.write_text(
        "".join(json.dumps({"instruction": f"q{i}", "output": f"answer to q{i}"}) + "\n" for i in range(rows))
    )
    layout = RunLayout(root / "run")
    write_json_atomic(layout.endpoint, server.endpoint)
    job = alpaca_eval_job(str(layout.root), str(evalset), concurrency=4, retries=1, retry_backoff_s=0.01)
    return job, layout


def attempt_under_submitit(job: EvalJob, pickled: Path, requeues_left: int) -> tuple[Requeues, DelayedSubmission]:
    """The eval as submitit runs it in a job with a 1-minute limit (so a USR2 is a time-out)."""
    delayed = DelayedSubmission(ResumableStage(), job)  # type: ignore[no-untyped-call]
    delayed.set_timeout(1, requeues_left)
    env = Requeues()
    handler = SignalHandler(env, JobPaths(pickled.parent, job_id="7"), delayed)  # type: ignore[arg-type]
    signal.signal(signal.SIGUSR2, handler.checkpoint_and_try_requeue)
    return env, delayed


def test_an_eval_requeued_at_its_time_limit_keeps_its_server_and_resumes_asking_no_row_twice(tmp_path):
    answered: Counter[str] = Counter()
    with Server(SignalledAt(latency_s=0.005, answered=answered)) as server:
        job, layout = eval_run(tmp_path / "a", 300, server)
        env, delayed = attempt_under_submitit(job, tmp_path / "a" / "7_submitted.pkl", requeues_left=3)
        with pytest.raises(SystemExit):
            delayed.result()
        assert env.countdowns == [2]  # submitit requeued it as timed out
        assert not layout.stop_serving.exists()  # the deploy keeps serving for the next attempt
        kept = layout.predictions.read_text().splitlines()
        assert 50 <= len(kept) < 300 and len(kept) == sum(answered.values())  # the rows in flight were kept
        # The requeued attempt runs what submitit checkpointed.
        DelayedSubmission.load(tmp_path / "a" / "7_submitted.pkl").result()
    assert layout.stop_serving.read_text() == "eval done\n"
    assert len(answered) == 300 and set(answered.values()) == {1}  # no row asked twice
    with Server(Engine(latency_s=0.001)) as again:  # the same rows, uninterrupted
        job_b, layout_b = eval_run(tmp_path / "b", 300, again)
        evaluate.run_eval(job_b)
    assert layout.predictions.read_text() == layout_b.predictions.read_text()
    same = {k: v for k, v in json.loads(layout_b.metrics.read_text()).items() if k != "evalset"}
    assert {k: v for k, v in json.loads(layout.metrics.read_text()).items() if k != "evalset"} == same


def test_an_eval_whose_requeues_are_spent_releases_the_server(tmp_path):
    with Server(SignalledAt(latency_s=0.005)) as server:
        job, layout = eval_run(tmp_path, 300, server)
        env, delayed = attempt_under_submitit(job, tmp_path / "7_submitted.pkl", requeues_left=0)
        with pytest.raises(UncompletedJobError, match="timed-out too many times"):
            delayed.result()
    assert env.countdowns == [] and layout.stop_serving.read_text() == "eval ended: UncompletedJobError\n"


def test_a_failed_eval_releases_the_server_and_a_full_disk_hides_not_why_it_failed(tmp_path, monkeypatch, capsys):
    with Server(Engine(latency_s=0.001, faults=Faults(fail_from=10))) as server:
        job, layout = eval_run(tmp_path, 100, server)
        with pytest.raises(Exception, match="500"):
            evaluate.run_eval(job)
        assert layout.stop_serving.read_text() == "eval ended: HTTPStatusError\n"
        layout.stop_serving.unlink()

        def full_disk(path: Path, text: str, **kwargs: object) -> None:
            if path == layout.stop_serving:
                raise OSError(errno.ENOSPC, "No space left on device")
            write_atomic(path, text, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(evaluate, "write_atomic", full_disk)
        with pytest.raises(Exception, match="500"):  # the server's failure, not the marker's
            evaluate.run_eval(job)
    assert not layout.stop_serving.exists()
    assert "No space left on device); the deploy job stops its server when it sees" in capsys.readouterr().out


def test_a_save_left_half_written_by_an_earlier_attempt_does_not_fail_the_next(tmp_path, monkeypatch):
    """A full disk or a kill mid-save leaves submitit's `.save_tmp`; its next save refuses
    to start while one is there, which failed a requeued job at its very end."""
    folder = tmp_path / "slurm"
    folder.mkdir()
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_PROCID", "0")
    paths = JobPaths(folder, job_id="42", task_id=0)
    with Server(Engine(latency_s=0.001)) as server:
        job, layout = eval_run(tmp_path, 5, server)
        DelayedSubmission(ResumableStage(), job).dump(paths.submitted_pickle)  # type: ignore[no-untyped-call]
        for saved in (paths.result_pickle, paths.submitted_pickle):
            requeue.saving(saved).write_bytes(b"\x80\x04half")  # what ENOSPC left mid-write
        process_job(folder)
    outcome, summary = pickle.loads(paths.result_pickle.read_bytes())
    assert outcome == "success" and summary.startswith("eval: "), summary
    assert not list(folder.glob("*.save_tmp")) and layout.stop_serving.exists()


def test_the_stage_callables_start_clean_only_inside_a_submitit_job():
    assert requeue.clear_leftover_saves() == []  # no job environment: nothing to clear
    assert not requeue.is_requeue(SystemExit(-1))  # an exit with no checkpoint asked is no requeue
    requeue.mark_requeue()
    assert requeue.is_requeue(SystemExit(-1)) and not requeue.is_requeue(UncompletedJobError("spent"))
    # submitit's `scontrol requeue`, stopped with the rest of the attempt by the requeue it
    # asked for, is a requeue; one that fails on its own (exit status 1) is the job's end.
    killed = subprocess.run(["sh", "-c", "kill -TERM $$"], check=False).returncode
    assert requeue.is_requeue(subprocess.CalledProcessError(killed, ["scontrol", "requeue", "295"]))
    assert not requeue.is_requeue(subprocess.CalledProcessError(1, ["scontrol", "requeue", "295"]))
    assert not requeue.is_requeue(subprocess.CalledProcessError(killed, ["sacct", "-j", "295"]))
    assert isinstance(ResumableStage(), submitit.helpers.Checkpointable)  # type: ignore[no-untyped-call]
