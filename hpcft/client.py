"""A small client for the OpenAI-compatible endpoint a deploy job serves.

Standard library only, so the eval job and the Python API (`Run.client()`) share it without
extra dependencies. With the `openai` package installed, `EndpointClient.openai()` gives the
official client pointed at the same server.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any


def post_json(url: str, body: dict[str, Any], timeout_s: float) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as r:
        return json.loads(r.read())


@dataclass(frozen=True)
class EndpointClient:
    base_url: str
    """`http://<node>:<port>/v1`, as written to `deploy/endpoint.json`."""
    model: str
    """The served model's name (the fine-tuned one unless told otherwise)."""
    timeout_s: float = 300.0
    """Timeout of one request."""

    @classmethod
    def from_endpoint(cls, endpoint: dict[str, Any], timeout_s: float = 300.0) -> EndpointClient:
        return cls(endpoint["base_url"], endpoint["model"], timeout_s)

    def chat(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0) -> str:
        """The assistant's answer to one user message (`/chat/completions`)."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        answer = post_json(self.base_url + "/chat/completions", body, self.timeout_s)
        content: str = answer["choices"][0]["message"]["content"] or ""
        return content

    def embed(self, texts: list[str], model: str | None = None) -> list[list[float]]:
        """One vector per text, in input order (`/embeddings`)."""
        body = {"model": model or self.model, "input": texts}
        answer = post_json(self.base_url + "/embeddings", body, self.timeout_s)
        return [d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])]

    def rerank(self, query: str, documents: list[str], model: str | None = None) -> list[dict[str, Any]]:
        """`[{index, relevance_score}]`, most relevant first (`/rerank`)."""
        body = {"model": model or self.model, "query": query, "documents": documents}
        results: list[dict[str, Any]] = post_json(self.base_url + "/rerank", body, self.timeout_s)["results"]
        return results

    def openai(self) -> Any:
        """The official `openai.OpenAI` client for this server (needs `pip install openai`)."""
        try:
            from openai import OpenAI
        except ImportError:
            raise ImportError("EndpointClient.openai() needs the openai package: pip install openai") from None
        return OpenAI(base_url=self.base_url, api_key="not-needed")
