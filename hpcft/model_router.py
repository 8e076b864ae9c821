"""Several models behind one server address, each answered by its own app.

LLaMA-Factory's API server (`create_app`) holds one model and answers whatever model name a
request gives. To score the base model beside the fine-tuned one, `hpcft.serve_llamafactory`
loads both in one process (one interpreter and one import of the framework, ~9 s of CPU, and
on GPUs one CUDA context, instead of two servers) and puts `ByModel` in front of their apps,
as vLLM serves an adapter beside its base on one address:

- a POST goes to the app of the model its JSON body names (`"model"`); a name not served is
  answered 404 (`model_not_found`, as vLLM and OpenAI answer it), so a typo never gets another
  model's answers; a body without a name (or not JSON) goes to the first app, which answers
  it as LLaMA-Factory does (422);
- `GET /v1/models` lists every model (LLaMA-Factory's own lists one, from `API_MODEL_NAME`);
- `/health` answers 200 with nothing, for the deploy job's checks (`hpcft.keyguard` lets it
  through without the key);
- anything else goes to the first app; each app's lifespan (startup and shutdown) runs.

The apps are Starlette applications (FastAPI's, as LLaMA-Factory's are): their lifespans are
entered as Starlette's router enters its own.
"""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack
from typing import Any

from hpcft.keyguard import HEALTH_PATH, Message, Receive, Scope, Send, relative_path

MODELS_PATH = "/v1/models"


class ByModel:
    """ASGI app: each request to the app of the model it names (see the module)."""

    def __init__(self, apps: dict[str, Any]) -> None:
        if not apps:
            raise ValueError("ByModel needs at least one model's app")
        self.apps, self.first = apps, next(iter(apps.values()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
        elif scope["type"] != "http":
            await self.first(scope, receive, send)
        elif relative_path(scope) == HEALTH_PATH:
            await answer(send, 200, None)
        elif scope["method"] == "GET" and relative_path(scope) == MODELS_PATH:
            await answer(send, 200, {"object": "list", "data": [model_card(name) for name in self.apps]})
        elif scope["method"] != "POST":
            await self.first(scope, receive, send)
        else:
            body = await whole_body(receive)
            name = requested_model(body)
            app = self.first if name is None else self.apps.get(name)
            if app is None:
                await answer(send, 404, not_found(name or ""))
            else:
                await app(scope, replay(body, receive), send)

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every app's lifespan, entered in order at startup and left in reverse at shutdown;
        what they yield joins the server's lifespan state, as Starlette's router does."""
        await receive()  # lifespan.startup
        async with AsyncExitStack() as stack:
            try:
                for app in self.apps.values():
                    state = await stack.enter_async_context(app.router.lifespan_context(app))
                    if state is not None and "state" in scope:
                        scope["state"].update(state)
            except BaseException as e:
                await send({"type": "lifespan.startup.failed", "message": f"{type(e).__name__}: {e}"})
                raise
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def model_card(name: str) -> dict[str, Any]:
    """One entry of `GET /v1/models`, as LLaMA-Factory's `ModelCard` writes it."""
    return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "owner"}


def not_found(name: str) -> dict[str, Any]:
    message = f"The model `{name}` does not exist."
    return {"error": {"message": message, "type": "NotFoundError", "param": "model", "code": "model_not_found"}}


def requested_model(body: bytes) -> str | None:
    """The `"model"` a JSON request body names, or None (no body, not JSON, no name)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    name = parsed.get("model") if isinstance(parsed, dict) else None
    return name if isinstance(name, str) else None


async def whole_body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # the client left: nothing to route
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the chosen app: the body read already, then the client's own messages."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


async def answer(send: Send, status: int, content: dict[str, Any] | None) -> None:
    body = b"" if content is None else json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
