"""A local stand-in for a batching inference engine: an OpenAI-style `/v1/chat/completions`
that answers after a fixed latency, at most `capacity` requests at once (more wait their
turn, as in an engine's scheduler), with faults on request. It listens on 127.0.0.1 only.

`/v1/completions` answers what lm-evaluation-harness's `local-completions` model sends:
generations, and log-likelihoods (`echo` + `logprobs`: every prompt token's log-probability,
the first None, as vLLM answers them), for one prompt or a list of them (strings or token
ids); each prompt holds one of the `capacity` slots for the latency.

Used by the eval benchmark (its capacity is the floor: `capacity / latency` rows/s), the
suites benchmark, and the eval tests (fault injection: a server that fails from some row
on, then comes back).
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import product
from typing import Any


@dataclass
class Faults:
    """Which requests fail: those numbered [fail_from, fail_until) by arrival (None: never)."""

    fail_from: int | None = None
    fail_until: int | None = None
    drop: bool = False
    """Close the connection without an answer instead of a 500."""


@dataclass
class Engine:
    latency_s: float = 0.1
    capacity: int = 64
    faults: Faults = field(default_factory=Faults)
    answered: Counter[str] = field(default_factory=Counter)
    """Prompt -> times answered successfully (shared across restarts when passed in)."""
    answer_words: int = 0
    """Words in each answer: 0 answers "answer to <prompt>"; N answers `prose(prompt, N)`."""
    dims: int = 384
    """Size of the stand-in embedding vectors (`/v1/embeddings`)."""
    context_chars: int | None = None
    """Longer prompts are refused with a 400, as vLLM refuses a prompt past its context."""
    cuts: Counter[int | None] = field(default_factory=Counter)
    """`truncate_prompt_tokens` -> embedding requests that asked for it (None: not asked)."""
    arrivals: int = 0
    prompts: int = 0
    """Prompts answered by `/v1/completions` (a request may carry several)."""
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(self.capacity)
        self.taking = threading.Lock()  # one request takes its slots at a time: no deadlock

    def hold(self, prompts: int) -> None:
        """Hold a slot per prompt for the latency, as a batch in the engine's scheduler."""
        with self.taking:
            for _ in range(prompts):
                self.slots.acquire()
        try:
            time.sleep(self.latency_s)
        finally:
            for _ in range(prompts):
                self.slots.release()
        with self.lock:
            self.prompts += prompts

    def arrive(self) -> int:
        with self.lock:
            self.arrivals += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.arrivals - 1

    def leave(self, prompt: str | None) -> None:
        with self.lock:
            self.in_flight -= 1
            if prompt is not None:
                self.answered[prompt] += 1

    def failing(self, number: int) -> bool:
        f = self.faults
        return f.fail_from is not None and number >= f.fail_from and (f.fail_until is None or number < f.fail_until)


FUNCTION_WORDS = ["the", "of", "and", "to", "a", "in", "is", "it", "that", "for"]
FUNCTION_WORDS += ["on", "was", "with", "as", "be", "by", "this", "are", "or", "from"]
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
VOCABULARY = FUNCTION_WORDS + [a + b + "s" * (i % 3 == 0) for i, (a, b) in enumerate(product(SYLLABLES, repeat=2))]
"""~4,900 words, most frequent first: with Zipf weights, about the word spread of English answers."""


def prose(seed: str, words: int) -> str:
    """`words` words drawn from a Zipf-like vocabulary, the same for the same seed: answers and
    references of a realistic length and overlap for scoring."""
    rng = random.Random(zlib.crc32(seed.encode()))
    weights = [1 / rank for rank in range(1, len(VOCABULARY) + 1)]
    return " ".join(rng.choices(VOCABULARY, weights, k=words)) + "."


def stand_in_vector(text: str, dims: int) -> Any:
    """A deterministic unit vector per text: texts sharing a `topic:` prefix point the same way
    (plus noise), so a retrieval eval over them has a known answer."""
    import numpy as np

    topic = text.split(":", 1)[0]
    base = np.random.default_rng(zlib.crc32(topic.encode())).standard_normal(dims)
    noise = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(dims)
    vector = (base + 0.5 * noise).astype(np.float32)
    return vector / np.linalg.norm(vector)


def embeddings(body: dict[str, Any], dims: int) -> dict[str, Any]:
    """`/v1/embeddings` as vLLM answers it, base64 (float32) when asked."""
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    vectors = [stand_in_vector(t, dims) for t in texts]
    as_base64 = body.get("encoding_format") == "base64"
    data = [
        {"index": i, "embedding": base64.b64encode(v.tobytes()).decode() if as_base64 else v.tolist()}
        for i, v in enumerate(vectors)
    ]
    return {"object": "list", "data": data, "model": body.get("model")}


