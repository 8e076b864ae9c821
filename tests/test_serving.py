"""The deploy stage's serving, up to the process boundary: vLLM's command for each kind of
fine-tune, the run's API key (a 0600 file, in no record), the server address, and the
embedding server refusing requests without the key (the real engines run in tests/integration)."""

from __future__ import annotations

import json
import socket
import stat
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hpcft.configure import load_config
from hpcft.frameworks import adapter_for
from hpcft.jobs import deploy
from hpcft.jobs.spec import DeployJob
from hpcft.keyguard import UNAUTHORIZED
from hpcft.rundir import RunLayout
from hpcft.serve import make_handler, matryoshka_sizes, routes, shortened

LAYOUT = RunLayout(Path("/runs/r"))


def vllm_job(*overrides: str) -> DeployJob:
    cfg = load_config(["model=tiny_llama", "deploy.backend=vllm", *overrides])
    return adapter_for(cfg).deploy_job(LAYOUT)


def test_a_lora_adapter_is_served_unmerged_beside_its_base_on_one_server():
    job = vllm_job()
    argv = job.serve_argv
    assert argv[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == load_config(["model=tiny_llama"]).model.path
    assert argv[argv.index("--lora-modules") + 1] == "tiny_llama-ft=/runs/r/train"
    assert argv[argv.index("--max-lora-rank") + 1] == "8" and "--enable-lora" in argv
    assert argv[argv.index("--served-model-name") + 1] == "tiny_llama-base"
    # prompts from the tokenizer LLaMA-Factory trained with (its template where the base has none)
    assert argv[argv.index("--tokenizer") + 1] == "/runs/r/train"
    assert argv[argv.index("--dtype") : argv.index("--dtype") + 2] == ["--dtype", "float32"]  # CPU build
    assert job.weights_ready is None and job.baseline_argv is None  # no merge, one server
    assert (job.model_name, job.baseline_model_name) == ("tiny_llama-ft", "tiny_llama-base")
    assert job.ready_probe and job.env == {"VLLM_API_KEY": "{api_key}", "VLLM_CPU_KVCACHE_SPACE": "1"}
    assert "--api-key" not in argv  # the key comes in the environment, not in `ps`
    # every route but /health behind the key (vLLM's own check covers /v1/* only); no access log
    assert argv[argv.index("--middleware") + 1] == "hpcft.keyguard.RequireKey"
    assert "--disable-uvicorn-access-log" in argv


def test_a_full_fine_tune_serves_its_weights_and_the_base_on_a_second_server():
    job = vllm_job("framework.finetuning_type=full", "framework.lora_rank=64")
    assert job.serve_argv[job.serve_argv.index("--model") + 1] == "/runs/r/train"
    assert job.baseline_argv is not None and "--enable-lora" not in job.serve_argv
    assert "--tokenizer" not in job.serve_argv  # the trained weights' own
    assert job.baseline_argv[job.baseline_argv.index("--tokenizer") + 1] == "/runs/r/train"  # the base, prompted alike
    gpu = adapter_for(
        load_config(["model=internlm2", "cluster=8gpu", "framework.finetuning_type=full", "eval.baseline=true"])
    ).deploy_job(LAYOUT)
    for argv in (gpu.serve_argv, gpu.baseline_argv or []):
        assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.45"  # two servers share the GPUs
        assert "--trust-remote-code" in argv and "--tensor-parallel-size" in argv


def test_rank_rounds_up_to_one_vllm_accepts():
    argv = vllm_job("framework.lora_rank=12").serve_argv
    assert argv[argv.index("--max-lora-rank") + 1] == "16"


def test_without_a_baseline_no_base_name_is_published():
    assert vllm_job("eval.baseline=false").baseline_model_name == ""
    hf = adapter_for(load_config(["model=tiny_llama", "eval.baseline=false"])).deploy_job(LAYOUT)
    assert hf.baseline_model_name == "" and hf.baseline_argv is None


def test_the_key_is_a_file_only_its_owner_reads_and_the_record_names_only_the_file(tmp_path):
    layout = RunLayout(tmp_path)
    layout.deploy.mkdir(parents=True)
    key = deploy.new_api_key(layout)
    assert stat.S_IMODE(layout.api_key.stat().st_mode) == 0o600 and layout.api_key.read_text().strip() == key
    job = vllm_job()
    record = deploy.endpoint_record(job, layout, ["http://node1:8000"], 8000)
    assert record["api_key_file"] == str(layout.api_key) and key not in json.dumps(record)
    assert record["baseline"] == {
        "base_url": "http://node1:8000/v1",
        "model": "tiny_llama-base",
        "api_key_file": str(layout.api_key),
    }
    assert deploy.new_api_key(layout) != key  # a new key per deploy attempt


def test_local_servers_listen_on_loopback_only(monkeypatch):
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    assert deploy.bind_host() == "127.0.0.1"
    monkeypatch.setenv("SLURMD_NODENAME", "node3")
    assert deploy.bind_host() == "0.0.0.0"


def test_the_server_command_gets_its_address_and_key(monkeypatch):
    started = {}
    monkeypatch.setattr(deploy.subprocess, "Popen", lambda argv, env: started.update(argv=argv, env=env))
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    monkeypatch.delenv("API_KEY", raising=False)
    deploy.start_server(vllm_job(), ["python", "--host", "{host}", "--port", "{port}"], "m", 8123, "k3y")
    assert started["argv"][-4:] == ["--host", "127.0.0.1", "--port", "8123"]
    assert started["env"]["VLLM_API_KEY"] == "k3y" and "API_KEY" not in started["env"]
    # LLaMA-Factory's API server reads its address, name and key from the environment
    hf = adapter_for(load_config(["model=tiny_llama", "deploy.backend=huggingface"])).deploy_job(LAYOUT)
    deploy.start_server(hf, hf.serve_argv, "m", 8123, "k3y")
    assert {k: started["env"][k] for k in ("API_HOST", "API_PORT", "API_MODEL_NAME", "API_KEY")} == {
        "API_HOST": "127.0.0.1",
        "API_PORT": "8123",
        "API_MODEL_NAME": "m",
        "API_KEY": "k3y",
    }
    assert all("k3y" not in a for a in started["argv"])  # the key is never on a command line


class FakeModels:
    kind = "embedding"

    def __init__(self) -> None:
        self.models = {"m": None}

    def embed(self, name: str, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]


@pytest.fixture
def embedding_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(FakeModels(), "s3cret"))  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def post(url: str, key: str | None, path: str = "/v1/embeddings") -> int:
    body = json.dumps({"model": "m", "input": ["a", "b"]}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, body, headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_the_embedding_server_refuses_requests_without_the_key(embedding_server):
    assert post(embedding_server, None) == 401
    assert post(embedding_server, "wrong") == 401
    assert post(embedding_server, "s3cret") == 200
    assert post(embedding_server, None, "/v1/embeddings?api_key=s3cret") == 401  # the query string: nothing


def raw_request(url: str, lines: list[bytes]) -> bytes:
    """What the server sends back to a request written byte by byte (urllib sends ASCII headers only)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"\r\n".join([*lines, b"Connection: close", b"", b""]))
        return b"".join(iter(lambda: s.recv(65536), b""))


def test_a_header_that_is_not_ascii_is_a_401_not_a_dropped_connection(embedding_server):
    for value in ("Bearer s3cr\u00e9t".encode(), "Bearer \u20ac".encode(), b"Bearer \xff\xfe", b"\xc3\xa9"):
        answer = raw_request(embedding_server, [b"GET /v1/models HTTP/1.1", b"Authorization: " + value])
        assert answer.startswith(b"HTTP/1.0 401 ") and answer.endswith(UNAUTHORIZED), answer
    two = [b"GET /v1/models HTTP/1.1", b"Authorization: Bearer s3cret", b"Authorization: Bearer x"]
    assert raw_request(embedding_server, two).startswith(b"HTTP/1.0 401 ")  # one header, not a pick


def test_the_health_check_alone_answers_without_the_key(embedding_server):
    with urllib.request.urlopen(embedding_server + "/health", timeout=10) as r:
        assert (r.status, r.read()) == (200, b"")
    assert routes("embedding") == [
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("POST", "/v1/embeddings"),
    ]
    assert routes("rerank")[-1] == ("POST", "/v1/rerank")
    with pytest.raises(ValueError, match="needs a key"):
        make_handler(FakeModels(), "")  # type: ignore[arg-type]


def test_dimensions_cut_and_renormalise_only_for_a_model_trained_for_it(tmp_path):
    assert shortened([[3.0, 4.0, 12.0]], 2, normalize=True) == [[0.6, 0.8]]
    assert shortened([[3.0, 4.0, 12.0]], 2, normalize=False) == [[3.0, 4.0]]
    with pytest.raises(ValueError, match="at most 3"):
        shortened([[3.0, 4.0, 12.0]], 4, normalize=True)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 384}))
    assert matryoshka_sizes(str(tmp_path)) is None  # an ordinary embedder: refused, as vLLM does
    (tmp_path / "config.json").write_text(json.dumps({"matryoshka_dimensions": [64, 128, 384]}))
    assert matryoshka_sizes(str(tmp_path)) == [64, 128, 384]
    (tmp_path / "config.json").write_text(json.dumps({"is_matryoshka": True}))
    assert matryoshka_sizes(str(tmp_path)) == [] and matryoshka_sizes(str(tmp_path / "none")) is None


def test_an_embedder_and_its_base_get_a_vllm_pooling_server_each():
    cfg = load_config(["model=minilm", "deploy.backend=vllm"])
    job = adapter_for(cfg).deploy_job(LAYOUT)
    tuned, base = job.serve_argv, job.baseline_argv or []
    assert tuned[tuned.index("--model") + 1] == "/runs/r/train" and base[base.index("--model") + 1] == cfg.model.path
    assert tuned[tuned.index("--runner") + 1] == "pooling"
    assert json.loads(tuned[tuned.index("--pooler-config") + 1]) == {"pooling_type": "MEAN"}  # MiniLM's pooling
    assert (job.ready_path, job.baseline_model_name) == ("/v1/embeddings", "base")
    rerank = adapter_for(load_config(["model=minilm", "model.kind=rerank", "deploy.backend=vllm"])).deploy_job(LAYOUT)
    assert "--pooler-config" not in rerank.serve_argv and rerank.ready_path == "/v1/rerank"
    assert adapter_for(load_config(["model=minilm"])).deploy_job(LAYOUT).serve_argv[:3] == [
        "python",
        "-m",
        "hpcft.serve",
    ]


class Refusing(BaseHTTPRequestHandler):
    """A server that is starting (404) on its first request and refuses (400) every later one,
    as vLLM does for chat with a tokenizer that has no chat template."""

    seen = 0

    def do_POST(self) -> None:
        type(self).seen += 1
        status, body = (404, b"{}") if self.seen == 1 else (400, b'{"error": {"message": "no chat template"}}')
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_refuses_the_readiness_request_fails_the_deploy_at_once():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    try:
        assert not deploy.answers(url, "k", {"messages": []})  # still starting: ask again
        with pytest.raises(RuntimeError, match=r"refused .* \(HTTP 400\): .*no chat template"):
            deploy.answers(url, "k", {"messages": []})  # not ready in 600 s: wrong at once
    finally:
        server.shutdown()
