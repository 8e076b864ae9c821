"""The key guard as an ASGI app sees it: every request but `/health` needs `Bearer <key>` in
one `Authorization` header; the query string, a second header, another scheme or bytes that
are not ASCII authenticate nothing; websockets are closed before the handshake. (The real
servers behind it are walked route by route in tests/integration/test_server_keys.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hpcft.keyguard import UNAUTHORIZED, RequireKey, bearer_matches

KEY = "k" * 43


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The server behind the guard: says which path it was asked."""
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def call(path: str, headers: list[tuple[bytes, bytes]], kind: str = "http", **scope: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    request = {"type": kind, "method": "POST", "path": path, "headers": headers, "query_string": b"", **scope}
    asyncio.run(RequireKey(app, key=KEY)(request, receive, send))
    return sent


def status(sent: list[dict[str, Any]]) -> int:
    return int(sent[0]["status"])


def bearer(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", value)]


def test_only_the_right_key_in_one_header_passes():
    assert status(call("/pooling", bearer(b"Bearer " + KEY.encode()))) == 200
    assert status(call("/pooling", bearer(b"bearer " + KEY.encode()))) == 200  # the scheme in any case
    refused = [
        [],
        bearer(b"Bearer wrong"),
        bearer(KEY.encode()),  # no scheme
        bearer(b"Basic " + KEY.encode()),
        bearer(b"Bearer  " + KEY.encode()),
        bearer(b"Bearer " + KEY.encode() + b" "),
        bearer(b"Bearer \xc3\xa9\xff"),  # not ASCII: wrong, not an error
        [*bearer(b"Bearer " + KEY.encode()), *bearer(b"Bearer wrong")],  # two headers
    ]
    for headers in refused:
        sent = call("/invocations", headers)
        assert status(sent) == 401 and sent[1]["body"] == UNAUTHORIZED, headers
        assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]


def test_a_key_in_the_query_string_authenticates_nothing():
    sent = call("/v1/models", [], query_string=f"api_key={KEY}&key={KEY}&access_token={KEY}".encode())
    assert status(sent) == 401


def test_health_alone_answers_without_the_key_and_the_refusal_is_the_same_for_every_path():
    assert call("/health", [])[1]["body"] == b"/health"
    bodies = {call(path, [])[1]["body"] for path in ("/metrics", "/no/such/route", "/health/", "/healthz", "//health")}
    assert bodies == {UNAUTHORIZED}  # which routes exist is not told
    assert status(call("/api/health", [], root_path="/api")) == 200  # under vLLM's --root-path
    assert status(call("/api/metrics", [], root_path="/api")) == 401


def test_websockets_need_the_key_too_and_lifespan_events_pass():
    assert call("/v1/realtime", [], kind="websocket") == [{"type": "websocket.close", "code": 1008}]
    assert status(call("/v1/realtime", bearer(b"Bearer " + KEY.encode()), kind="websocket")) == 200
    assert call("/", [], kind="lifespan") == []


def test_no_key_no_server(monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="no key"):
        RequireKey(app)
    monkeypatch.setenv("VLLM_API_KEY", KEY)  # what vLLM's --middleware gives it: the app alone
    assert RequireKey(app).key == KEY.encode()


def test_bearer_matches_compares_bytes():
    assert bearer_matches([b"Bearer abc"], b"abc")
    assert not bearer_matches([b"Bearer abc"], b"abd") and not bearer_matches([], b"abc")
    assert not bearer_matches([b"Bearer \xe2\x82\xac"], b"abc")
