"""GPU check for one lent GPU session (issue 33): hpcft's plans against measured GPUs.

    python benchmarks/gpu_lora.py [--rehearsal] [--budget-s 480] [--work DIR] [--out FILE]
        [--gpu 0] [--peak-tflops 989]

Steps, each guarded by its own time limit within the whole budget (a late step is skipped, not
waited for), the JSON rewritten after every step so that a late failure keeps the early figures:
1. random-weight Qwen2.5-0.5B and 7B built from their configs (benchmarks/gpu_models.py; nothing
   downloaded);
2. 7B LoRA at cutoff 5120 x 2 on rows that reach it, through hpcft (`cluster=local`, one GPU)
   and directly with `llamafactory-cli train` on the YAML hpcft wrote: tokens/s (non-padding
   tokens over the trainer's runtime), MFU (6 N tokens/s over `--peak-tflops`), peak memory
   (nvidia-smi, polled) beside hpcft's estimate;
3. 0.5B SFT on short rows as written by hand (micro-batch 8, no packing) and with hpcft's
   defaults (packing, the micro-batch it chooses): packing off vs on;
4. the 7B plan with Liger on (where `liger_kernel` imports): Liger off vs on.
`llamafactory-cli` is looked for on PATH, then beside this interpreter. `--rehearsal` runs the
same steps on CPU with 2-layer models in about a minute (tests/integration/test_gpu_rehearsal.py),
so the script cannot rot between lent GPUs; Liger is skipped there (it needs a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import gpu_models
from benchmarks.common import JOB_ENV, PYTHON, REPO, only_child, run_timed
from benchmarks.gpu_measure import GpuMemoryPoller, gpu_total_gib, planned_estimate, report, trained

Step = Callable[[float], dict[str, Any]]
"""One step of the check, given its time limit: what it found."""


@dataclass(kw_only=True)
class Bench:
    """One run of the check: where it works, what it found, how long it has left."""

    rehearsal: bool
    """CPU, 2-layer models, a few steps each."""
    work: Path
    """Models, data and runs."""
    out: Path
    """The JSON summary, rewritten after every step."""
    gpu: int
    """GPU index (nvidia-smi, CUDA_VISIBLE_DEVICES)."""
    peak_tflops: float
    """The GPU's dense bf16 peak, for MFU."""
    deadline: float
    """time.monotonic() by which every step must have ended."""
    results: dict[str, Any] = field(default_factory=dict)
    """What the JSON holds."""

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1))
        tmp.replace(self.out)


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """What each step trains: the real sizes on a GPU, 2-layer stand-ins in the rehearsal."""

    large: str
    small: str
    long_cutoff: int
    long_batch: int
    long_rows: int
    short_cutoff: int
    short_rows: int
    steps: int


GPU_SIZES = Sizes(large="qwen2_5_7b", small="qwen2_5_0_5b", long_cutoff=5120, long_batch=2, long_rows=64,
                  short_cutoff=2048, short_rows=4096, steps=8)  # fmt: skip
REHEARSAL_SIZES = Sizes(large="rehearsal", small="rehearsal", long_cutoff=128, long_batch=2, long_rows=16,
                        short_cutoff=2048, short_rows=600, steps=2)  # fmt: skip


def llamafactory_cli() -> str:
    """`llamafactory-cli` on PATH, else beside this interpreter (a venv's bin not on PATH)."""
    found = shutil.which("llamafactory-cli") or shutil.which("llamafactory-cli", path=str(Path(PYTHON).parent))
    if not found:
        raise RuntimeError("llamafactory-cli is neither on PATH nor beside this interpreter")
    return found


def sizes(b: Bench) -> Sizes:
    return REHEARSAL_SIZES if b.rehearsal else GPU_SIZES


def job_env(b: Bench) -> dict[str, str]:
    env = {**os.environ, **JOB_ENV}
    env["PATH"] = f"{env.get('PATH', '')}{os.pathsep}{Path(PYTHON).parent}"
    return env if b.rehearsal else {**env, "CUDA_VISIBLE_DEVICES": str(b.gpu)}


