"""The exact sbatch scripts hpcft submits, pinned by golden files (hostile paths included).

Regenerate after an intended change: HPCFT_UPDATE_GOLDEN=1 pytest tests/test_render_golden.py
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hpcft.configure import check, load_config
from hpcft.plan import build_pipeline
from hpcft.render import placeholder_ids, render_sbatch, time_to_minutes
from hpcft.rundir import RunLayout

GOLDEN = Path(__file__).parent / "golden"
HOSTILE_RUN = "/scratch/o'neil $(touch pwned) `id`; rm -rf ~/runs/it's $(whoami)"


def rendered(overrides: list[str]) -> dict[str, str]:
    cfg = load_config(overrides)
    pipeline = build_pipeline(check(cfg), RunLayout(Path(HOSTILE_RUN)))
    ids = placeholder_ids(pipeline)
    python = shlex.quote(sys.executable)
    return {s.name: render_sbatch(pipeline, s, cfg.cluster, ids).replace(python, "<python>") for s in pipeline.stages}


CASES = {
    "internlm2_8gpu": ["model=internlm2", "cluster=8gpu"],
    "llama3_2x8gpu": ["model=llama3_8b", "cluster=2x8gpu", "deepspeed=zero3", "cluster.account='proj;x'"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_scripts_match_golden_files(case):
    for stage, text in rendered(CASES[case]).items():
        path = GOLDEN / f"{case}.{stage}.sbatch"
        if os.environ.get("HPCFT_UPDATE_GOLDEN"):
            path.write_text(text)
        assert text == path.read_text(), f"{path} differs; see the module docstring to regenerate"


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_values_stay_data_in_the_script(case, tmp_path):
    """Run each script's shell with sbatch/srun replaced by `printf` of their argv: every
    hostile value must come out as one intact argument, and nothing may run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nfor a in "$@"; do printf "<%s>\\n" "$a"; done\n')
    (bin_dir / "srun").chmod(0o755)
    for stage, text in rendered(CASES[case]).items():
        script = text.replace("<python>", "python")
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
        out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
        assert f"<{HOSTILE_RUN}/slurm>" in out.stdout, stage
        assert not (tmp_path / "pwned").exists()


def test_sbatch_flag_lines_quote_hostile_values():
    text = rendered(CASES["internlm2_8gpu"])["train"]
    assert "#SBATCH --job-name='it'\"'\"'s $(whoami).train'" in text
    assert "#SBATCH --account='proj;x'" in rendered(CASES["llama3_2x8gpu"])["train"]


@pytest.mark.parametrize(
    "value,minutes",
    [("30", 30), ("00:30:00", 30), ("1-00:00:00", 1440), ("2:30", 3), ("1-2", 1560), ("0:0:01", 1)],
)
def test_time_to_minutes(value, minutes):
    assert time_to_minutes(value) == minutes
