"""When the deploy stage gives up on a server: `deploy.ready_timeout_s` runs from when the
weights it serves are prepared (a LoRA merged in the server's own process), so a large
model's merge does not use up the time its server has to start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpcft.configure import load_config
from hpcft.frameworks import adapter_for
from hpcft.jobs import deploy
from hpcft.jobs.spec import DeployJob
from hpcft.rundir import RunLayout

MERGE_S = 100.0
"""When, on the fake clock, the server says its weights are ready."""


class Running:
    """A server process that never exits (and never answers: `answers` is faked)."""

    returncode = None

    def poll(self) -> None:
        return None


def give_up_after(monkeypatch: pytest.MonkeyPatch, weights: Path | None, marker: Path) -> float:
    """Seconds on a fake clock until wait_ready gives up on a server that never answers,
    whose weights are ready (`marker` written) at MERGE_S."""
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds
        if clock[0] >= MERGE_S:
            marker.touch()

    monkeypatch.setattr(deploy.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(deploy.time, "sleep", sleep)
    monkeypatch.setattr(deploy, "answers", lambda *_: False)
    job = DeployJob(run_dir="/r", serve_argv=[], model_name="m", ready_timeout_s=10)
    process: Any = Running()
    with pytest.raises(RuntimeError, match="did not answer http://node:1/v1/models within 10 s"):
        deploy.wait_ready(process, "http://node:1/v1/models", job, "key", "m", weights)
    return clock[0]


def test_the_ready_timeout_runs_from_when_the_weights_are_ready(monkeypatch, tmp_path):
    marker = tmp_path / "weights_ready"
    assert MERGE_S + 10 <= give_up_after(monkeypatch, marker, marker) <= MERGE_S + 12


def test_without_weights_to_prepare_it_runs_from_the_start(monkeypatch, tmp_path):
    assert 10 <= give_up_after(monkeypatch, None, tmp_path / "weights_ready") <= 12


def test_a_lora_adapter_is_merged_by_the_server_that_then_says_so(tmp_path):
    layout = RunLayout(tmp_path / "run")
    for finetuning, merges in (("lora", True), ("full", False)):
        cfg = load_config(["model=tiny_llama", f"framework.finetuning_type={finetuning}"])
        job = adapter_for(cfg).deploy_job(layout)
        merge = ["--export", str(layout.native / "export.yaml"), "--export-done", str(layout.weights_ready)]
        assert (job.serve_argv[4:8] == merge) is merges  # after `python -m hpcft.serve_llamafactory api.yaml`
        assert job.weights_ready == (str(layout.weights_ready) if merges else None)
