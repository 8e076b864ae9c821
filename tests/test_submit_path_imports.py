"""The login node stays light: the submit path imports no ML framework (house rule 2)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "deepspeed", "llamafactory", "FlagEmbedding", "wandb", "datasets", "peft")

PROBE = """
import json, sys
from hpcft.cli import main
code = main(["model=internlm2", "cluster=8gpu", "dry_run=true", "run_root=" + sys.argv[1]])
import hpcft.submit, hpcft.jobs.entry  # the modules a real submission adds
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_dry_run_and_submit_modules_import_nothing_heavy(tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    heavy = sorted(m for m in result["modules"] if m.split(".")[0] in HEAVY)
    assert heavy == []


STUDY_PROBE = """
import json, sys
from hpcft.cli import main
code = main(["-m", "hydra/sweeper=optuna", "framework.lora_rank=choice(4,8)", "model=internlm2", "cluster=8gpu",
             "dry_run=true", "run_root=" + sys.argv[1]])
import hpcft.sweep.adaptive, hpcft.sweep.controller  # what submitting the controller adds
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_an_optuna_study_is_submitted_without_anything_heavy(tmp_path):
    out = subprocess.run([sys.executable, "-c", STUDY_PROBE, str(tmp_path)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert sorted(m for m in result["modules"] if m.split(".")[0] in HEAVY) == []
