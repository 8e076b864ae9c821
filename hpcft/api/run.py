"""`Run`: the handle of a submitted pipeline, from Python.

    run = Run("runs/tiny_llama-llamafactory-20261128-101500-abc123")   # or model.update()
    run.status()            # {"train": "RUNNING", "deploy": "PENDING", "eval": "PENDING"}
    run.progress()          # TrainProgress(step=40, total=120, loss=1.23, eta_s=35.0), as status shows it
    run.wait()              # blocks, printing each change; raises if a stage fails
    run.metrics()           # eval/metrics.json
    run.client().chat("hi") # the served model (while it serves; deploy.keep_serving=true)
    run.model_path          # the fine-tuned weights; an error if there are none

Everything is read from the run directory and the scheduler (at most two calls per look),
the same sources as `python -m hpcft status`; nothing is cached between calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpcft.checkpoints import best_of
from hpcft.client import EndpointClient
from hpcft.config.schema import StageName
from hpcft.errors import StageFailedError, UserError
from hpcft.manifest import Manifest, read_manifest
from hpcft.progress import TrainProgress, read_train_progress
from hpcft.rundir import RunLayout, failure_excerpt, fine_tuned_weights, read_json, tail
from hpcft.runstate import RunState, cancel_runs, read_states
from hpcft.scheduler import StageState


class Run:
    def __init__(self, path: str | Path) -> None:
        self.layout = RunLayout(Path(path).expanduser().resolve())
        if not self.layout.manifest.is_file():
            raise UserError(f"{path}: not a run directory (no manifest.json)")

    def __repr__(self) -> str:
        return f"Run({str(self.layout.root)!r})"

    @property
    def path(self) -> Path:
        return self.layout.root

    @property
    def manifest(self) -> Manifest:
        return read_manifest(self.path)

    def _state(self) -> RunState:
        (state,) = read_states([self.path])
        return state

    def status(self) -> dict[str, StageState]:
        """Each stage's state: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ... (a `StageState`,
        which is also the state's name as a `str`)."""
        return {name: info.state for name, info in self._state().stages.items()}

    def progress(self) -> TrainProgress | None:
        """The training's progress as `status` shows it (step/total, last loss, ETA) from its
        last record, while it runs or after; None before its first record."""
        return read_train_progress(self.layout.train_progress)

    def wait(
        self, timeout_s: float | None = None, poll_s: float = 10.0, say: Callable[[str], None] | None = print
    ) -> dict[str, StageState]:
        """Block until every stage but a still-serving deploy has ended; print each change.
        Raises `StageFailedError` naming the failed stage with its log's tail, `TimeoutError`
        after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        shown: dict[str, str] = {}
        while True:
            state = self._state()
            for name, info in state.stages.items():
                if say and shown.get(name) != info.describe():
                    say(f"{self.path.name} {name}: {info.describe()}")
                    shown[name] = info.describe()
            self._raise_if_failed(state)
            pending = [n for n, i in state.stages.items() if n != StageName.deploy and not i.state.final]
            if not pending:
                return self.status()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.path.name}: still waiting for {', '.join(pending)} after {timeout_s} s")
            time.sleep(poll_s)

    def _raise_if_failed(self, state: RunState) -> None:
        for name, info in state.stages.items():
            if info.state.failed or (info.state is StageState.CANCELLED and name != StageName.deploy):
                logs = (state.manifest.stage(name).logs if state.manifest else None) or {}
                where = f"\n  log: {logs['stderr']}\n{failure_excerpt(logs['stderr'])}" if logs else ""
                raise StageFailedError(f"{self.path.name}: stage {name!r} ended {info.describe()}{where}")

    def logs(self, stage: str = "train", lines: int = 50, stream: str = "stderr") -> str:
        """The last lines of a stage's log ("" before the job starts)."""
        logs = self.manifest.logs_of(stage)
        return tail(logs[stream], lines) if logs else ""

    def metrics(self) -> dict[str, Any]:
        """The eval stage's metrics; an error saying where eval stands if they are not written yet."""
        if not self.layout.metrics.is_file():
            eval_state = self.status().get("eval", "not a stage of this run")
            raise UserError(f"{self.layout.metrics}: no metrics yet (eval: {eval_state})")
        data: dict[str, Any] = read_json(self.layout.metrics)
        return data

    def best_checkpoint(self) -> dict[str, Any] | None:
        """`eval.checkpoints`: the step the eval picked by the objective (`{step, path, metric,
        value, direction, final}`), whose weights `model_path` gives; None when only the final
        model was scored."""
        return best_of(self.metrics())

    def predictions(self) -> list[dict[str, Any]]:
        """One `{prompt, label, predict}` per eval row (LLM runs)."""
        if not self.layout.predictions.is_file():
            raise UserError(f"{self.layout.predictions}: no predictions yet")
        text = self.layout.predictions.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def endpoint(self) -> dict[str, Any]:
        """`{"base_url", "model", ...}` of the deployed server, once it serves."""
        if not self.layout.endpoint.is_file():
            raise UserError(f"{self.layout.endpoint}: the server has not published an endpoint yet")
        data: dict[str, Any] = read_json(self.layout.endpoint)
        if data.get("stopped"):
            raise UserError(f"{self.layout.endpoint}: the server has stopped (its eval ended)")
        return data

    def client(self, timeout_s: float = 300.0) -> EndpointClient:
        """A client for the deployed, OpenAI-compatible server (`.chat`, `.embed`, `.rerank`, `.openai()`)."""
        return EndpointClient.from_endpoint(self.endpoint(), timeout_s)

    @property
    def model_path(self) -> Path:
        """The fine-tuned weights: the best checkpoint where the eval picked one
        (`eval.checkpoints`), else the merged model if deploy made one, else the train output."""
        return fine_tuned_weights(self.path)

    def cancel(self, stage: str | None = None) -> list[str]:
        """Cancel the run's live jobs, or `stage` and the stages after it, as `hpcft cancel`
        does (the same code: finished jobs are skipped, the manifest records it). Returns
        the stages cancelled."""
        if self.manifest.executor != "slurm":
            return []
        return [name for _, name, _ in cancel_runs([self.path], stage)]
