"""The deploy job's watch on its eval job: a server is released when its eval has left the
queue for good, also when the eval could not say so.

The eval writes `<run>/deploy/stop` when it ends; it cannot when it is cancelled (`scancel`
sends SIGTERM, then SIGKILL), killed, or its disk is full. So the deploy job also looks, every
`LOOK_EVERY_S`, for the eval's job id (in the run's `manifest.json`, written on the login
node as each `sbatch` returns) in `squeue`. A requeued eval stays in the queue (pending) and
keeps its server; one that is gone (not listed, or forgotten by Slurm) on `GONE_LOOKS` looks
in a row has ended. When `squeue` cannot answer (the controller busy, no Slurm client in
the job's environment) the eval counts as there: a server is never stopped on a guess.
Local runs (no Slurm) are not watched: the local runner cancels the deploy itself.
"""

from __future__ import annotations

import json
import subprocess
import time

from hpcft.rundir import RunLayout

LOOK_EVERY_S = 30.0
GONE_LOOKS = 2


def eval_job_id(layout: RunLayout, stage: str = "eval") -> str | None:
    """The run's eval job id (or another stage's: `123`, `123_4` for a sweep's point) once
    recorded; None for a local run, a run without that stage, or before its `sbatch` returned."""
    try:
        record = json.loads(layout.manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("executor") != "slurm":
        return None
    job_id = (record.get("stages") or {}).get(stage, {}).get("job_id")
    return str(job_id) if job_id else None


def in_queue(job_id: str) -> bool | None:
    """Whether Slurm still holds the job (pending, requeued, running, completing); None when
    `squeue` cannot tell."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode == 0:
        return bool(out.stdout.strip())  # a finished job is no longer listed
    return False if "Invalid job id" in out.stderr else None  # forgotten (after MinJobAge)


class EvalWatch:
    """Whether the eval of each of some runs has left the queue without saying stop."""

    def __init__(self, layouts: list[RunLayout], every_s: float | None = None) -> None:
        self.layouts, self.every_s = layouts, LOOK_EVERY_S if every_s is None else every_s
        self.gone: dict[RunLayout, int] = dict.fromkeys(layouts, 0)
        self.next_look = time.monotonic() + self.every_s

    def left(self, layout: RunLayout) -> bool:
        return self.gone[layout] >= GONE_LOOKS

    def look(self) -> None:
        """Look at the queue, at most every `every_s`."""
        if time.monotonic() < self.next_look:
            return
        self.next_look = time.monotonic() + self.every_s
        for layout in self.layouts:
            job_id = eval_job_id(layout)
            there = in_queue(job_id) if job_id else None
            self.gone[layout] = self.gone[layout] + 1 if there is False else 0
            if self.gone[layout] == GONE_LOOKS:
                print(f"hpcft deploy: eval job {job_id} left the queue without saying it was done", flush=True)

    def done(self, layout: RunLayout) -> bool:
        """The eval of this run has ended: it said stop, or it left the queue."""
        return layout.stop_serving.exists() or self.left(layout)


class DeployWatch:
    """The eval's watch on its deploy job while it waits for the endpoint: a deploy job that
    left the queue (cancelled, killed, its node lost) publishes none and cannot say why, so
    the eval fails when it is gone on `GONE_LOOKS` looks in a row, `LOOK_EVERY_S` apart,
    instead of waiting `eval.endpoint_timeout_s`."""

    def __init__(self, layout: RunLayout, every_s: float | None = None) -> None:
        self.layout, self.every_s = layout, LOOK_EVERY_S if every_s is None else every_s
        self.gone, self.next_look = 0, time.monotonic() + self.every_s

    def left(self) -> str | None:
        """The deploy's job id once it has left the queue; None while it is there or unknown."""
        if time.monotonic() >= self.next_look:
            self.next_look = time.monotonic() + self.every_s
            job_id = eval_job_id(self.layout, "deploy")
            self.gone = self.gone + 1 if job_id and in_queue(job_id) is False else 0
            if self.gone >= GONE_LOOKS:
                return job_id
        return None
