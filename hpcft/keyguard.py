"""The run's key in front of every route of a deploy server, but its health route.

vLLM's own `--api-key` guards only `/v1/*` (and a few other prefixes): `/invocations`,
`/pooling`, `/score`, `/rerank`, `/tokenize`, `/detokenize`, `/metrics` answer anyone who
reaches the node. `RequireKey` is an ASGI middleware that asks every request but `/health`
for `Authorization: Bearer <key>`, and answers anything else 401 with nothing more (not which
routes exist, not what was wrong). vLLM loads it by import path (`--middleware
hpcft.keyguard.RequireKey`, in `VllmServer.argv`) and it reads the key from `VLLM_API_KEY`,
the variable vLLM gets it in anyway; LLaMA-Factory's server gets it from
`hpcft.serve_llamafactory`, and hpcft's own server checks the header with `bearer_matches`.

A key in the query string authenticates nothing. Standard library only: it is imported in
the deploy stage's serving environment, which has no training stack.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PATH = "/health"
"""The one route that answers without the key: up or not, nothing else."""
KEY_VARIABLE = "VLLM_API_KEY"
"""Where the key is read from when none is given (vLLM's own variable: the deploy job sets it)."""
UNAUTHORIZED = json.dumps({"error": {"message": "Unauthorized", "type": "invalid_api_key"}}).encode()
"""The whole answer to a request without the right key, on every server (the OpenAI shape)."""


def bearer_matches(authorization: list[bytes], key: bytes) -> bool:
    """One `Authorization` header, `Bearer <key>` (the scheme in any case), compared in constant
    time as bytes, so a header that is not ASCII is just wrong."""
    if len(authorization) != 1:
        return False
    scheme, _, token = authorization[0].partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token, key)


def relative_path(scope: Scope) -> str:
    """The request's path below the app's root path (vLLM's `--root-path`)."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


class RequireKey:
    """ASGI middleware: every HTTP request but those to `/health` (any method: the app
    decides), and every websocket, must carry the key."""

    def __init__(self, app: ASGIApp, key: str | None = None) -> None:
        key = key if key is not None else os.environ.get(KEY_VARIABLE)
        if not key:
            raise RuntimeError(f"hpcft.keyguard: no key (set {KEY_VARIABLE}); refusing to serve without one")
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or (kind == "http" and relative_path(scope) == HEALTH_PATH):
            await self.app(scope, receive, send)  # lifespan events; the health route
            return
        headers = [value for name, value in scope.get("headers", ()) if name.lower() == b"authorization"]
        if bearer_matches(headers, self.key):
            await self.app(scope, receive, send)
        elif kind == "websocket":  # refused before the handshake (the server answers 403)
            await send({"type": "websocket.close", "code": 1008})
        else:
            await refuse(send)


async def refuse(send: Send) -> None:
    """401, the same few bytes whatever was wrong."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(UNAUTHORIZED)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": UNAUTHORIZED})
