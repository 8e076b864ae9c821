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


def test_lists_hold_the_arguments_users_know():
    lf = native_argument_names("llamafactory")
    assert {"learning_rate", "cutoff_len", "lora_rank", "template", "deepspeed", "val_size"} <= lf
    fe = native_argument_names("flagembedding")
    assert {"train_group_size", "query_max_len", "passage_max_len", "temperature", "sentence_pooling_method"} <= fe
