"""What the dry run passes, FlagEmbedding's own parser passes, where the job runs.

Every FlagEmbedding module hpcft offers, planned by a real dry run for the CPU test cluster
(with and without DeepSpeed, a user's own DeepSpeed JSON included), has its train command's
arguments parsed by the module's own argument classes, and the training arguments' device
set-up run, in the job's interpreter with the environment torchrun gives it
(tests/oracles/fe_parse.py). And one pooling, the module's own, from training to scoring.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcft.configure import check
from hpcft.plan import build_pipeline
from tests.conftest import needs_training
from tests.test_framework_oracle import dry_run, free_port

pytestmark = [needs_training, pytest.mark.xdist_group("oracle")]

ORACLE = Path(__file__).parent / "oracles" / "fe_parse.py"
EMBED = ["model=minilm", "framework=flagembedding"]
RERANK = ["model=bge_reranker_large", "framework=flagembedding"]
DECODER = ["model.pooling=last_token"]
PLANS = {
    "embedder.encoder_only.base": EMBED,
    "embedder.encoder_only.m3": [*EMBED, "framework.module=embedder.encoder_only.m3"],
    "embedder.decoder_only.base": [*EMBED, *DECODER, "framework.module=embedder.decoder_only.base"],
    "embedder.decoder_only.icl": [*EMBED, *DECODER, "framework.module=embedder.decoder_only.icl"],
    "reranker.encoder_only.base": RERANK,
    "reranker.decoder_only.base": [*RERANK, "framework.module=reranker.decoder_only.base"],
    "reranker.decoder_only.layerwise": [*RERANK, "framework.module=reranker.decoder_only.layerwise"],
    "embedder with deepspeed=zero2": [*EMBED, "deepspeed=zero2"],
    "reranker with deepspeed=zero3": [*RERANK, "deepspeed=zero3"],
}
USER_DS = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto", "bf16": {"enabled": "auto"}}


def fe_plan(overrides: list[str], root: Path, port: int) -> dict[str, object]:
    """The module, its arguments and the process environment of a dry run's train job."""
    made = dry_run(overrides, root)
    assert not isinstance(made, str), made
    job = build_pipeline(check(made[0]), made[1]).stage("train").job
    argv = list(job.argv)  # type: ignore[union-attr]
    at = argv.index("hpcft.jobs.launch")
    env = dict(job.env) | {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}  # type: ignore[union-attr]
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    return {"module": argv[at + 1].removeprefix("FlagEmbedding.finetune."), "args": argv[at + 2 :], "env": env}


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    root = tmp_path_factory.mktemp("fe-oracle")
    user_ds = root / "ds_user.json"
    user_ds.write_text(json.dumps(USER_DS))
    port = free_port()
    cases = PLANS | {"embedder with deepspeed.config=<user's JSON>": [*EMBED, f"deepspeed.config={user_ds}"]}
    return {name: fe_plan(overrides, root, port) for name, overrides in cases.items()}


def test_every_flagembedding_module_plan_passes_flagembeddings_own_parser(plans, tmp_path):
    listing = tmp_path / "plans.json"
    listing.write_text(json.dumps(list(plans.values())))
    ran = subprocess.run([sys.executable, str(ORACLE), str(listing)], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    verdicts = dict(zip(plans, json.loads(ran.stdout.strip().splitlines()[-1]), strict=True))
    assert not any(verdicts.values()), verdicts
    assert {p["module"] for p in plans.values()} == {n for n in PLANS if "with" not in n}  # every module


def test_a_users_deepspeed_json_reaches_a_flagembedding_job(plans):
    plan = plans["embedder with deepspeed.config=<user's JSON>"]
    args = plan["args"]
    assert isinstance(args, list) and "--deepspeed" in args, args
    written = json.loads(Path(args[args.index("--deepspeed") + 1]).read_text())
    assert written == USER_DS  # the user's file, verbatim


def test_a_decoder_only_embedder_trains_serves_and_scores_with_last_token_pooling(plans, tmp_path):
    args = plans["embedder.decoder_only.base"]["args"]
    assert isinstance(args, list)
    assert args[args.index("--sentence_pooling_method") + 1] == "last_token"
    assert args[args.index("--save_merged_lora_model") + 1] == "True"  # the servers load the merged model
    made = dry_run([*EMBED, *DECODER, "framework.module=embedder.decoder_only.base", "deploy.backend=vllm"], tmp_path)
    assert not isinstance(made, str), made
    serve = build_pipeline(check(made[0]), made[1]).stage("deploy").job.serve_argv  # type: ignore[union-attr]
    assert json.loads(serve[serve.index("--pooler-config") + 1]) == {"pooling_type": "LAST"}
    assert serve[serve.index("--model") + 1].endswith("/train/merged_model"), serve


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ([*EMBED, "framework.module=embedder.decoder_only.base"], "model.pooling: mean, but embedder.decoder_only"),
        ([*EMBED, *DECODER], "model.pooling: last_token, but embedder.encoder_only.base"),
        ([*EMBED, "+framework.args.sentence_pooling_method=cls"], "framework.args.sentence_pooling_method: cls"),
    ],
)
def test_a_pooling_that_serving_would_not_use_is_refused(overrides, refusal, tmp_path):
    made = dry_run(overrides, tmp_path)
    assert isinstance(made, str) and made.startswith(refusal), made
