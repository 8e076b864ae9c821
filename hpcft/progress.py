"""A running train stage's progress, read on the login node: step/total, the last loss, an ETA.

The train job appends one JSON line per logging step in LLaMA-Factory's `trainer_log.jsonl`
shape (`current_steps`, `total_steps`, `loss`, `elapsed_time` and `remaining_time` as
`H:MM:SS` or `N days, H:MM:SS`): LLaMA-Factory writes it itself; for FlagEmbedding hpcft's
callback (`hpcft.jobs.progress`) writes the same fields. Where each framework's file lies is its
adapter's knowledge (`TrainJob.progress`, recorded in the manifest). Only the file's tail is
read: a long run's log grows by a line per logging step, and `status` reads every point of a
sweep at each refresh.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

TAIL_BYTES = 16_384
"""How much of the file's end is read: many records (each ~300 bytes), so the last loss is
found even when the records after it (an eval's, the final summary) carry none."""

_DURATION = re.compile(r"^(?:(\d+) days?, )?(\d+):(\d{2}):(\d{2})$")


@dataclass(frozen=True, kw_only=True)
class TrainProgress:
    """Where a training stands, as its last record says."""

    step: int
    """Optimizer steps done."""
    total: int
    """Optimizer steps planned (0 when the trainer did not know)."""
    loss: float | None
    """The last training loss logged; None before the first."""
    eta_s: float | None
    """Seconds left: the trainer's estimate less the time since it was written; None when unknown."""

    def describe(self) -> str:
        """`step 40/100, loss 1.234, ETA 2 min`."""
        parts = [f"step {self.step}/{self.total}" if self.total else f"step {self.step}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.eta_s is not None:
            parts.append(f"ETA {duration_text(self.eta_s)}")
        return ", ".join(parts)


def parse_duration(text: object) -> float | None:
    """Seconds of `str(datetime.timedelta)` without a fraction (`1:02:03`, `2 days, 0:00:05`)."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def duration_text(seconds: float) -> str:
    """`45 s`, `12 min`, `2 h 05 min`, `3 d 04 h`: as precise as a person waiting needs."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def tail_records(path: Path, tail_bytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The JSON objects on the last whole lines of `path` (a line cut by the read's start, or
    being written, is skipped); [] when the file cannot be read."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - tail_bytes, 0))
            lines = f.read().split(b"\n")
    except OSError:
        return []
    if size > tail_bytes:
        lines = lines[1:]  # the first line read starts mid-record
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def progress_record(
    *, step: int, total: int, logs: dict[str, Any], since: tuple[float, int] | None, now: float
) -> dict[str, Any]:
    """One line of the log in LLaMA-Factory's fields, for a trainer that writes none
    (hpcft.jobs.progress): the step, the loss and epoch if `logs` has them, and the time
    left at the rate measured `since` (time, step) of this attempt's first step."""
    record: dict[str, Any] = {"current_steps": step, "total_steps": total}
    record |= {k: logs[k] for k in ("loss", "epoch") if _number(logs.get(k)) is not None}
    record["percentage"] = round(step / total * 100, 2) if total else 100
    if since is not None:
        elapsed = now - since[0]
        rate = (step - since[1]) / elapsed if elapsed > 0 else 0.0
        record["elapsed_time"] = str(timedelta(seconds=int(elapsed)))
        if rate > 0:
            record["remaining_time"] = str(timedelta(seconds=int(max(total - step, 0) / rate)))
    return record


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_train_progress(path: Path, now: float | None = None) -> TrainProgress | None:
    """The training's progress from the tail of its JSON-lines log; None before its first
    record (or when the file is not such a log)."""
    records = [r for r in tail_records(path) if _number(r.get("current_steps")) is not None]
    if not records:
        return None
    last = records[-1]
    loss = next((value for r in reversed(records) if (value := _number(r.get("loss"))) is not None), None)
    step, total = int(last["current_steps"]), int(_number(last.get("total_steps")) or 0)
    eta = _seconds_left(records, total)
    if eta is not None:  # the estimate was made when the line was written; the clock has run since
        eta = 0.0 if total and step >= total else max(eta - _age(path, now), 0.0)
    return TrainProgress(step=step, total=total, loss=loss, eta_s=eta)


MIN_SPAN_S = 10.0
"""The least elapsed time between two records to measure a rate by (the log says whole seconds)."""


def _seconds_left(records: list[dict[str, Any]], total: int) -> float | None:
    """The time left at the rate of this attempt's records in the tail; else the trainer's
    own `remaining_time`. LLaMA-Factory's estimate divides the time since the attempt began
    by every step since step 0, so after a resume from step 5000 it is far too short; the
    records of one attempt (their elapsed time never goes back) give the rate it trains at."""
    last = records[-1]
    first, first_s = last, parse_duration(last.get("elapsed_time"))
    for record in reversed(records[:-1]):
        at_s = parse_duration(record.get("elapsed_time"))
        if first_s is None or at_s is None or at_s > first_s:
            break  # an earlier attempt's record (its clock began before this one's), or no clock
        first, first_s = record, at_s
    span_s = (parse_duration(last.get("elapsed_time")) or 0.0) - (first_s or 0.0)
    steps = int(last["current_steps"]) - int(first["current_steps"])
    if span_s >= MIN_SPAN_S and steps > 0:
        return max(total - int(last["current_steps"]), 0) * span_s / steps
    return parse_duration(last.get("remaining_time"))


def _age(path: Path, now: float | None) -> float:
    """Seconds since the file was last written (0 when it cannot be told)."""
    try:
        return max((now or time.time()) - path.stat().st_mtime, 0.0)
    except OSError:
        return 0.0
