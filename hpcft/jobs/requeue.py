"""What a job knows about its own requeue, inside submitit.

Slurm warns a job `cluster.signal_delay_s` before its time limit (and a preemption) with
USR2. submitit's handler asks the stage for a checkpoint (`ResumableStage.checkpoint`, which
calls `mark_requeue`), runs `scontrol requeue` and exits with `SystemExit`; when the job's
requeues are spent it raises `UncompletedJobError` instead, and the job ends for good. A
stage tells the two apart with `is_requeue`: the eval keeps the deploy job serving through
a requeue and releases it only when it has really ended.

submitit saves a job's result (and, on requeue, the checkpointed job) through a
`<file>.save_tmp` and refuses to start a save while one is there ("A temporary saved file
already exists"). An attempt killed or out of disk space mid-save leaves one behind, and the
next attempt of the same job id would then fail at its very end, its work done:
`clear_leftover_saves` removes them when an attempt starts.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import submitit

_requeue = threading.Event()


def mark_requeue() -> None:
    """submitit asked this job for a checkpoint: it is about to be requeued (unless its
    requeues are spent, which then raises instead of exiting)."""
    _requeue.set()


def is_requeue(error: BaseException | None) -> bool:
    """The job is stopping to be requeued, not ending: submitit's exit after a checkpoint, or
    its `scontrol requeue` killed by a signal. The controller requeues the job before it
    answers, and then stops every process of the attempt, the waiting `scontrol` among them:
    submitit raises that as an error (seen in ci-like: the eval took it for its end, stopped
    the server, and every later attempt waited for an endpoint). `scontrol` that fails on its
    own (an unreachable controller) exits with a status instead, and the job really ends."""
    if not _requeue.is_set():
        return False
    return isinstance(error, SystemExit) or _killed_requeue(error)


def _killed_requeue(error: BaseException | None) -> bool:
    if not isinstance(error, subprocess.CalledProcessError) or error.returncode >= 0:
        return False
    command = [error.cmd] if isinstance(error.cmd, str) else list(error.cmd)
    return command[:2] == ["scontrol", "requeue"]


def saving(path: Path) -> Path:
    """Where submitit writes `path` before renaming it into place."""
    return path.with_suffix(path.suffix + ".save_tmp")


def clear_leftover_saves() -> list[Path]:
    """Remove this job's half-written saves from an earlier attempt (only one attempt of a job
    runs at a time, so any found at the start are stale); the paths removed. Outside a
    submitit job (a stage run directly), nothing."""
    try:
        env = submitit.JobEnvironment()
        paths = env.paths
    except (KeyError, RuntimeError):
        return []
    leftovers = [saving(paths.result_pickle)]
    if env.global_rank == 0:  # the task that checkpoints; the others only save their result
        leftovers.append(saving(paths.submitted_pickle))
    removed = [path for path in leftovers if path.exists()]
    for path in removed:
        path.unlink(missing_ok=True)
        print(f"hpcft: removed {path.name}, left half-written by an earlier attempt of this job", flush=True)
    return removed
