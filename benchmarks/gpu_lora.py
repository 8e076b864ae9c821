"""GPU benchmark (not run in CI): LoRA SFT of a ~0.5-1.5B model on one GPU, hpcft vs direct.

    python benchmarks/gpu_lora.py --model /models/Qwen2.5-0.5B-Instruct [--params-b 0.49]
        [--repeat 3] [--rows 2048] [--cutoff-len 512] [--batch 8] [--no-bf16] [--gpu 0] [--out gpu_results.json]

The same LLaMA-Factory LoRA SFT (bf16, one epoch over a synthetic alpaca set built from hpcft's
demo rows) run through hpcft (`cluster=local` with one GPU, `stages=[train]`) and directly with
`llamafactory-cli train` on the YAML hpcft writes. Reported per way: tokens/s (LLaMA-Factory's
`num_input_tokens_seen` over the trainer's `train_runtime`), wall time, and peak GPU memory,
polled with nvidia-smi in a thread (training runs in another process, so
torch.cuda.max_memory_allocated is not visible here), beside hpcft's memory-fit estimate.
Needs a GPU, nvidia-smi, the training stack and the model on disk (no internet needed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import JOB_ENV, PYTHON, REPO, Row, fmt, median, only_child, read_json, rows_of, run_timed, table
from hpcft.configure import load_config
from hpcft.frameworks.llamafactory import Adapter
from hpcft.frameworks.llamafactory_memory import configured, estimate

DEMO = REPO / "hpcft" / "assets" / "demo" / "llamafactory_train.json"


class GpuMemoryPoller(threading.Thread):
    """Peak `memory.used` (MiB) of one GPU, polled with nvidia-smi until stopped."""

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


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Not run in CI; see benchmarks/README.md."
    )
    parser.add_argument("--model", required=True, help="folder of the base model (e.g. Qwen2.5-0.5B-Instruct)")
    parser.add_argument("--params-b", type=float, default=0.49, help="its size in billions of parameters")
    parser.add_argument("--template", default="qwen", help="LLaMA-Factory chat template")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2048, help="training rows (one epoch)")
    parser.add_argument("--cutoff-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8, help="per-device batch size")
    parser.add_argument("--no-bf16", action="store_true", help="train in fp32 (GPUs without bfloat16)")
    parser.add_argument("--gpu", type=int, default=0, help="GPU index for nvidia-smi and CUDA_VISIBLE_DEVICES")
    parser.add_argument("--work", type=Path, default=Path("/tmp/hpcft-gpu-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu_results.json")
    return parser.parse_args(argv)


def make_trainset(path: Path, rows: int) -> None:
    """Alpaca rows about 4x longer than the demo rows, cycled to `rows`."""
    demo = json.loads(DEMO.read_text())
    long = [{k: " ".join([str(r[k])] * 4) for k in ("instruction", "input", "output")} for r in demo]
    path.write_text(json.dumps([long[i % len(long)] for i in range(rows)]))


def overrides(args: argparse.Namespace, trainset: Path, gpu_mem_gb: float) -> list[str]:
    return [
        "model=qwen2_5_7b",  # a chat LLM entry; every field that matters is overridden below
        f"model.name={Path(args.model).name.lower().replace('.', '_')}",
        f"model.path={Path(args.model).resolve()}",
        f"model.params_b={args.params_b}",
        f"model.template={args.template}",
        "cluster=local",
        "cluster.gpus_per_node=1",
        "cluster.node_gpus=1",
        f"cluster.gpu_mem_gb={gpu_mem_gb}",
        "stages=[train]",
        f"trainset={trainset}",
        f"framework.cutoff_len={args.cutoff_len}",
        f"framework.per_device_train_batch_size={args.batch}",
        "framework.gradient_accumulation_steps=1",
        "framework.num_train_epochs=1",
        f"framework.bf16={str(not args.no_bf16).lower()}",
        "framework.save_steps=100000",
        "+framework.args.include_num_input_tokens_seen=true",
    ]


def gpu_total_gb(gpu: int) -> float:
    argv = ["nvidia-smi", f"--id={gpu}", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[0]) / 1024


def outcome(output: Path, wall_s: float, peak_mib: int, idle_mib: int) -> dict[str, Any]:
    runtime = float(read_json(output / "all_results.json")["train_runtime"])
    history = read_json(output / "trainer_state.json").get("log_history", [])
    tokens = max((int(h["num_input_tokens_seen"]) for h in history if "num_input_tokens_seen" in h), default=0)
    return {
        "wall_s": wall_s,
        "train_runtime_s": runtime,
        "tokens": tokens,
        "tokens_per_s": tokens / runtime if tokens else float("nan"),
        "peak_gpu_mib": peak_mib,
        "peak_gpu_mib_above_idle": peak_mib - idle_mib,
    }


def measured(argv: list[str], env: dict[str, str], gpu: int, cwd: Path) -> tuple[float, int, int]:
    """Run a training command with the GPU poller: (wall s, peak MiB, idle MiB before)."""
    poller = GpuMemoryPoller(gpu)
    idle = poller.used()
    poller.start()
    try:
        timed = run_timed(argv, env, cwd=cwd, timeout_s=3600).check()
    finally:
        poller.done.set()
        poller.join()
    return timed.wall_s, poller.peak_mib, idle


def run_pair(args: argparse.Namespace, hpcft_args: list[str], i: int) -> dict[str, Any]:
    env = {**os.environ, **JOB_ENV, "CUDA_VISIBLE_DEVICES": str(args.gpu)}
    root = args.work / f"hpcft-{i}"
    wall, peak, idle = measured([PYTHON, "-m", "hpcft", *hpcft_args, f"run_root={root}"], env, args.gpu, REPO)
    via_hpcft = outcome(only_child(root) / "train", wall, peak, idle)
    dry = args.work / f"dry-{i}"
    run_timed([PYTHON, "-m", "hpcft", *hpcft_args, f"run_root={dry}", "dry_run=true"]).check()
    native = only_child(dry) / "native" / "train.yaml"
    output = args.work / f"direct-{i}"
    text = native.read_text().replace(f"output_dir: {only_child(dry) / 'train'}", f"output_dir: {output}")
    (args.work / f"direct-{i}.yaml").write_text(text)
    cli = str(Path(PYTHON).parent / "llamafactory-cli")
    wall, peak, idle = measured([cli, "train", str(args.work / f"direct-{i}.yaml")], env, args.gpu, args.work)
    return {"hpcft": via_hpcft, "direct": outcome(output, wall, peak, idle)}


def rows(runs: list[dict[str, Any]], estimate_gb: float) -> list[Row]:
    def med(who: str, key: str) -> float:
        return median([r[who][key] for r in runs])

    row = rows_of("GPU LoRA SFT", len(runs))
    h_tps, d_tps = med("hpcft", "tokens_per_s"), med("direct", "tokens_per_s")
    h_wall, d_wall = med("hpcft", "wall_s"), med("direct", "wall_s")
    h_mem, d_mem = med("hpcft", "peak_gpu_mib") / 1024, med("direct", "peak_gpu_mib") / 1024
    return [
        row("tokens/s (num_input_tokens_seen / train_runtime)", fmt(h_tps), fmt(d_tps), fmt(h_tps / d_tps), ">= 0.95",
            h_tps / d_tps >= 0.95),
        row("wall time (s)", fmt(h_wall), fmt(d_wall), fmt(h_wall / d_wall)),
        row("peak GPU memory (GB, nvidia-smi)", fmt(h_mem), fmt(d_mem), fmt(h_mem / d_mem)),
        row("hpcft's memory-fit estimate (GB) vs measured peak", fmt(estimate_gb), fmt(h_mem), fmt(estimate_gb / h_mem),
            ">= 1 (not under)", estimate_gb >= h_mem),
    ]  # fmt: skip


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    trainset = args.work / "train.json"
    make_trainset(trainset, args.rows)
    hpcft_args = overrides(args, trainset, round(gpu_total_gb(args.gpu), 1))
    cfg = load_config(hpcft_args)  # the estimate of the plan hpcft submits, for the rows it checked
    estimate_gb = estimate(cfg, Adapter(cfg).training_data(), configured(cfg)).memory.total_gb
    runs = [run_pair(args, hpcft_args, i) for i in range(args.repeat)]
    result = rows(runs, estimate_gb)
    print(table(result))
    args.out.write_text(json.dumps({"overrides": hpcft_args, "estimate_gb": estimate_gb, "runs": runs}, indent=1))
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
