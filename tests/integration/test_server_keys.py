"""Every route of every deploy server needs the run's key, but `/health`: the real servers,
started with the command and environment the deploy job gives them (vLLM chat on the tiny
Llama and vLLM pooling on MiniLM from `.venv-serve`, LLaMA-Factory's API server, hpcft's own
FlagEmbedding server), are walked route by route as each publishes them (vLLM's route table
and `/openapi.json`, FastAPI's for LLaMA-Factory, `hpcft.serve.routes`): with no key, a wrong
key and the key in the query string every route but `/health` answers 401; with the key none
does. Then real requests with the key, and the key never in the server's log. One server at a
time (module-scoped, in one worker): vLLM takes tens of seconds to start on CPU."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hpcft.configure import load_config
from hpcft.frameworks import adapter_for
from hpcft.jobs import deploy
from hpcft.jobs.process import resolve
from hpcft.rundir import RunLayout
from hpcft.serve import routes as serve_routes
from tests.conftest import TINY_LLAMA, needs_training
from tests.integration.test_vllm_serving import SERVE_PYTHON, needs_vllm

pytestmark = [needs_training, pytest.mark.xdist_group("server_keys")]

KEY = secrets.token_urlsafe(32)
FASTAPI_DOCS = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")}
"""FastAPI's own routes, which its schema leaves out."""
OPEN_BEFORE = {
    "vllm-chat": {"/invocations", "/tokenize", "/detokenize", "/metrics", "/ping", "/version", "/docs"},
    "vllm-pooling": {"/pooling", "/score", "/rerank", "/invocations", "/metrics"},
    "llamafactory": {"/docs", "/redoc", "/openapi.json"},
}
"""Routes that answered without the key before (vLLM's `--api-key` guards `/v1/*` only,
LLaMA-Factory's `API_KEY` its three routes): the walk must reach them."""


@dataclass
class Server:
    name: str
    url: str
    model: str
    log: Path
    process: subprocess.Popen[bytes]
    routes: set[tuple[str, str]] = field(default_factory=set)


OVERRIDES = {
    "vllm-chat": ["model=tiny_llama", "deploy.backend=vllm", "framework.finetuning_type=full"],
    "vllm-pooling": ["model=minilm", "deploy.backend=vllm"],
    "llamafactory": ["model=tiny_llama", "deploy.backend=huggingface", "framework.finetuning_type=full"],
    "hpcft-serve": ["model=minilm", "deploy.backend=huggingface"],
}


def trained_weights(layout: RunLayout, source: Path, matryoshka: bool) -> None:
    """`train/` as training would leave it: here the model itself (file by file, its config
    saying it was trained for shorter embeddings where `matryoshka`)."""
    layout.train_output.mkdir(parents=True)
    for file in source.iterdir():
        if file.name == "config.json" and matryoshka:
            config = {**json.loads(file.read_text()), "matryoshka_dimensions": [128, 384]}
            (layout.train_output / file.name).write_text(json.dumps(config))
        else:
            (layout.train_output / file.name).symlink_to(file)


def start(name: str, tmp: Path) -> Server:
    """The deploy job's server for `name`, as `deploy.start_server` starts it, its output in a file."""
    cfg = load_config([*OVERRIDES[name], "eval.baseline=false"])
    adapter, layout = adapter_for(cfg), RunLayout(tmp / "run")
    trained_weights(layout, TINY_LLAMA if "llama" in cfg.model.name else Path(cfg.model.path), name == "hpcft-serve")
    for relative, text in adapter.deploy_files(layout).items():
        (layout.root / relative).parent.mkdir(parents=True, exist_ok=True)
        (layout.root / relative).write_text(text)
    job, port = adapter.deploy_job(layout), deploy.free_port()
    argv = [str(SERVE_PYTHON) if a == "python" and name.startswith("vllm") else a for a in job.serve_argv]
    values = {"{host}": "127.0.0.1", "{port}": str(port), "{model}": job.model_name, "{api_key}": KEY}
    env = {**os.environ, **{k: deploy.filled(v, values) for k, v in job.env.items()}}
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            resolve([deploy.filled(a, values) for a in argv]),
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return Server(name, f"http://127.0.0.1:{port}", job.model_name, log, process)