Prompt = str | list[int]


def prompts_of(body: dict[str, Any]) -> list[Prompt]:
    """`prompt` as OpenAI's completions take it: a string, token ids, or a list of either."""
    prompt = body["prompt"]
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)


def token_strings(prompt: Prompt) -> list[str]:
    """The prompt's tokens as text: `t<id>` for token ids, words for a string."""
    if isinstance(prompt, str):
        words = prompt.split(" ")
        return [words[0], *(" " + w for w in words[1:])]
    return [f"t{token}" for token in prompt]


def token_logprob(token: str) -> float:
    """A deterministic log-probability per token, in [-4, -0.1]."""
    return -0.1 - (zlib.crc32(token.encode()) % 40) / 10


def scored(prompt: Prompt, generated: str) -> dict[str, Any]:
    """`logprobs` of an `echo` answer: the prompt's tokens and the one generated, each with its
    log-probability and the top alternatives (the token itself, and `t0` where it is likelier);
    the first token's are None, as vLLM answers them."""
    tokens = [*token_strings(prompt), generated]
    logprobs = [token_logprob(t) for t in tokens]
    top = [{t: p, **({"t0": -0.5} if p < -0.5 and t != "t0" else {})} for t, p in zip(tokens, logprobs, strict=True)]
    offsets = [0]
    for t in tokens[:-1]:
        offsets.append(offsets[-1] + len(t))
    return {
        "tokens": tokens,
        "token_logprobs": [None, *logprobs[1:]],
        "top_logprobs": [None, *top[1:]],
        "text_offset": offsets,
    }


def completions(body: dict[str, Any], answer_words: int) -> dict[str, Any]:
    """`/v1/completions`' answer: one choice per prompt. With `echo`, the prompt's text (its
    tokens), one generated token and `logprobs`; else `answer_words` words (3 when 0) drawn
    from the prompt, at most `max_tokens`."""
    choices = []
    for index, prompt in enumerate(prompts_of(body)):
        most = max(int(body.get("max_tokens") or 16), 1)
        words = prose(str(prompt), answer_words or 3).rstrip(".").split(" ")[:most]
        text = " " + " ".join(words)
        choice: dict[str, Any] = {"index": index, "text": text, "logprobs": None, "finish_reason": "length"}
        if body.get("echo"):
            echoed = "".join(token_strings(prompt))
            choice |= {"text": echoed + " " + words[0], "logprobs": scored(prompt, " " + words[0])}
        choices.append(choice)
    return {"id": "cmpl-standin", "object": "text_completion", "model": body.get("model"), "choices": choices}


def _handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One write per answer, sent at once: headers and body in separate small writes hit
        # Nagle's algorithm against the client's delayed ACK, ~40 ms a request (real engines
        # such as uvicorn do not).
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # `/v1/models`, as OpenAI lists them: no context length
            self._send(200, {"object": "list", "data": [{"id": "standin", "object": "model"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path.endswith("/embeddings"):
                engine.cuts[body.get("truncate_prompt_tokens")] += 1
                self._send(200, embeddings(body, engine.dims))
                return
            if self.path.endswith("/v1/completions"):
                engine.arrive()
                engine.hold(len(prompts_of(body)))
                engine.leave(None)
                self._send(200, completions(body, engine.answer_words))
                return
            number, prompt = engine.arrive(), body["messages"][-1]["content"]
            if engine.context_chars is not None and len(prompt) > engine.context_chars:
                engine.leave(None)
                self._send(400, {"error": {"message": "This model's maximum context length is exceeded"}})
                return
            if engine.failing(number):
                engine.leave(None)
                if engine.faults.drop:
                    self.close_connection = True  # no answer at all: the client sees a dropped connection
                else:
                    self._send(500, {"error": "injected failure"})
                return
            with engine.slots:
                time.sleep(engine.latency_s)
            engine.leave(prompt)
            content = prose(prompt, engine.answer_words) if engine.answer_words else f"answer to {prompt}"
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

        def _send(self, code: int, data: dict[str, Any]) -> None:
            payload = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


class _Listener(ThreadingHTTPServer):
    request_queue_size = 1024
    """The listen backlog (http.server's default is 5): 64 clients connecting at once would
    overflow 5, and each dropped connect is retried by the kernel only after 1 s. Engines'
    servers (uvicorn: 2048) keep a deep backlog."""


class Server:
    """The engine served on 127.0.0.1 in a background thread; a context manager."""

    def __init__(self, engine: Engine, port: int = 0) -> None:
        self.engine = engine
        self.httpd = _Listener(("127.0.0.1", port), _handler(engine))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> dict[str, Any]:
        return {"base_url": f"http://127.0.0.1:{self.httpd.server_port}/v1", "model": "standin"}

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
