"""The deploy job's watch on its eval: a server is released when its eval has left the queue
without saying stop (cancelled, killed, its disk full), never while the eval is requeued or
`squeue` cannot tell. Against a stand-in `squeue` on PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hpcft.jobs import deploy, evalwatch
from hpcft.jobs.evalwatch import EvalWatch
from hpcft.rundir import RunLayout, write_json_atomic

FAKE_SQUEUE = """#!/bin/sh
echo "$@" >> "$SQUEUE_CALLS"
state=$(cat "$SQUEUE_STATE")
case "$state" in
  gone) exit 0 ;;
  forgotten) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;;
  down) echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2; exit 1 ;;
  *) echo "$state" ;;
esac
"""


@pytest.fixture
def queue(tmp_path, monkeypatch):
    """A stand-in `squeue` saying what the test writes into the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text(FAKE_SQUEUE)
    squeue.chmod(0o755)
    state = tmp_path / "squeue-state"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SQUEUE_STATE", str(state))
    monkeypatch.setenv("SQUEUE_CALLS", str(tmp_path / "squeue-calls"))
    return state


def run_with_eval(root: Path, executor: str = "slurm", eval_id: str | None = "77") -> RunLayout:
    layout = RunLayout(root)
    layout.deploy.mkdir(parents=True)
    stages = {"deploy": {"job_id": "76"}, "eval": {"job_id": eval_id}}
    write_json_atomic(layout.manifest, {"executor": executor, "stages": stages})
    return layout


def test_the_watch_sees_an_eval_leave_the_queue_and_serves_through_its_requeue(tmp_path, queue):
    layout = run_with_eval(tmp_path / "run")
    watch = EvalWatch([layout], every_s=0)
    for state in ("RUNNING", "gone", "PENDING", "down", "gone", "REQUEUED", "gone", "down", "RUNNING"):
        queue.write_text(state)  # one look at a gap is no end: requeued, the controller busy
        watch.look()
        assert not watch.done(layout), state
    for state in ("gone", "forgotten"):  # gone twice in a row: no longer listed, then purged
        queue.write_text(state)
        watch.look()
    assert watch.done(layout)
    assert (tmp_path / "squeue-calls").read_text().splitlines()[0] == "-h -r -j 77 -o %T"


def test_the_watch_never_stops_a_server_on_a_guess(tmp_path, queue, monkeypatch):
    layouts = [run_with_eval(tmp_path / "local", executor="local"), run_with_eval(tmp_path / "early", eval_id=None)]
    (tmp_path / "broken").mkdir()
    layouts.append(RunLayout(tmp_path / "broken"))
    (tmp_path / "broken" / "manifest.json").write_text('{"executor": "slurm", "stag')
    queue.write_text("gone")
    watch = EvalWatch(layouts, every_s=0)
    for _ in range(3):
        watch.look()
    assert not any(watch.done(layout) for layout in layouts)  # no eval id to look for
    monkeypatch.setenv("PATH", "/nonexistent")  # no Slurm client in the job's environment
    assert evalwatch.in_queue("77") is None


def test_the_deploy_stops_serving_when_its_eval_left_without_saying_so(tmp_path, queue, monkeypatch):
    monkeypatch.setattr(evalwatch, "LOOK_EVERY_S", 0.0)
    layout = run_with_eval(tmp_path / "run")
    server = subprocess.Popen(["sleep", "120"])
    try:
        queue.write_text("gone")  # cancelled, or its disk was full: no stop marker
        deploy.wait_for_evals([server], [layout], keep_serving=False)
        assert server.poll() is None and not layout.stop_serving.exists()
    finally:
        deploy.stop(server, grace_s=5)
    assert server.returncode is not None