def call(server: Server, method: str, path: str, key: str | None, body: Any = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
    request = urllib.request.Request(server.url + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        return e.code, bytes(e.read())


def wait_healthy(server: Server, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"{server.name} exited: {server.log.read_text()[-3000:]}")
        try:
            if call(server, "GET", "/health", None)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"{server.name} not healthy in {timeout_s} s: {server.log.read_text()[-3000:]}")


def published_routes(server: Server) -> set[tuple[str, str]]:
    """(method, path) of every route the server says it has."""
    if server.name == "hpcft-serve":
        return set(serve_routes("embedding"))
    status, schema = call(server, "GET", "/openapi.json", KEY)
    assert status == 200
    found = {(m.upper(), p) for p, methods in json.loads(schema)["paths"].items() for m in methods} | FASTAPI_DOCS
    for line in server.log.read_text().splitlines():  # vLLM's route table, routes left out of the schema too
        if match := re.search(r"Route: (\S+), Methods: (.+)", line):
            found |= {(m.strip(), match.group(1)) for m in match.group(2).split(",") if m.strip() != "HEAD"}
    return found


@pytest.fixture(scope="module", params=[
    pytest.param("vllm-chat", marks=needs_vllm), pytest.param("vllm-pooling", marks=needs_vllm),
    "llamafactory", "hpcft-serve",
])  # fmt: skip
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    served = start(request.param, tmp_path_factory.mktemp(request.param))
    try:
        wait_healthy(served)
        served.routes = published_routes(served)
        yield served
    finally:
        if served.process.poll() is None:
            os.killpg(served.process.pid, signal.SIGTERM)
        served.process.wait(timeout=60)


QUERY_KEY = f"?api_key={KEY}&key={KEY}&access_token={KEY}&token={KEY}"


def test_every_route_but_health_needs_the_key(server):
    """Walk every published route with no key, a wrong one, the key in the query string, the key."""
    assert ("GET", "/health") in server.routes or server.name == "llamafactory"  # its own has none: hpcft adds it
    assert OPEN_BEFORE.get(server.name, set()) <= {path for _, path in server.routes}
    answered_without: dict[tuple[str, str], list[int]] = {}
    for method, route in sorted(server.routes | {("GET", "/health"), ("GET", "/no/such/route")}):
        path = re.sub(r"\{[^}]+\}", "x", route)
        without = [call(server, method, path, None)[0], call(server, method, path, "wrong-" + KEY)[0]]
        without.append(call(server, method, path + QUERY_KEY, None)[0])
        if without != [401, 401, 401]:
            answered_without[(method, route)] = without
        assert call(server, method, path, KEY)[0] != 401, (method, route)
    assert answered_without == {("GET", "/health"): [200, 200, 200]}
    assert call(server, "GET", "/health", None)[1] == b""  # it says nothing but "up"


REQUESTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "vllm-chat": [("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
                  ("/invocations", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
                  ("/tokenize", {"prompt": "hi"})],
    "vllm-pooling": [("/v1/embeddings", {"input": ["a cat"]}), ("/pooling", {"input": ["a cat"]}),
                     ("/invocations", {"input": ["a cat"]})],
    "llamafactory": [("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})],
    "hpcft-serve": [("/v1/embeddings", {"input": ["a cat", "a dog"]})],
}  # fmt: skip


def test_the_key_serves_real_requests_and_is_never_logged(server):
    """With the key, the routes that were open before answer for real; the key is in no log line."""
    assert call(server, "GET", "/v1/models" + QUERY_KEY, None)[0] == 401  # what an access log would print
    for path, body in REQUESTS[server.name]:
        status, answer = call(server, "POST", path, KEY, {"model": server.model, **body})
        assert status == 200, (path, answer[:500])
    assert call(server, "GET", "/v1/models", KEY)[0] == 200
    if server.name in ("vllm-pooling", "hpcft-serve"):
        assert_dimensions(server)
    assert server.process.poll() is None
    assert KEY not in server.log.read_text(errors="replace")


def assert_dimensions(server: Server) -> None:
    """OpenAI's `dimensions`: refused, naming why, for MiniLM (not trained for it), on vLLM and
    on hpcft.serve alike; cut and L2-normalised again for a model whose config says it was."""
    plain = "base" if server.name == "hpcft-serve" else server.model
    status, answer = call(server, "POST", "/v1/embeddings", KEY, {"model": plain, "input": ["a"], "dimensions": 128})
    assert status == 400 and b"Matryoshka" in answer, answer
    if server.name != "hpcft-serve":
        return
    ask = {"model": server.model, "input": ["a cat"]}
    full = json.loads(call(server, "POST", "/v1/embeddings", KEY, ask)[1])["data"][0]["embedding"]
    status, answer = call(server, "POST", "/v1/embeddings", KEY, {**ask, "dimensions": 128})
    cut = json.loads(answer)["data"][0]["embedding"]
    norm = sum(x * x for x in full[:128]) ** 0.5
    assert status == 200 and len(cut) == 128 and all(abs(a - b / norm) < 1e-6 for a, b in zip(cut, full, strict=False))
    assert call(server, "POST", "/v1/embeddings", KEY, {**ask, "dimensions": 64})[0] == 400  # not one it names
