"""The native argument lists hpcft checks on the login node match the installed frameworks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from hpcft.frameworks.base import native_argument_names
from tests.conftest import REPO


@pytest.mark.skipif(
    importlib.util.find_spec("llamafactory") is None or importlib.util.find_spec("FlagEmbedding") is None,
    reason="training extra not installed",
)
def test_lists_are_not_stale():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_native_args.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_lists_name_the_versions_the_constraints_pin():
    pins = dict(
        line.strip().split("==") for line in (REPO / "constraints" / "train.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )  # fmt: skip
    headers = [p.read_text().splitlines()[0] for p in (REPO / "hpcft" / "frameworks").rglob("*_args*.txt")]
    headers += [
        p.read_text().splitlines()[0] for p in (REPO / "hpcft" / "frameworks" / "flagembedding_args").glob("*.txt")
    ]
    assert len(headers) == 8
    for header in headers:
        dist, version = header.split()[4:6]
        assert pins[dist] == version.rstrip(",")
        for lib in ("transformers", "peft", "trl"):
            assert f"{lib}=={pins[lib]}" in header, header


def test_lists_hold_the_arguments_users_know():
    lf = native_argument_names("llamafactory")
    assert {"learning_rate", "cutoff_len", "lora_rank", "template", "deepspeed", "val_size"} <= lf
    fe = native_argument_names("flagembedding", "embedder.encoder_only.base")
    assert {"train_group_size", "query_max_len", "passage_max_len", "temperature", "sentence_pooling_method"} <= fe


def test_each_flagembedding_module_has_its_own_list():
    embedder = native_argument_names("flagembedding", "embedder.encoder_only.base")
    reranker = native_argument_names("flagembedding", "reranker.encoder_only.base")
    assert "temperature" in embedder and "temperature" not in reranker
    assert "unified_finetuning" in native_argument_names("flagembedding", "embedder.encoder_only.m3")
    assert "start_layer" in native_argument_names("flagembedding", "reranker.decoder_only.layerwise")


MODULES = [
    ("embedding", "embedder.encoder_only.base"),
    ("embedding", "embedder.encoder_only.m3"),
    ("embedding", "embedder.decoder_only.base"),
    ("embedding", "embedder.decoder_only.icl"),
    ("rerank", "reranker.encoder_only.base"),
    ("rerank", "reranker.decoder_only.base"),
    ("rerank", "reranker.decoder_only.layerwise"),
]


@pytest.mark.skipif(importlib.util.find_spec("FlagEmbedding") is None, reason="training extra not installed")
@pytest.mark.parametrize("kind,module", MODULES, ids=[m for _, m in MODULES])
def test_flagembedding_parses_every_command_hpcft_renders(kind, module, tmp_path):
    """FlagEmbedding's own HfArgumentParser, with the classes the module's __main__ uses, takes
    the command hpcft renders for that module, a native argument included. (With `--deepspeed`
    the parse itself starts DeepSpeed; test_local_pipeline runs ZeRO-2 for real.)"""
    from pathlib import Path as P

    from hpcft.configure import load_config
    from hpcft.frameworks import adapter_for
    from hpcft.rundir import RunLayout

    sys.path.insert(0, str(REPO / "scripts"))
    from gen_native_args import parser_classes
    from transformers import HfArgumentParser

    extra = "+framework.args.use_mrl=true" if module == "embedder.encoder_only.base" else "+framework.args.seed=7"
    cfg = load_config(["model=minilm", f"model.kind={kind}", f"framework.module={module}", extra])
    argv = adapter_for(cfg).train_job(RunLayout(P(tmp_path))).argv
    native = argv[argv.index(f"FlagEmbedding.finetune.{module}") + 1 :]
    # argparse's own parse (building the dataclasses would set up torch.distributed): an
    # argument the module does not take exits here as it would at run time
    flat = vars(HfArgumentParser(parser_classes(module)).parse_args(args=native))
    assert flat["query_max_len"] == 64 and flat["passage_max_len"] == 256 and flat["use_cpu"] is True


def test_an_argument_another_module_takes_is_refused_for_this_one(tmp_path, capsys):
    from hpcft.cli import main

    code = main(["model=minilm", "model.kind=rerank", "+framework.args.use_mrl=true", "dry_run=true",
                 f"run_root={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "framework.args.use_mrl: unknown flagembedding reranker.encoder_only.base argument" in err, err
    code = main(["model=minilm", "framework.module=reranker.decoder_only.base", "dry_run=true", f"run_root={tmp_path}"])
    assert code == 2 and "use a embedder.* module" in capsys.readouterr().err
