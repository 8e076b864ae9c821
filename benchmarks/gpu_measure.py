"""What benchmarks/gpu_lora.py measures and prints: GPU memory polled with nvidia-smi, a
training's throughput from LLaMA-Factory's own records, hpcft's plan and estimate for it."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import read_json


class GpuMemoryPoller(threading.Thread):
    """Peak `memory.used` (MiB) of one GPU, polled with nvidia-smi until stopped (a thread:
    training runs in another process, whose torch counters are not visible here)."""

    def __init__(self, gpu: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.gpu, self.interval_s, self.peak_mib = gpu, interval_s, 0
        self.done = threading.Event()

    def used(self) -> int:
        argv = ["nvidia-smi", f"--id={self.gpu}", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip().splitlines()[0])

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(subprocess.CalledProcessError, ValueError, IndexError):  # a missed sample
                self.peak_mib = max(self.peak_mib, self.used())
            self.done.wait(self.interval_s)


def gpu_total_gib(gpu: int) -> float:
    """The GPU's memory, for the plan's `cluster.gpu_mem_gb` (80 GB would misjudge an H200's fit)."""
    argv = ["nvidia-smi", f"--id={gpu}", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[0]) / 1024


def trained(output: Path) -> dict[str, Any]:
    """Tokens/s of a finished training: the non-padding tokens LLaMA-Factory counted
    (`num_input_tokens_seen`) over the trainer's `train_runtime`."""
    runtime = float(read_json(output / "all_results.json")["train_runtime"])
    history = read_json(output / "trainer_state.json").get("log_history", [])
    tokens = max((int(h["num_input_tokens_seen"]) for h in history if "num_input_tokens_seen" in h), default=0)
    return {"train_runtime_s": runtime, "tokens": tokens, "tokens_per_s": tokens / runtime if tokens else None}


def planned_estimate(overrides: list[str]) -> dict[str, Any]:
    """What hpcft plans for these overrides (a dry run's train.yaml settings) and its per-GPU
    estimate of the plan as it will run (on CPU: as if on one GPU)."""
    from hpcft.configure import load_config
    from hpcft.frameworks import adapter_for
    from hpcft.frameworks.llamafactory_memory import check_memory_fit, configured, estimate
    from hpcft.once import per_command
    from hpcft.rundir import RunLayout

    with per_command():
        cfg = load_config(overrides)
        adapter = adapter_for(cfg)
        data = adapter.training_data()  # type: ignore[attr-defined]
        fit = check_memory_fit(cfg, data) if cfg.cluster.gpus_per_node else estimate(cfg, data, configured(cfg))
        values = yaml.safe_load(adapter.train_files(RunLayout(Path("/plan")))["native/train.yaml"])
    keys = ("per_device_train_batch_size", "gradient_accumulation_steps", "neat_packing", "enable_liger_kernel")
    return {
        "plan": {k: values.get(k) for k in keys},
        "estimate_gib": fit.memory.total_gb,
        "estimate": fit.describe(cfg.cluster.gpu_mem_gb),
    }


def report(steps: dict[str, dict[str, Any]]) -> str:
    """One line per step: tokens/s, MFU, peak against the estimate, or why it did not run."""
    lines = []
    for name, s in steps.items():
        if not s.get("ok"):
            lines.append(f"{name:14} {s.get('skipped') or s.get('error', '')[:200]}")
            continue
        parts = [f"{k} {s[k]:.4g}" for k in ("tokens_per_s", "mfu", "peak_gpu_gib", "estimate_gib") if s.get(k)]
        if s.get("peak_gpu_gib") and s.get("estimate_gib"):
            parts.append(f"estimate/measured {s['estimate_gib'] / s['peak_gpu_gib']:.2f}")
        parts += [f"plan {s['plan']}"] if "plan" in s else []
        lines.append(f"{name:14} " + ", ".join(parts or [f"{s.get('seconds')} s"]))
    return "\n".join(lines)
