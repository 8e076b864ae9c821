"""An OpenAI-compatible server for embedding and reranker models, run by the deploy job.

    python -m hpcft.serve --kind embedding --model minilm-ft=/run/train --model base=/models/x

Endpoints: `GET /v1/models`; `POST /v1/embeddings` (`{"model", "input": str | [str]}`, the
OpenAI shape); `POST /v1/rerank` (`{"model", "query", "documents", "top_n"?}`, the shape
common rerank APIs use). Several models can be served at once (the eval job compares the
fine-tuned model with its base). Reads `API_HOST`, `API_PORT` and `API_KEY` (every request
must then carry it as a bearer token) like LLaMA-Factory's server.
Heavy imports happen here, inside the job only.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Models:
    """The loaded models by name; FlagEmbedding does the encoding and scoring."""

    def __init__(self, kind: str, paths: dict[str, str], pooling: str, normalize: bool) -> None:
        import torch
        from FlagEmbedding import FlagModel, FlagReranker

        self.kind = kind
        # The GPUs the job was given (FlagEmbedding spreads over all it sees), else the CPU.
        gpu = torch.cuda.is_available()
        devices, fp16 = (None, True) if gpu else ("cpu", False)
        if kind == "embedding":
            self.models: dict[str, Any] = {
                name: FlagModel(
                    path, pooling_method=pooling, normalize_embeddings=normalize, use_fp16=fp16, devices=devices
                )
                for name, path in paths.items()
            }
        else:
            self.models = {name: FlagReranker(path, use_fp16=fp16, devices=devices) for name, path in paths.items()}
        # One request at a time per process: a fast tokenizer shared by threads raises
        # "Already borrowed" under concurrent use. vLLM is the engine that batches.
        self.lock = threading.Lock()

    def get(self, name: str) -> Any:
        if name not in self.models:
            raise KeyError(f"unknown model {name!r}; served: {', '.join(self.models)}")
        return self.models[name]

    def embed(self, name: str, texts: list[str]) -> list[list[float]]:
        if not texts:
            raise ValueError("'input' must not be empty")
        with self.lock:
            vectors = self.get(name).encode(texts)
        return [[float(x) for x in v] for v in vectors]

    def rerank(self, name: str, query: str, documents: list[str]) -> list[float]:
        if not documents:
            raise ValueError("'documents' must not be empty")
        with self.lock:
            scores = self.get(name).compute_score([[query, d] for d in documents])
        return [float(s) for s in (scores if isinstance(scores, list) else [scores])]


def embeddings_response(models: Models, request: dict[str, Any]) -> dict[str, Any]:
    """`/v1/embeddings` as OpenAI answers it: a string or a list in, vectors (or base64) out."""
    texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
    vectors: list[Any] = models.embed(request["model"], texts)
    if request.get("encoding_format") == "base64":  # the OpenAI API's compact form
        vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": request["model"]}


def rerank_response(models: Models, request: dict[str, Any]) -> dict[str, Any]:
    """`/v1/rerank` as vLLM and Jina answer it: documents by score, best first (`top_n` of them)."""
    scores = models.rerank(request["model"], request["query"], request["documents"])
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[: request.get("top_n") or len(scores)]
    return {"model": request["model"], "results": [{"index": i, "relevance_score": scores[i]} for i in order]}


ROUTES = {("/v1/embeddings", "embedding"): embeddings_response, ("/v1/rerank", "rerank"): rerank_response}
"""What each kind of model answers, by path."""


def make_handler(models: Models, api_key: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _authorized(self) -> bool:
            """With a key, every request must present it (`Authorization: Bearer <key>`)."""
            if not api_key or hmac.compare_digest(self.headers.get("Authorization", ""), f"Bearer {api_key}"):
                return True
            self._send(401, {"error": {"message": "a valid API key is required", "type": "invalid_api_key"}})
            return False

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in models.models]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if not self._authorized():
                return
            route = ROUTES.get((self.path, models.kind))
            if route is None:
                self._send(404, {"error": {"message": f"no route {self.path} for a {models.kind} model"}})
                return
            try:
                self._send(200, route(models, json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))))
            except (KeyError, ValueError, TypeError) as e:
                self._send(400, {"error": {"message": str(e)}})

        def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request is noise
            return

    return Handler


class Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default, 5, refuses a burst of eval clients


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve embedding / reranker models (OpenAI-compatible).")
    parser.add_argument("--kind", choices=("embedding", "rerank"), required=True)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH", help="repeatable")
    parser.add_argument("--pooling", default="cls", help="embedding pooling: cls or mean")
    parser.add_argument("--no-normalize", action="store_true", help="do not L2-normalise embeddings")
    args = parser.parse_args(argv)
    paths = dict(m.split("=", 1) for m in args.model)
    models = Models(args.kind, paths, args.pooling, not args.no_normalize)
    host, port = os.environ.get("API_HOST", "127.0.0.1"), int(os.environ.get("API_PORT", "8000"))
    server = Server((host, port), make_handler(models, os.environ.get("API_KEY")))
    print(f"hpcft serve: {args.kind} models {', '.join(paths)} on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
