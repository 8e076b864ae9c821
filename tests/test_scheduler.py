"""Parsing what squeue/sacct print, and the number of scheduler calls (the subprocess
boundary is faked here; tests/integration/test_day2.py reads the real cluster)."""

from __future__ import annotations

from hpcft.scheduler import JobInfo, StageState, cancel_jobs, parse_sacct, parse_squeue, query_jobs


class FakeScheduler:
    def __init__(self, squeue: str = "", sacct: str = "") -> None:
        self.calls: list[list[str]] = []
        self.outputs = {"squeue": squeue, "sacct": sacct, "scancel": ""}

    def __call__(self, argv: list[str]) -> str:
        self.calls.append(argv)
        return self.outputs[argv[0]]


def test_fifty_jobs_cost_two_calls():
    queued = "\n".join(f"{i}|PENDING|0:00||Dependency|r.train" for i in range(100, 125))
    done = "\n".join(f"{i}|COMPLETED|00:01:0{i % 10}|node1" for i in range(125, 150))
    fake = FakeScheduler(queued, done)
    jobs = query_jobs([str(i) for i in range(100, 150)], run=fake)
    assert len(fake.calls) == 2
    assert len(jobs) == 50 and jobs["100"].state == "PENDING" and jobs["149"].state == "COMPLETED"


def test_all_queued_costs_one_call():
    fake = FakeScheduler("7|RUNNING|1:02|node[1-2]|None|run-a.train")
    assert query_jobs(["7"], run=fake)["7"] == JobInfo("7", "RUNNING", "1:02", "node[1-2]", "None", "run-a.train")
    assert len(fake.calls) == 1


def test_states_are_described_completely():
    cases = {
        JobInfo("1", "PENDING", reason="DependencyNeverSatisfied"): "PENDING (dependency never satisfied)",
        JobInfo("1", "PENDING", reason="Priority"): "PENDING (Priority)",
        JobInfo("1", "OUT_OF_MEMORY"): "OUT_OF_MEMORY (ran out of memory)",
        JobInfo("1", "NODE_FAIL"): "NODE_FAIL (a node failed)",
        JobInfo("1", "TIMEOUT"): "TIMEOUT (hit its time limit)",
        JobInfo("1", "PREEMPTED"): "PREEMPTED (preempted)",
        JobInfo("1", "CANCELLED"): "CANCELLED",
        JobInfo("1", "COMPLETED"): "COMPLETED",
    }
    for info, text in cases.items():
        assert info.describe() == text
    assert StageState.FAILED.final and not StageState.RUNNING.final


def test_states_are_mapped_once_from_what_slurm_prints():
    assert StageState.of("CANCELLED by 0") is StageState.CANCELLED
    assert StageState.of("REQUEUE_HOLD").active and not StageState.of("REQUEUE_HOLD").final
    assert StageState.of("SOMETHING_NEW") is StageState.UNKNOWN and not StageState.UNKNOWN.active
    assert {s for s in StageState if s.failed} >= {StageState.FAILED, StageState.TIMEOUT, StageState.OUT_OF_MEMORY}
    assert not StageState.CANCELLED.failed and StageState.CANCELLED.final  # the user's, not a failure
    assert StageState.SUBMITTED.active and not StageState.NOT_SUBMITTED.active
    assert parse_sacct("5|CANCELLED by 0|00:00:01|n1\n")["5"].state is StageState.CANCELLED
    assert parse_squeue("6|SUSPENDED|0:01|n1|None|r.train\n")["6"].state.active


def test_sacct_keeps_the_last_attempt_and_strips_by_uid():
    jobs = parse_sacct("5|REQUEUED|00:00:50|node1\n5|COMPLETED|00:01:10|node1\n6|CANCELLED by 0|00:00:00|\n")
    assert jobs["5"].state == "COMPLETED" and jobs["6"].state == "CANCELLED"


def test_unknown_jobs_and_garbage_lines():
    fake = FakeScheduler("garbage\n", "")
    assert query_jobs(["9"], run=fake)["9"].state == "UNKNOWN"
    assert parse_squeue("") == {}


def test_cancel_is_one_call():
    fake = FakeScheduler()
    cancel_jobs(["3", "1", "2", "1"], run=fake)
    assert fake.calls == [["scancel", "1", "2", "3"]]
    cancel_jobs([], run=fake)
    assert len(fake.calls) == 1


def test_jobs_named_after_a_run_are_found_even_when_unrecorded():
    queue = "7|RUNNING|1:02|n1|None|run-a.train\n8|PENDING|0:00||None|run-a.deploy\n9|PENDING|0:00||None|run-ab.train"
    fake = FakeScheduler(queue)
    jobs = query_jobs(["7"], run=fake, name_prefixes=["run-a"])
    assert sorted(jobs) == ["7", "8"] and jobs["8"].name == "run-a.deploy"  # not run-ab's job
    assert len(fake.calls) == 1


def test_unsubmitted_stages_reach_no_scheduler_call():
    fake = FakeScheduler()
    assert query_jobs(["", "None"], run=fake) == {} and fake.calls == []


def test_a_job_name_with_a_bar_is_kept_whole():
    assert parse_squeue("5|PENDING|0:00||None|odd|name.train")["5"].name == "odd|name.train"


def test_the_innermost_exception_of_a_failed_job_is_found_under_the_wrappers():
    from hpcft.rundir import innermost_error

    log = "\n".join(
        [
            "eval: 150/300 rows",
            "Traceback (most recent call last):",
            '  File "/usr/lib/python3.11/http/client.py", line 287, in _read_status',
            '    raise RemoteDisconnected("Remote end closed connection without response")',
            "http.client.RemoteDisconnected: Remote end closed connection without response",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            '  File "hpcft/client.py", line 20, in post_json',
            "urllib.error.URLError: <urlopen error Remote end closed connection without response>",
            "submitit ERROR (2026-12-01 10:00:00,000) - Submitted job triggered an exception",
            "Traceback (most recent call last):",
            '  File "submitit/core/_submit.py", line 11, in <module>',
            "submitit.core.utils.FailedJobError: Job (task=0) failed during processing",
            "srun: error: node1: task 0: Exited with exit code 1",
        ]
    )
    assert innermost_error(log) == "http.client.RemoteDisconnected: Remote end closed connection without response"
    overflow = "Traceback (most recent call last):\n  File 'x', line 1\nOverflowError: cannot convert float infinity"
    assert innermost_error(overflow) == "OverflowError: cannot convert float infinity"
    assert innermost_error("srun: error: node1: task 0: Exited with exit code 1") is None
