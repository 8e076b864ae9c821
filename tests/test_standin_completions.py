"""The stand-in engine's `/v1/completions` (benchmarks/standin_engine.py) answers what
lm-evaluation-harness's `local-completions` model sends, in the shape lm-eval's own parsers
read: requests built by its `_create_payload`, answers read by its `parse_logprobs` and
`parse_generations`. No timing."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from benchmarks.standin_engine import Engine, Server

lm_eval = pytest.importorskip("lm_eval.models.openai_completions")
API = lm_eval.LocalCompletionsAPI


def post(server: Server, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        server.endpoint["base_url"] + "/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def payload(prompt: Any, generate: bool, gen_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    model = API.__new__(API)  # `_create_payload` reads only these two
    model.model, model._max_gen_toks = "standin", 256
    return dict(model._create_payload(prompt, generate=generate, gen_kwargs=gen_kwargs, eos="</s>"))


def test_log_likelihoods_of_a_batch_of_token_ids_parse_with_lm_evals_parser():
    prompts = [[5, 6, 7, 8], [9, 10, 11]]  # context + continuation; contexts of 2 tokens
    with Server(Engine(latency_s=0.0, capacity=4)) as server:
        out = post(server, payload(prompts, generate=False))
        assert server.engine.prompts == 2
    parsed = API.parse_logprobs(out, tokens=prompts, ctxlens=[2, 2])
    assert len(parsed) == 2
    for (logprob, greedy), prompt, choice in zip(parsed, prompts, out["choices"], strict=True):
        assert logprob == pytest.approx(sum(choice["logprobs"]["token_logprobs"][2:-1]))
        assert logprob < 0 and isinstance(greedy, bool)
        assert len(choice["logprobs"]["tokens"]) == len(prompt) + 1  # echoed, plus the one generated


def test_generations_parse_with_lm_evals_parser_and_repeat():
    gen = {"until": ["\n"], "max_gen_toks": 2, "do_sample": False, "temperature": 0.0}
    with Server(Engine(latency_s=0.0, capacity=4)) as server:
        first = API.parse_generations(post(server, payload([[1, 2, 3]], generate=True, gen_kwargs=dict(gen))))
        again = API.parse_generations(post(server, payload([[1, 2, 3]], generate=True, gen_kwargs=dict(gen))))
        text = API.parse_generations(post(server, payload("Question: x\nAnswer:", generate=True, gen_kwargs=dict(gen))))
    assert first == again and len(first) == 1 and len(first[0].split()) == 2
    assert len(text) == 1 and text[0].startswith(" ")
