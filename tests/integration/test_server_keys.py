"""Every route of the deploy servers this module starts itself, with the command and
environment the deploy job gives them (LLaMA-Factory's API server on the tiny Llama, hpcft's
own FlagEmbedding server on MiniLM), needs the run's key but `/health`
(tests/integration/keyed_routes.py walks them). vLLM's chat and pooling servers are walked
where test_vllm_serving.py's real runs keep serving them: a vLLM start costs ~30 s of CPU.
One server at a time (module-scoped, in one worker)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcft.configure import load_config
from hpcft.frameworks import adapter_for
from hpcft.jobs import deploy
from hpcft.jobs.process import resolve
from hpcft.rundir import RunLayout
from tests.conftest import TINY_LLAMA, needs_training
from tests.integration.keyed_routes import (
    Server,
    assert_every_route_but_health_needs_the_key,
    assert_the_key_serves_real_requests_and_is_never_logged,
    call,
    published_routes,
)

pytestmark = [needs_training, pytest.mark.xdist_group("server_keys")]

KEY = secrets.token_urlsafe(32)
OVERRIDES = {
    # The base beside the fine-tuned model, as eval scores both: one process, routed by name.
    "llamafactory": ["model=tiny_llama", "deploy.backend=huggingface", "framework.finetuning_type=full"],
    "hpcft-serve": ["model=minilm", "deploy.backend=huggingface", "eval.baseline=false"],
}


def trained_weights(layout: RunLayout, source: Path, matryoshka: bool) -> None:
    """`train/` as training would leave it: here the model itself (file by file, its config
    saying it was trained for shorter embeddings where `matryoshka`)."""
    layout.train_output.mkdir(parents=True)
    for file in source.iterdir():
        if file.name == "config.json" and matryoshka:
            config = {**json.loads(file.read_text()), "matryoshka_dimensions": [128, 384]}
            (layout.train_output / file.name).write_text(json.dumps(config))
        else:
            (layout.train_output / file.name).symlink_to(file)


def start(name: str, tmp: Path) -> tuple[Server, subprocess.Popen[bytes]]:
    """The deploy job's server for `name`, as `deploy.start_server` starts it, its output in a file."""
    cfg = load_config(OVERRIDES[name])
    adapter, layout = adapter_for(cfg), RunLayout(tmp / "run")
    trained_weights(layout, TINY_LLAMA if "llama" in cfg.model.name else Path(cfg.model.path), name == "hpcft-serve")
    for relative, text in adapter.deploy_files(layout).items():
        (layout.root / relative).parent.mkdir(parents=True, exist_ok=True)
        (layout.root / relative).write_text(text)
    job, port = adapter.deploy_job(layout), deploy.free_port()
    values = {"{host}": "127.0.0.1", "{port}": str(port), "{model}": job.model_name, "{api_key}": KEY}
    env = {**os.environ, **{k: deploy.filled(v, values) for k, v in job.env.items()}}
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            resolve([deploy.filled(a, values) for a in job.serve_argv]),
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    return Server(name, url, job.model_name, KEY, (log,), lambda: process.poll() is None), process


def wait_healthy(server: Server, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.running():
            raise AssertionError(f"{server.name} exited: {server.log_text()[-3000:]}")
        try:
            if call(server, "GET", "/health", None)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"{server.name} not healthy in {timeout_s} s: {server.log_text()[-3000:]}")


@pytest.fixture(scope="module", params=["llamafactory", "hpcft-serve"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    served, process = start(request.param, tmp_path_factory.mktemp(request.param))
    try:
        wait_healthy(served)
        served.routes = published_routes(served)
        yield served
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def test_every_route_but_health_needs_the_key(server):
    assert_every_route_but_health_needs_the_key(server)


def test_the_key_serves_real_requests_and_is_never_logged(server):
    assert_the_key_serves_real_requests_and_is_never_logged(server)


def test_llamafactorys_server_answers_the_fine_tuned_model_and_its_base_by_name_and_no_other(server):
    if server.name != "llamafactory":
        pytest.skip("LLaMA-Factory's API holds one model an app: hpcft routes by name (hpcft.model_router)")
    listed = json.loads(call(server, "GET", "/v1/models", server.key)[1])
    assert [m["id"] for m in listed["data"]] == ["tiny_llama-ft", "tiny_llama-base"], listed
    for name in ("tiny_llama-ft", "tiny_llama-base"):
        ask = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        status, answer = call(server, "POST", "/v1/chat/completions", server.key, ask)
        assert status == 200 and json.loads(answer)["choices"][0]["message"]["role"] == "assistant", answer
    ask = {"model": "tiny_llama-typo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    status, answer = call(server, "POST", "/v1/chat/completions", server.key, ask)
    assert status == 404 and json.loads(answer)["error"]["code"] == "model_not_found"
