"""Reading job states from Slurm: all jobs of any number of runs in at most two calls.

`squeue` knows the jobs still queued or running (with the pending reason, e.g. a dependency
that can never be satisfied); `sacct` knows the finished ones. One call each, for every job
at once: never one call per job, which trips the controller's RPC limits on big sweeps.
"""

from __future__ import annotations

import getpass
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from hpcft.errors import SchedulerUnreachable

Runner = Callable[[list[str]], str]


class StageState(StrEnum):
    """Where a stage's job stands: Slurm's job states (`squeue`/`sacct` spell them so) and
    hpcft's own before a job exists. A `str` too, so manifests hold the plain name."""

    NOT_SUBMITTED = "NOT_SUBMITTED"
    SUBMITTED = "SUBMITTED"
    UNKNOWN = "UNKNOWN"
    """Slurm has forgotten the job, or said a state this list does not know."""
    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    RESIZING = "RESIZING"
    REQUEUED = "REQUEUED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    REQUEUE_FED = "REQUEUE_FED"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    REVOKED = "REVOKED"
    SPECIAL_EXIT = "SPECIAL_EXIT"

    def __repr__(self) -> str:
        return repr(self.value)

    @classmethod
    def of(cls, text: str) -> StageState:
        """The state Slurm printed (`CANCELLED by 0` is CANCELLED), UNKNOWN for any other."""
        word = text.split()[0] if text.strip() else ""
        return cls.__members__.get(word, cls.UNKNOWN)

    @property
    def final(self) -> bool:
        """The job has ended and will not run again by itself."""
        return self in _FINAL

    @property
    def failed(self) -> bool:
        """The job ended without finishing its work (a cancel is the user's, not a failure)."""
        return self in _FAILED

    @property
    def active(self) -> bool:
        """The job is queued, running or held: it may still run, and can be cancelled."""
        return not self.final and self not in (StageState.NOT_SUBMITTED, StageState.UNKNOWN)


_FINAL = frozenset(
    {
        StageState.COMPLETED,
        StageState.CANCELLED,
        StageState.FAILED,
        StageState.TIMEOUT,
        StageState.PREEMPTED,
        StageState.OUT_OF_MEMORY,
        StageState.NODE_FAIL,
        StageState.BOOT_FAIL,
        StageState.DEADLINE,
        StageState.REVOKED,
        StageState.SPECIAL_EXIT,
    }
)
_FAILED = frozenset(
    {
        StageState.FAILED,
        StageState.TIMEOUT,
        StageState.OUT_OF_MEMORY,
        StageState.NODE_FAIL,
        StageState.BOOT_FAIL,
        StageState.DEADLINE,
        StageState.PREEMPTED,
        StageState.SPECIAL_EXIT,
    }
)
STATE_NOTES = {
    "OUT_OF_MEMORY": "ran out of memory",
    "NODE_FAIL": "a node failed",
    "TIMEOUT": "hit its time limit",
    "PREEMPTED": "preempted",
    "BOOT_FAIL": "nodes failed to boot",
    "DEADLINE": "missed its deadline",
}
"""A few words for the states whose name alone does not say what happened."""


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: StageState
    elapsed: str = ""
    nodes: str = ""
    reason: str = ""
    """Why a pending job waits (Dependency, Priority, DependencyNeverSatisfied, ...)."""
    name: str = ""
    """The job's name (`<run dir>.<stage>`, `<sweep dir>.<stage>` for arrays), when queued."""

    def describe(self) -> str:
        if self.state == "PENDING" and self.reason == "DependencyNeverSatisfied":
            return "PENDING (dependency never satisfied)"
        if self.state == "PENDING" and self.reason and self.reason != "None":
            return f"PENDING ({self.reason})"
        note = STATE_NOTES.get(self.state)
        return f"{self.state} ({note})" if note else self.state


UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out on send/recv", "Zero Bytes were transmitted")
"""What Slurm's clients say when slurmctld does not answer (down, a dead port, hung, overloaded)."""


def unreachable_said(text: str) -> bool:
    """Whether a Slurm client's error says that the controller could not be reached."""
    return any(words in text for words in UNREACHABLE)


