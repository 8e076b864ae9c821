"""A small client for the OpenAI-compatible endpoint a deploy job serves.

Standard library only, so the eval job and the Python API (`Run.client()`) share it without
extra dependencies. With the `openai` package installed, `EndpointClient.openai()` gives the
official client pointed at the same server.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRANSIENT = (http.client.HTTPException, ConnectionError, TimeoutError, OSError)
"""What a busy or restarting server causes: refused or dropped connections, timeouts."""


class HTTPStatusError(RuntimeError):
    """The server answered with an error status."""

    def __init__(self, url: str, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:300].decode(errors='replace')}")
        self.status = status


def _transient(error: Exception) -> bool:
    if isinstance(error, HTTPStatusError):
        return error.status >= 500 or error.status == 429
    return isinstance(error, TRANSIENT)


_connections = threading.local()
"""One kept-alive connection per thread and server: a new TCP connection (and, on Python's
own servers, a new thread) per request halves throughput against a fast engine."""


def _connection(netloc: str, timeout_s: float) -> http.client.HTTPConnection:
    pool: dict[str, http.client.HTTPConnection] = _connections.__dict__.setdefault("pool", {})
    if netloc not in pool:
        pool[netloc] = http.client.HTTPConnection(netloc, timeout=timeout_s)
    return pool[netloc]


def _request_once(url: str, payload: bytes | None, timeout_s: float, api_key: str | None) -> Any:
    """POST `payload` (GET without one) and the JSON answer."""
    parts = urllib.parse.urlsplit(url)
    conn = _connection(parts.netloc, timeout_s)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        conn.request("GET" if payload is None else "POST", parts.path, payload, headers)
        response = conn.getresponse()
        body = response.read()
    except BaseException:
        conn.close()  # a dropped or half-read connection is not reused
        _connections.pool.pop(parts.netloc, None)
        raise
    if response.status >= 400:
        raise HTTPStatusError(url, response.status, body)
    return json.loads(body)


def request_json(
    url: str,
    body: dict[str, Any] | None,
    timeout_s: float,
    retries: int = 0,
    backoff_s: float = 1.0,
    api_key: str | None = None,
) -> Any:
    """POST `body` as JSON (GET where it is None), with `api_key` as the bearer token, retrying
    transient failures (connection refused or dropped, timeout, 5xx, 429) `retries` times,
    1, 2, 4, ... s apart (at most 30 s). Other 4xx are not retried."""
    payload = None if body is None else json.dumps(body).encode()
    for attempt in range(retries + 1):
        try:
            return _request_once(url, payload, timeout_s, api_key)
        except Exception as e:
            if attempt == retries or not _transient(e):
                raise
            time.sleep(min(backoff_s * 2**attempt, 30.0))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class EndpointClient:
    base_url: str
    """`http://<node>:<port>/v1`, as written to `deploy/endpoint.json`."""
    model: str
    """The served model's name (the fine-tuned one unless told otherwise)."""
    timeout_s: float = 300.0
    """Timeout of one request."""
    retries: int = 0
    """Times a request is retried after a transient failure (5xx, timeout, dropped connection)."""
    backoff_s: float = 1.0
    """First pause between retries; it doubles each time."""
    api_key: str | None = field(default=None, repr=False)
    """The run's key, sent as `Authorization: Bearer`; never printed."""

    @classmethod
    def from_endpoint(
        cls, endpoint: dict[str, Any], timeout_s: float = 300.0, retries: int = 0, backoff_s: float = 1.0
    ) -> EndpointClient:
        """A client for an `endpoint.json` record: its URL, model and the run's key, read from
        the file the record names (readable only by the run's owner)."""
        key_file = endpoint.get("api_key_file")
        key = Path(key_file).read_text().strip() if key_file else None
        return cls(endpoint["base_url"], endpoint["model"], timeout_s, retries, backoff_s, key)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body` to `<base_url><path>` with this client's key, timeout and retries."""
        return request_json(self.base_url + path, body, self.timeout_s, self.retries, self.backoff_s, self.api_key)

    def get(self, path: str) -> Any:
        """GET `<base_url><path>` (`/models`) with this client's key, timeout and retries."""
        return request_json(self.base_url + path, None, self.timeout_s, self.retries, self.backoff_s, self.api_key)

    def chat(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0) -> str:
        """The assistant's answer to one user message (`/chat/completions`)."""
        return self.complete([{"role": "user", "content": prompt}], max_tokens, temperature)

    def complete(self, messages: list[dict[str, str]], max_tokens: int = 128, temperature: float = 0.0) -> str:
        """The assistant's next turn after `messages` (`/chat/completions`)."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        answer = self.post("/chat/completions", body)
        content: str = answer["choices"][0]["message"]["content"] or ""
        return content

    def embed(self, texts: list[str], model: str | None = None) -> list[list[float]]:
        """One vector per text, in input order (`/embeddings`)."""
        body = {"model": model or self.model, "input": texts}
        answer = self.post("/embeddings", body)
        return [d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])]

    def rerank(
        self, query: str, documents: list[str], model: str | None = None, options: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """`[{index, relevance_score}]`, most relevant first (`/rerank`); `options`: the engine's
        own request fields (vLLM's `truncate_prompt_tokens`)."""
        body = {"model": model or self.model, "query": query, "documents": documents, **(options or {})}
        results: list[dict[str, Any]] = self.post("/rerank", body)["results"]
        return results

    def openai(self) -> Any:
        """The official `openai.OpenAI` client for this server (needs `pip install openai`)."""
        try:
            from openai import OpenAI
        except ImportError:
            raise ImportError("EndpointClient.openai() needs the openai package: pip install openai") from None
        return OpenAI(base_url=self.base_url, api_key=self.api_key or "none")
