"""The benchmarks are not tests (timings are noisy), but they must keep working against the
code they measure: every module imports and the GPU script answers --help without a GPU."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(
    "module",
    [
        "run",
        "latency",
        "sweep",
        "sweep_scale",
        "status",
        "training",
        "floor_submit",
        "gpu_lora",
        "gpu_models",
        "gpu_measure",
        "eval_speed",
        "retrieval_eval",
        "serving",
        "suites_speed",
    ],
)
def test_benchmark_module_imports(module):
    importlib.import_module(f"benchmarks.{module}")


def test_gpu_benchmark_help_needs_no_gpu():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_lora.py"), "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0 and "--rehearsal" in out.stdout
