"""An installed hpcft (a wheel, not a checkout) finds its shipped conf/ and demo data."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_wheel_carries_conf_and_runs_from_elsewhere(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("hpcft-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "hpcft" / "conf" / "hpcft.yaml").is_file()
    lists = site / "hpcft" / "frameworks" / "flagembedding_args"
    assert len(list(lists.glob("*.txt"))) == 7  # one argument list per FlagEmbedding module
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "hpcft", "model=internlm2", "cluster=8gpu", "dry_run=true", f"run_root={tmp_path}/r"],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert f"{site}/hpcft/assets/demo" in (next((tmp_path / "r").iterdir()) / "config.yaml").read_text()