def overrides(b: Bench, model: str, trainset: Path, cutoff: int, *extra: str, count: str = "non_padding") -> list[str]:
    """hpcft's command line for one training: the built model, one GPU (none in the rehearsal).
    Tokens counted: `non_padding`, except for packed rows, whose 4-D attention mask that count
    misreads (every packed token is a row's own anyway: `all`)."""
    s, gpus = sizes(b), 0 if b.rehearsal else 1
    return [
        "model=qwen2_5_7b",  # a chat LLM entry; the model's own config.json gives its numbers
        f"model.name={model}", f"model.path={b.work / model}", f"model.params_b={gpu_models.PARAMS_B[model]}",
        "model.template=qwen", "cluster=local", f"cluster.gpus_per_node={gpus}", f"cluster.node_gpus={gpus}",
        "stages=[train]", f"trainset={trainset}", f"framework.cutoff_len={cutoff}", "framework.num_train_epochs=1",
        "framework.save_steps=100000", "framework.logging_steps=1", f"+framework.args.max_steps={s.steps}",
        f"+framework.args.include_num_input_tokens_seen={count}", *extra,
        *([] if b.rehearsal else [f"cluster.gpu_mem_gb={gpu_total_gib(b.gpu):.1f}"]),
    ]  # fmt: skip


def measure(b: Bench, argv: list[str], cwd: Path, timeout_s: float) -> dict[str, Any]:
    """Run one training with the GPU poller (peak RSS in the rehearsal): wall time and peaks."""
    poller = None if b.rehearsal else GpuMemoryPoller(b.gpu)
    idle = poller.used() if poller else 0
    if poller:
        poller.start()
    try:
        timed = run_timed(argv, job_env(b), cwd=cwd, timeout_s=timeout_s).check()
    finally:
        if poller:
            poller.done.set()
            poller.join()
    peak = {"peak_gpu_gib": poller.peak_mib / 1024, "idle_gpu_gib": idle / 1024} if poller else {}
    return {"wall_s": timed.wall_s, "peak_rss_mib": timed.maxrss_mb, **peak}


def via_hpcft(b: Bench, key: str, model: str, data: Path, cutoff: int, *extra: str, count: str = "non_padding") -> Step:
    """A step: one training through hpcft, with the plan it made and its estimate."""

    def step(timeout_s: float) -> dict[str, Any]:
        args = overrides(b, model, data, cutoff, *extra, count=count)
        root = b.work / "runs" / key
        shutil.rmtree(root, ignore_errors=True)
        plan = planned_estimate(args)
        figures = measure(b, [PYTHON, "-m", "hpcft", *args, f"run_root={root}"], REPO, timeout_s)
        run = only_child(root)
        figures |= trained(run / "train")
        tps = figures.get("tokens_per_s") or 0.0
        mfu = 6 * gpu_models.PARAMS_B[model] * 1e9 * tps / (b.peak_tflops * 1e12) if not b.rehearsal else None
        return {**plan, **figures, "mfu": mfu, "yaml": str(run / "native" / "train.yaml"), "overrides": args}

    return step


def direct(b: Bench, of: str) -> Step:
    """A step: `llamafactory-cli train` on the YAML step `of` ran through hpcft."""

    def step(timeout_s: float) -> dict[str, Any]:
        made = b.results["steps"].get(of, {})
        if not made.get("ok"):
            return {"skipped": f"{of} did not run"}
        source = Path(made["yaml"])
        output = b.work / "runs" / f"{of}-direct"
        shutil.rmtree(output, ignore_errors=True)
        text = source.read_text().replace(f"output_dir: {source.parents[1] / 'train'}", f"output_dir: {output}")
        mine = b.work / f"{of}-direct.yaml"
        mine.write_text(text)
        figures = measure(b, [llamafactory_cli(), "train", str(mine)], b.work, timeout_s) | trained(output)
        return {**figures, "ratio_hpcft_to_direct": (made.get("tokens_per_s") or 0) / (figures["tokens_per_s"] or 1)}

    return step


def build(b: Bench, model: str) -> Step:
    def step(timeout_s: float) -> dict[str, Any]:
        if (b.work / model / "config.json").is_file():
            return {"built": "already"}
        argv = [PYTHON, str(REPO / "benchmarks" / "gpu_models.py"), str(b.work / model), model]
        timed = run_timed([*argv, "cpu" if b.rehearsal else "cuda"], job_env(b), timeout_s=timeout_s).check()
        return dict(json.loads(timed.stdout.strip().splitlines()[-1]))

    return step


