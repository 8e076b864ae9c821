"""Walking a deploy server's routes with and without the run's key: what
test_server_keys.py asserts of the servers it starts itself (LLaMA-Factory's API server,
hpcft's own FlagEmbedding server) and test_vllm_serving.py of the vLLM servers its real
Slurm runs keep serving (one vLLM start on CPU costs ~30 s of CPU: the walks reuse them).

Every route the server publishes (vLLM's route table in its log and `/openapi.json`,
FastAPI's for LLaMA-Factory, `hpcft.serve.routes`) answers 401 with no key, a wrong key and
the key in the query string, but `/health`; with the key none does. With the key, real
requests answer; the key is in no line the server logged."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcft.serve import routes as serve_routes

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
    """A running deploy server: its kind (a key of OPEN_BEFORE / REQUESTS), address, served
    model, key and the files it logs to; `process_alive` where the test started it."""

    name: str
    url: str
    model: str
    key: str
    logs: tuple[Path, ...]
    process_alive: Callable[[], bool] | None = None
    routes: set[tuple[str, str]] = field(default_factory=set)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def running(self) -> bool:
        """Its process runs (where known), else it answers `/health`."""
        if self.process_alive is not None:
            return self.process_alive()
        return call(self, "GET", "/health", None)[0] == 200


def from_endpoint(name: str, side: dict[str, Any], logs: tuple[Path, ...]) -> Server:
    """The server a run's `deploy/endpoint.json` names (`side`: its entry for one model),
    logging to the deploy job's files."""
    key = Path(side["api_key_file"]).read_text().strip()
    url = side["base_url"].rstrip("/").removesuffix("/v1")
    server = Server(name, url, side["model"], key, logs)
    server.routes = published_routes(server)
    return server


def call(server: Server, method: str, path: str, key: str | None, body: Any = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
    request = urllib.request.Request(server.url + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        return e.code, bytes(e.read())


def published_routes(server: Server) -> set[tuple[str, str]]:
    """(method, path) of every route the server says it has."""
    if server.name == "hpcft-serve":
        return set(serve_routes("embedding"))
    status, schema = call(server, "GET", "/openapi.json", server.key)
    assert status == 200
    found = {(m.upper(), p) for p, methods in json.loads(schema)["paths"].items() for m in methods} | FASTAPI_DOCS
    for line in server.log_text().splitlines():  # vLLM's route table, routes left out of the schema too
        if match := re.search(r"Route: (\S+), Methods: (.+)", line):
            found |= {(m.strip(), match.group(1)) for m in match.group(2).split(",") if m.strip() != "HEAD"}
    return found


def query_key(key: str) -> str:
    return f"?api_key={key}&key={key}&access_token={key}&token={key}"


def assert_every_route_but_health_needs_the_key(server: Server) -> None:
    """Walk every published route with no key, a wrong one, the key in the query string, the key."""
    assert ("GET", "/health") in server.routes or server.name == "llamafactory"  # its own has none: hpcft adds it
    assert OPEN_BEFORE.get(server.name, set()) <= {path for _, path in server.routes}
    answered_without: dict[tuple[str, str], list[int]] = {}
    for method, route in sorted(server.routes | {("GET", "/health"), ("GET", "/no/such/route")}):
        path = re.sub(r"\{[^}]+\}", "x", route)
        without = [call(server, method, path, None)[0], call(server, method, path, "wrong-" + server.key)[0]]
        without.append(call(server, method, path + query_key(server.key), None)[0])
        if without != [401, 401, 401]:
            answered_without[(method, route)] = without
        assert call(server, method, path, server.key)[0] != 401, (method, route)
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


def assert_the_key_serves_real_requests_and_is_never_logged(server: Server) -> None:
    """With the key, the routes that were open before answer for real; the key is in no log line."""
    assert call(server, "GET", "/v1/models" + query_key(server.key), None)[0] == 401  # what an access log would print
    for path, body in REQUESTS[server.name]:
        status, answer = call(server, "POST", path, server.key, {"model": server.model, **body})
        assert status == 200, (path, answer[:500])
    assert call(server, "GET", "/v1/models", server.key)[0] == 200
    if server.name in ("vllm-pooling", "hpcft-serve"):
        assert_dimensions(server)
    assert server.running()
    assert server.key not in server.log_text()


def assert_dimensions(server: Server) -> None:
    """OpenAI's `dimensions`: refused, naming why, for MiniLM (not trained for it), on vLLM and
    on hpcft.serve alike; cut and L2-normalised again for a model whose config says it was."""
    plain = "base" if server.name == "hpcft-serve" else server.model
    ask_plain = {"model": plain, "input": ["a"], "dimensions": 128}
    status, answer = call(server, "POST", "/v1/embeddings", server.key, ask_plain)
    assert status == 400 and b"Matryoshka" in answer, answer
    if server.name != "hpcft-serve":
        return
    ask = {"model": server.model, "input": ["a cat"]}
    full = json.loads(call(server, "POST", "/v1/embeddings", server.key, ask)[1])["data"][0]["embedding"]
    status, answer = call(server, "POST", "/v1/embeddings", server.key, {**ask, "dimensions": 128})
    cut = json.loads(answer)["data"][0]["embedding"]
    norm = sum(x * x for x in full[:128]) ** 0.5
    assert status == 200 and len(cut) == 128 and all(abs(a - b / norm) < 1e-6 for a, b in zip(cut, full, strict=False))
    assert call(server, "POST", "/v1/embeddings", server.key, {**ask, "dimensions": 64})[0] == 400  # not one it names
