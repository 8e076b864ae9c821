"""An OpenAI-compatible server for embedding and reranker models, run by the deploy job.

    python -m hpcft.serve --kind embedding --model minilm-ft=/run/train --model base=/models/x

Endpoints (`routes`): `GET /health` (200, empty: the one route without the key); `GET
/v1/models`; `POST /v1/embeddings` (`{"model", "input": str | [str], "dimensions"?,
"encoding_format"?}`, the OpenAI shape); `POST /v1/rerank` (`{"model", "query", "documents",
"top_n"?}`, the shape common rerank APIs use). Several models can be served at once (the eval
job compares the fine-tuned model with its base). Reads `API_HOST`, `API_PORT` and `API_KEY`
like LLaMA-Factory's server; it will not start without a key, and every request but the
health check must carry it as a bearer token (`hpcft.keyguard`).
Heavy imports happen here, inside the job only.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hpcft.keyguard import HEALTH_PATH, UNAUTHORIZED, bearer_matches


def embedder(path: str, pooling: str, *, normalize: bool, fp16: bool, devices: Any) -> Any:
    """FlagEmbedding's embedder for `pooling`: `FlagLLMModel` pools the last token (decoder-only
    models; it refuses any other pooling), `FlagModel` pools `cls` or `mean`."""
    from FlagEmbedding import FlagLLMModel, FlagModel

    if pooling == "last_token":
        return FlagLLMModel(path, normalize_embeddings=normalize, use_fp16=fp16, devices=devices)
    return FlagModel(path, pooling_method=pooling, normalize_embeddings=normalize, use_fp16=fp16, devices=devices)


class Models:
    """The loaded models by name; FlagEmbedding does the encoding and scoring."""

    def __init__(self, kind: str, paths: dict[str, str], pooling: str, normalize: bool) -> None:
        import torch
        from FlagEmbedding import FlagReranker

        self.kind, self.normalize = kind, normalize
        self.matryoshka = {name: matryoshka_sizes(path) for name, path in paths.items()}
        # The GPUs the job was given (FlagEmbedding spreads over all it sees), else the CPU.
        gpu = torch.cuda.is_available()
        devices, fp16 = (None, True) if gpu else ("cpu", False)
        if kind == "embedding":
            self.models: dict[str, Any] = {
                name: embedder(path, pooling, normalize=normalize, fp16=fp16, devices=devices)
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

    def check_dimensions(self, name: str, dimensions: object) -> None:
        """OpenAI's `dimensions` (a shorter embedding), for a model trained to give one: its
        config.json names `matryoshka_dimensions` or `is_matryoshka`, as vLLM asks. Any other
        model is refused, as vLLM refuses it: the first numbers of an ordinary embedding are no
        embedding of their own, and ranking by them quietly loses quality."""
        self.get(name)
        sizes = self.matryoshka.get(name)
        if sizes is None:
            raise ValueError(
                f"model {name!r} was not trained for shorter embeddings (Matryoshka): leave 'dimensions' unset"
            )
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise ValueError("'dimensions' must be a positive integer")
        if sizes and dimensions not in sizes:
            raise ValueError(f"model {name!r} gives 'dimensions' of {sizes} only, not {dimensions}")

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


def matryoshka_sizes(path: str) -> list[int] | None:
    """The sizes a model's embeddings may be cut to, from its config.json as vLLM reads it:
    `matryoshka_dimensions` (those), `is_matryoshka` ([]: any), else None (not at all)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if config.get("matryoshka_dimensions"):
        return [int(d) for d in config["matryoshka_dimensions"]]
    return [] if config.get("is_matryoshka") else None


def shortened(vectors: list[list[float]], dimensions: int, normalize: bool) -> list[list[float]]:
    """The first `dimensions` numbers of each vector, L2-normalised again (OpenAI's semantics)."""
    if dimensions > len(vectors[0]):
        raise ValueError(f"'dimensions' must be at most {len(vectors[0])}, the model's size")
    cut = [v[:dimensions] for v in vectors]
    if not normalize:
        return cut
    return [[x / norm for x in v] if (norm := math.sqrt(sum(x * x for x in v))) else v for v in cut]


def embeddings_response(models: Models, request: dict[str, Any]) -> dict[str, Any]:
    """`/v1/embeddings` as OpenAI answers it: a string or a list in, vectors (or base64) out,
    `dimensions` long where asked (`Models.check_dimensions`)."""
    texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
    dimensions = request.get("dimensions")
    if dimensions is not None:
        models.check_dimensions(request["model"], dimensions)
    vectors: list[Any] = models.embed(request["model"], texts)
    if dimensions is not None:
        vectors = shortened(vectors, dimensions, models.normalize)
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


def routes(kind: str) -> list[tuple[str, str]]:
    """Every route of a server for `kind` models, (method, path): the health check, which
    alone answers without the key, first."""
    return [("GET", HEALTH_PATH), ("GET", "/v1/models"), *(("POST", path) for path, k in ROUTES if k == kind)]


def make_handler(models: Models, api_key: str) -> type[BaseHTTPRequestHandler]:
    """Request handlers for `models` behind `api_key` (required: no key, no server)."""
    if not api_key:
        raise ValueError("hpcft.serve needs a key (API_KEY): every request but the health check must carry it")
    key = api_key.encode()

    class Handler(BaseHTTPRequestHandler):
        def _path(self) -> str | None:
            """The request's path (its query string plays no part), once its key is checked:
            None when it has been answered 401. The header is compared as the bytes sent."""
            path = urlsplit(self.path).path
            given = [str(v).encode("latin-1", "replace") for v in self.headers.get_all("Authorization") or []]
            if path == HEALTH_PATH or bearer_matches(given, key):
                return path
            self._send_bytes(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
            return None

        def _send(self, status: int, body: dict[str, Any]) -> None:
            self._send_bytes(status, json.dumps(body).encode())

        def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self._path()
            if path == HEALTH_PATH:
                self._send_bytes(200, b"")
            elif path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in models.models]})
            elif path is not None:
                self._send(404, {"error": {"message": f"no route {path}"}})

        def do_POST(self) -> None:
            path = self._path()
            if path is None:
                return
            route = ROUTES.get((path, models.kind))
            if route is None:
                self._send(404, {"error": {"message": f"no route {path} for a {models.kind} model"}})
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
    parser.add_argument("--pooling", default="cls", help="embedding pooling: cls, mean or last_token (decoder-only)")
    parser.add_argument("--no-normalize", action="store_true", help="do not L2-normalise embeddings")
    args = parser.parse_args(argv)
    key = os.environ.get("API_KEY", "")
    if not key:  # before loading any model
        parser.error("API_KEY is not set: every request but the health check must carry the run's key")
    paths = dict(m.split("=", 1) for m in args.model)
    models = Models(args.kind, paths, args.pooling, not args.no_normalize)
    host, port = os.environ.get("API_HOST", "127.0.0.1"), int(os.environ.get("API_PORT", "8000"))
    server = Server((host, port), make_handler(models, key))
    print(f"hpcft serve: {args.kind} models {', '.join(paths)} on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