def steps(b: Bench) -> list[tuple[str, Step, float]]:
    """(name, step, its own time limit), most important first: what runs out of time is the last."""
    s, data = sizes(b), b.work / "data"
    long = gpu_models.write_rows(data / "long.json", gpu_models.long_rows(s.long_rows, s.long_cutoff))
    short = gpu_models.write_rows(data / "short.json", gpu_models.short_rows(s.short_rows))
    one = ["framework.gradient_accumulation_steps=1"]  # each of `steps` optimizer steps is one micro-batch
    fixed = [f"framework.per_device_train_batch_size={s.long_batch}", "+cluster.train.modules.liger_kernel=false", *one]
    hand = ["framework.per_device_train_batch_size=8", "framework.gradient_accumulation_steps=1",
            "+framework.args.neat_packing=false"]  # fmt: skip
    packed = ["framework.gradient_accumulation_steps=8"]  # hpcft's defaults: packing, its micro-batch
    liger = ["+cluster.train.modules.liger_kernel=true", f"framework.per_device_train_batch_size={s.long_batch}", *one]
    builds = [(f"build_{m}", build(b, m), 120.0) for m in dict.fromkeys([s.large, s.small])]
    return [
        *builds,
        ("large_hpcft", via_hpcft(b, "large_hpcft", s.large, long, s.long_cutoff, *fixed), 150),
        ("large_direct", direct(b, "large_hpcft"), 120),
        ("small_padded", via_hpcft(b, "small_padded", s.small, short, s.short_cutoff, *hand), 90),
        ("small_packed", via_hpcft(b, "small_packed", s.small, short, s.short_cutoff, *packed, count="all"), 90),
        ("large_liger", liger_step(b, via_hpcft(b, "large_liger", s.large, long, s.long_cutoff, *liger)), 150),
    ]


def liger_step(b: Bench, step: Step) -> Step:
    """Liger needs a GPU and its package: skipped, and said, without them."""

    def guarded(timeout_s: float) -> dict[str, Any]:
        if b.rehearsal:
            return {"skipped": "Liger's Triton kernels need a GPU (hpcft never plans them on CPU)"}
        if importlib.util.find_spec("liger_kernel") is None:
            return {"skipped": "liger_kernel does not import here (pip install liger-kernel==0.8.5)"}
        return step(timeout_s)

    return guarded


def run_steps(b: Bench) -> None:
    b.results.setdefault("steps", {})
    for name, step, limit in steps(b):
        if b.left() < 15:
            b.results["steps"][name] = {"ok": False, "skipped": "the session's budget is spent"}
            b.save()
            continue
        start = time.monotonic()
        try:
            found = step(min(limit, b.left()))
            b.results["steps"][name] = {"ok": "skipped" not in found, **found}
        except Exception as e:  # a failed step is recorded; the next ones still run
            b.results["steps"][name] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[-2000:]}"}
        b.results["steps"][name]["seconds"] = round(time.monotonic() - start, 1)
        b.save()
        print(f"gpu_lora: {name}: {json.dumps(b.results['steps'][name])[:300]}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rehearsal", action="store_true", help="CPU, 2-layer models: the script end to end")
    parser.add_argument("--budget-s", type=float, default=480, help="all steps together (default 8 min)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/hpcft-gpu-check"))
    parser.add_argument("--out", type=Path, default=None, help="the JSON (default WORK/gpu_check.json)")
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    args = parser.parse_args(argv)
    (args.work / "data").mkdir(parents=True, exist_ok=True)
    b = Bench(rehearsal=args.rehearsal, work=args.work, out=args.out or args.work / "gpu_check.json", gpu=args.gpu,
              peak_tflops=args.peak_tflops, deadline=time.monotonic() + args.budget_s)  # fmt: skip
    b.results = {"rehearsal": b.rehearsal, "budget_s": args.budget_s, "steps": {}}
    with contextlib.suppress(Exception):
        b.results["llamafactory_cli"] = llamafactory_cli()
    b.save()
    run_steps(b)
    print(report(b.results["steps"]))
    print(f"JSON: {b.out}")
    return 0 if all(s.get("ok") or "skipped" in s for s in b.results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
