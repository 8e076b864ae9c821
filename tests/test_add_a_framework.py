"""docs/architecture.md's "Adding a framework" runs as printed: its adapter module, its YAML
and its argument list, copied out of the page into a copy of hpcft, make a framework that a
dry run plans, with the native file and command the page's adapter writes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import yaml

from tests.conftest import REPO, needs_training

pytestmark = [needs_training]  # the dry run checks the tiny model's folder

DOC = REPO / "docs" / "architecture.md"
FENCE = re.compile(r"^( *)```(\w+)\n(.*?)^\1```", re.M | re.S)


def example_blocks() -> dict[str, str]:
    """The section's code blocks by language (python, yaml, text), dedented."""
    section = DOC.read_text().split("## Adding a framework", 1)[1].split("\n## ", 1)[0]
    return {lang: textwrap.dedent(body) for _indent, lang, body in FENCE.findall(section)}


def test_the_add_a_framework_example_plans_as_printed(tmp_path):
    blocks = example_blocks()
    assert set(blocks) == {"python", "yaml", "text"}, blocks.keys()
    copy = tmp_path / "repo"
    for part in ("hpcft", "conf", "hydra_plugins"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "hpcft" / "frameworks" / "mytrainer.py").write_text(blocks["python"])
    (copy / "conf" / "framework" / "mytrainer.yaml").write_text(blocks["yaml"])
    (copy / "hpcft" / "frameworks" / "mytrainer_args.txt").write_text(blocks["text"])
    ran = subprocess.run(
        [sys.executable, "-m", "hpcft", "model=tiny_llama", "framework=mytrainer", "dry_run=true",
         "cluster=slurmlab", f"run_root={tmp_path / 'runs'}", "framework.warmup_steps=5"],
        cwd=copy, env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert f"{copy}/hpcft/__init__.py" in subprocess.run(  # the copy was the hpcft that ran
        [sys.executable, "-c", "import hpcft; print(hpcft.__file__)"],
        cwd=copy, env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (run,) = (tmp_path / "runs").iterdir()
    native = yaml.safe_load((run / "native" / "train.yaml").read_text())
    assert native["warmup_steps"] == 5 and native["output_dir"] == str(run / "train")
    assert "mytrainer-cli train" in ran.stdout or "mytrainer-cli' train" in ran.stdout, ran.stdout[-2000:]