def run_command(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


JOB_ID = re.compile(r"[1-9][0-9]*(_[0-9]+)?")
"""A Slurm job id as hpcft records it: `123`, or `123_4` for an array task."""


def is_job_id(text: str) -> bool:
    return JOB_ID.fullmatch(text) is not None


def ask(run: Runner, argv: list[str]) -> str:
    """A Slurm command's output; `SchedulerUnreachable` naming the command when it fails or is missing."""
    try:
        return run(argv)
    except subprocess.CalledProcessError as e:
        said = str(e.stderr or e.stdout or "").strip().splitlines()
        raise SchedulerUnreachable(
            f"the scheduler is unreachable: {argv[0]} failed (exit {e.returncode})" + (f": {said[-1]}" if said else "")
        ) from None
    except OSError as e:
        raise SchedulerUnreachable(f"the scheduler is unreachable: {argv[0]} could not run ({e.strerror})") from None


SQUEUE_FORMAT = "%i|%T|%M|%N|%r|%j"


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Lines of `squeue -h -o %i|%T|%M|%N|%r|%j` (the name last: it may hold a `|`)."""
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 5)
        if len(parts) == 6:
            job_id, state, elapsed, nodes, reason, name = parts
            jobs[job_id] = JobInfo(job_id, StageState.of(state), elapsed, nodes, reason, name)
    return jobs


def named_after(job: JobInfo, prefixes: Sequence[str]) -> bool:
    """Whether a job belongs to one of the runs or sweeps whose folder names are `prefixes`:
    hpcft names every job `<folder>.<stage>`, and folder names are unique."""
    return any(job.name.startswith(f"{prefix}.") for prefix in prefixes)


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """Lines of `sacct -X -n -P -o JobID,State,Elapsed,NodeList`; the last row of an id wins
    (a requeued job has one row per attempt)."""
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            job_id, state, elapsed, nodes = parts
            jobs[job_id] = JobInfo(job_id, StageState.of(state), elapsed, nodes)
    return jobs


def query_jobs(
    job_ids: Sequence[str], run: Runner = run_command, name_prefixes: Sequence[str] = ()
) -> dict[str, JobInfo]:
    """States of all the given jobs, in at most two scheduler calls; also every queued job
    named after one of `name_prefixes` (a job a killed submission left unrecorded)."""
    ids = sorted({str(j) for j in job_ids if j and str(j) != "None"})
    if not ids and not name_prefixes:
        return {}
    # By user rather than by id: squeue fails outright when one id has left the queue.
    # -r: one line per array task (123_4), not one folded line per array (123_[4-9]).
    queued = parse_squeue(ask(run, ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", SQUEUE_FORMAT]))
    strays = {j: info for j, info in queued.items() if j not in ids and named_after(info, name_prefixes)}
    missing = [j for j in ids if j not in queued]
    finished: dict[str, JobInfo] = {}
    if missing:
        finished = parse_sacct(
            ask(run, ["sacct", "-X", "-n", "-P", "-j", ",".join(missing), "-o", "JobID,State,Elapsed,NodeList"])
        )
    return {**{j: queued.get(j) or finished.get(j) or JobInfo(j, StageState.UNKNOWN) for j in ids}, **strays}


def cancel_jobs(job_ids: Sequence[str], run: Runner = run_command) -> None:
    """One `scancel` for all of them."""
    ids = sorted({str(j) for j in job_ids if j})
    if ids:
        ask(run, ["scancel", *ids])


def cancel_run_jobs(
    names: Sequence[str], job_ids: Sequence[str], run: Runner = run_command, rounds: int = 3, pause_s: float = 1.0
) -> list[str]:
    """Cancel the given jobs and every queued job named after one of `names` (run or sweep
    folders). An `sbatch` cut off by Ctrl-C may still queue its job a moment later, so the
    queue is looked at again for a few rounds. Never raises: this runs while failing."""
    cancelled: list[str] = []
    todo = [str(j) for j in job_ids if j]
    for round_ in range(rounds):
        try:
            if round_:
                time.sleep(pause_s)
                queued = parse_squeue(ask(run, ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", SQUEUE_FORMAT]))
                todo = [j for j, info in queued.items() if named_after(info, names)]
            if todo:
                cancel_jobs(todo, run)
                cancelled += todo
        except SchedulerUnreachable:
            continue
    return sorted(set(cancelled))
