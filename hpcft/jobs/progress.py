"""In the training process: append the HF Trainer's progress to a JSON-lines file, in the
fields of LLaMA-Factory's `trainer_log.jsonl`, so `status` reads every framework's training
the same way (hpcft.progress). LLaMA-Factory writes its own file; this serves trainers that
write none (FlagEmbedding), registered by `hpcft.jobs.launch` when the adapter asks for it
(`PROGRESS_ENV`). Imports transformers: runs only inside jobs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import transformers.trainer
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hpcft.progress import progress_record

EVERY_S = 30.0
"""Between logging steps, a record at most this often: a slow step count still moves."""


class ProgressCallback(TrainerCallback):
    """Appends `current_steps`, `total_steps`, `loss`, `epoch`, `percentage`, `elapsed_time`
    and `remaining_time` at each log and at least every `EVERY_S` seconds, from the first
    process only. The rate is measured from this attempt's first step, so a resumed run's
    ETA counts neither its start-up nor the steps of the attempt before."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.first: tuple[float, int] | None = None
        self.written = 0.0

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        now = time.time()
        if self.first is None:
            self.first = (now, state.global_step)
        elif now - self.written >= EVERY_S:
            self._write(state, {}, now)

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: Any = None, **kw: Any
    ) -> None:
        self._write(state, logs if isinstance(logs, dict) else {}, time.time())

    def _write(self, state: TrainerState, logs: dict[str, Any], now: float) -> None:
        if not state.is_world_process_zero:
            return
        record = progress_record(step=state.global_step, total=state.max_steps, logs=logs, since=self.first, now=now)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.written = now


def register(path: str) -> None:
    """Give every Trainer this process makes the callback: the frameworks build their own
    Trainer, and each Trainer starts from `transformers.trainer.DEFAULT_CALLBACKS`."""
    callbacks: list[Any] = transformers.trainer.DEFAULT_CALLBACKS  # typed as classes; instances are taken too
    callbacks.append(ProgressCallback(Path(path)))
