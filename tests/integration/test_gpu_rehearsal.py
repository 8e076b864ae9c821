"""The GPU check (benchmarks/gpu_lora.py) end to end on CPU with 2-layer models (`--rehearsal`),
so the script a lent GPU session runs cannot rot between sessions (issue 33)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, needs_training

pytestmark = [needs_training, pytest.mark.train]


@pytest.mark.xdist_group("gpu_rehearsal")
def test_the_gpu_check_rehearses_every_step_on_cpu_and_writes_its_json(tmp_path):
    """Builds a 2-layer model, trains through hpcft and directly, padded and packed (~1-2 min)."""
    out = tmp_path / "check.json"
    argv = [sys.executable, str(REPO / "benchmarks" / "gpu_lora.py"), "--rehearsal", f"--work={tmp_path / 'w'}"]
    ran = subprocess.run([*argv, f"--out={out}", "--budget-s=400"], capture_output=True, text=True, timeout=480)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    steps = json.loads(out.read_text())["steps"]
    assert list(steps) == ["build_rehearsal", "large_hpcft", "large_direct", "small_padded", "small_packed",
                           "large_liger"]  # fmt: skip
    for name in ("large_hpcft", "large_direct", "small_padded", "small_packed"):
        assert steps[name]["ok"] and steps[name]["tokens_per_s"] > 0, (name, steps[name])
    assert steps["large_hpcft"]["tokens"] == steps["large_direct"]["tokens"]  # the same YAML, the same tokens
    assert steps["large_hpcft"]["plan"]["per_device_train_batch_size"] == 2 and steps["large_hpcft"]["estimate_gib"] > 0
    packed, padded = steps["small_packed"]["plan"], steps["small_padded"]["plan"]
    assert packed["neat_packing"] is True and padded["neat_packing"] is False
    assert "need a GPU" in steps["large_liger"]["skipped"]
    assert "large_direct" in ran.stdout and "JSON:" in ran.stdout
