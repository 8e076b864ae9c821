"""The eval job's answers on disk: appended as they arrive, read back on resume, progress shown.

`predictions.jsonl` gets one line per answered row (`index` is the row's position in the eval
set), flushed at once: a job killed mid-eval loses at most the requests in flight. On a
rerun the lines already there are kept (a line cut off by the kill is dropped) and only the
other rows are sent. At the end the file is rewritten in row order.

A row the server refuses (`REFUSED_ROW`: a prompt longer than its context) gets a line with
`refused` (the server's reason) instead of `predict`: left out of the scores, counted, and
sent again by a rerun (after, say, a longer `deploy.max_model_len`). Past
`eval.max_refused_fraction` of the rows the eval fails, its answers kept.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from hpcft.rundir import write_atomic, write_json_atomic

PROGRESS_EVERY_S = 10.0
REFUSED_ROW = frozenset({400, 413, 422})
"""What a server answers to one row it cannot take; other errors (a wrong key or model name)
concern every row, and fail the eval at once."""


def read_answers(path: Path) -> dict[int, dict[str, Any]]:
    """Answers already on disk, by row index; a truncated last line is dropped."""
    done: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            if "refused" not in record:  # refused rows are asked again
                done[int(record["index"])] = record
        except (ValueError, KeyError, TypeError):
            continue  # the line a killed job was writing
    return done


def final_answers(path: Path, total: int) -> list[dict[str, Any]]:
    """Every row's record as `Answers.finish` wrote it (refused rows included), in row order:
    what scoring reads, once the server is no longer needed."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if [r["index"] for r in records] != list(range(total)):
        raise RuntimeError(f"{path}: {len(records)} answers in, not one for each of the {total} eval rows")
    return records


def answered(records: list[dict[str, Any]], max_refused_fraction: float) -> list[dict[str, Any]]:
    """The records the server answered; an error naming the first refusal where it refused
    more than `max_refused_fraction` of them."""
    kept = [r for r in records if "refused" not in r]
    refused = len(records) - len(kept)
    if not refused:
        return kept
    first = next(r["refused"] for r in records if "refused" in r)
    what = f"the server refused {refused} of {len(records)} eval rows"
    if refused > max_refused_fraction * len(records) or not kept:
        raise RuntimeError(
            f"{what}, more than eval.max_refused_fraction={max_refused_fraction} "
            f"(answers kept; a rerun sends only these): {first}"
        )
    print(f"eval: {what}, left out of the scores (a rerun asks them again); the first: {first}", flush=True)
    return kept


class Answers:
    """Collects answers (from many threads), appends each one, reports progress."""

    def __init__(self, path: Path, total: int, progress_path: Path) -> None:
        self.path, self.total, self.progress_path = path, total, progress_path
        self.done = read_answers(path)
        if self.done:  # drop a cut-off last line before appending after it
            write_atomic(
                path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.done.values()), private=True
            )
        self.resumed, self.started = len(self.done), time.monotonic()
        self.lock, self.next_report = threading.Lock(), 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        # Predictions hold the eval set's texts: only their owner reads them, whatever the umask.
        self.file = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a", encoding="utf-8")

    def add(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.file.flush()
            self.done[record["index"]] = record
            if time.monotonic() >= self.next_report or len(self.done) == self.total:
                self.report()

    def report(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        new = len(self.done) - self.resumed
        rate = new / elapsed
        eta = (self.total - len(self.done)) / rate if rate else None
        progress: dict[str, Any] = {"done": len(self.done), "total": self.total, "rows_per_s": round(rate, 2)}
        progress["eta_s"] = round(eta) if eta is not None else None
        eta_text = f", ETA {eta:.0f} s" if eta is not None else ""
        print(f"eval: {len(self.done)}/{self.total} rows, {rate:.1f} rows/s{eta_text}", flush=True)
        write_json_atomic(self.progress_path, progress)
        self.next_report = time.monotonic() + PROGRESS_EVERY_S

    def finish(self) -> list[dict[str, Any]]:
        """Every answer in row order, the file rewritten so."""
        self.file.close()
        records = [self.done[i] for i in sorted(self.done)]
        if len(records) != self.total:
            raise RuntimeError(f"{self.total - len(records)} of {self.total} eval rows have no answer")
        write_atomic(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), private=True)
        return records
