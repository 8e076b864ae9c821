"""The site presets in sbatch_templates/: each dry-runs, and renders the example scripts
checked in beside it (the scripts an admin reads before adopting a preset).

Regenerate after an intended change: HPCFT_UPDATE_GOLDEN=1 pytest tests/test_site_presets.py
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from hpcft.cli import main
from hpcft.configure import check, load_config
from hpcft.plan import build_pipeline
from hpcft.render import placeholder_ids, render_sbatch
from hpcft.rundir import RunLayout

TEMPLATES = Path(__file__).resolve().parents[1] / "sbatch_templates"
PRESETS = sorted(p.stem for p in (TEMPLATES / "cluster").glob("*.yaml"))
EXAMPLE_RUN = Path("/scratch/runs/internlm2-llamafactory-example")


def test_the_presets_an_admin_is_promised_exist():
    assert set(PRESETS) >= {"pyxis", "apptainer", "lmod_conda", "cpu_eval", "two_node_nccl"}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_renders_its_example_scripts(preset):
    cfg = load_config(["model=internlm2", f"cluster={preset}"], [str(TEMPLATES)])
    pipeline = build_pipeline(check(cfg), RunLayout(EXAMPLE_RUN))
    ids = placeholder_ids(pipeline)
    for stage in pipeline.stages:
        text = render_sbatch(pipeline, stage, cfg.cluster, ids).replace(shlex.quote(sys.executable), "<python>")
        path = TEMPLATES / "examples" / preset / f"{stage.name}.sbatch"
        if os.environ.get("HPCFT_UPDATE_GOLDEN"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert text == path.read_text(), f"{path} differs; see the module docstring to regenerate"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_dry_runs(preset, tmp_path, capsys):
    code = main(["--config-dir", str(TEMPLATES), "model=internlm2", f"cluster={preset}", "dry_run=true",
                 f"run_root={tmp_path}"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(list(tmp_path.rglob("dry_run/*.sbatch"))) == 3
