"""A LoRA sweep over one base model served by vLLM gets one deploy job serving every point's
adapter (vLLM multi-LoRA) instead of one server per point. The plan and the deploy job's
bookkeeping here (dry runs, a stand-in server process); tests/integration/test_vllm_serving.py
serves a real sweep."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from hpcft.cli import main
from hpcft.jobs import deploy
from hpcft.jobs.spec import DeployJob, PublishedModel
from hpcft.rundir import RunLayout

LORA_SWEEP = ("model=tiny_llama", "cluster=slurmlab", "deploy.backend=vllm", "framework.lora_rank=4,8,32")


def dry_sweep(tmp_path: Path, *overrides: str) -> tuple[str, Path]:
    assert main(["-m", *overrides, "dry_run=true", f"run_root={tmp_path / 'runs'}"]) == 0
    (sweep,) = (tmp_path / "runs").iterdir()
    return sweep.name, sweep


def test_a_lora_sweep_served_by_vllm_gets_one_deploy_job(tmp_path, capsys):
    _, sweep = dry_sweep(tmp_path, *LORA_SWEEP)
    out = capsys.readouterr().out
    assert "(3 points: 0,1,2) deploy, one job serving them all" in out
    deploy_script = (sweep / "dry_run" / "batch0.group0.deploy.sbatch").read_text()
    assert "#SBATCH --array" not in deploy_script
    assert "#SBATCH --dependency='afterany:<train array>'" in deploy_script
    eval_script = (sweep / "dry_run" / "batch0.group0.eval.sbatch").read_text()
    assert "#SBATCH --array=0-2" in eval_script and "aftercorr:<train array>" in eval_script


def test_the_shared_job_serves_each_adapter_under_its_own_name():
    from hpcft.configure import load_config
    from hpcft.frameworks import adapter_for

    points = [
        (load_config(["model=tiny_llama", "deploy.backend=vllm", f"framework.lora_rank={r}"]), RunLayout(Path(d)))
        for r, d in ((4, "/s/a=1"), (32, "/s/b"))
    ]
    job = adapter_for(points[0][0]).shared_deploy_job(points)
    assert job is not None
    assert [p.model_name for p in job.published] == ["tiny_llama-ft-0", "tiny_llama-ft-1"]
    argv = job.serve_argv
    assert argv[argv.index("--max-lora-rank") + 1] == "32" and argv[argv.index("--max-cpu-loras") + 1] == "2"
    assert argv[argv.index("--lora-modules") + 1] == "{models}"
    assert argv[argv.index("--tokenizer") + 1] == "/s/a=1/train"  # one model, one template: any point's
    # a folder named by its overrides has a '=': vLLM's JSON form keeps it whole
    assert json.loads(job.published[0].args[0]) == {"name": "tiny_llama-ft-0", "path": "/s/a=1/train"}
    assert job.published[1].args == ("tiny_llama-ft-1=/s/b/train",)
    assert job.baseline_model_name == "tiny_llama-base"


def test_full_fine_tunes_or_other_engines_keep_one_server_per_point(tmp_path, capsys):
    for i, overrides in enumerate(
        (("framework.finetuning_type=full", "deploy.backend=vllm"), ("deploy.backend=huggingface",))
    ):
        dry_sweep(tmp_path / str(i), "model=tiny_llama", "cluster=slurmlab", "framework.lora_rank=4,8", *overrides)
        assert "one job serving them all" not in capsys.readouterr().out


class StandInServer:
    """What `subprocess.Popen` returns for the server: running until stopped."""

    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, _: int) -> None:
        self.returncode = 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


@pytest.fixture
def started(monkeypatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def popen(argv: list[str], env: dict[str, str]) -> StandInServer:
        seen.update(argv=argv, env=env)
        return StandInServer()

    monkeypatch.setattr(deploy.subprocess, "Popen", popen)
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    return seen


def test_the_shared_server_publishes_each_trained_point_and_tells_the_others(tmp_path, started, monkeypatch):
    layouts = [RunLayout(tmp_path / name) for name in ("p0", "p1", "p2")]
    for layout in layouts:
        layout.deploy.mkdir(parents=True)
        layout.stop_serving.write_text("")  # an earlier attempt's: cleared at start
    for layout in layouts[:2]:  # p2's training failed: no adapter
        layout.train_output.mkdir(parents=True)
    # once the server answers, every eval runs and is done at once: serve, publish, stop
    monkeypatch.setattr(deploy, "wait_ready", lambda *args: [x.stop_serving.write_text("") for x in layouts])
    published = tuple(
        PublishedModel(run_dir=str(x.root), model_name=f"m-{i}", weights=str(x.train_output), args=(f"m-{i}=x{i}",))
        for i, x in enumerate(layouts)
    )
    job = DeployJob(
        run_dir=str(layouts[0].root),
        serve_argv=["python", "-m", "vllm", "--lora-modules", "{models}", "--port", "{port}"],
        model_name="m-0",
        env={"VLLM_API_KEY": "{api_key}"},
        baseline_model_name="base",
        published=published,
    )
    assert deploy.run_deploy(job) == "deploy finished: 2 of 3 points served"
    assert started["argv"][1:6] == ["-m", "vllm", "--lora-modules", "m-0=x0", "m-1=x1"]
    key = started["env"]["VLLM_API_KEY"]
    for i, layout in enumerate(layouts[:2]):
        endpoint = json.loads(layout.endpoint.read_text())
        assert endpoint["model"] == f"m-{i}" and endpoint["baseline"]["model"] == "base"
        assert layout.api_key.read_text().strip() == key and stat.S_IMODE(layout.api_key.stat().st_mode) == 0o600
    assert "left no weights" in layouts[2].deploy_failed.read_text() and not layouts[2].endpoint.exists()
