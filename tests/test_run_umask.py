"""Runs are private by default: the run folder and every file hpcft writes follow
`cluster.umask` (077: nothing for other users), on the login node and in the jobs, whose
scripts set it first; the server's key and the eval's predictions are 0600 whatever it is."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from hpcft.cli import main
from hpcft.jobs.answers import Answers
from hpcft.rundir import create_run_dir, run_umask, write_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_shell_umask():
    """The submitting shell's usual 022, under which files are world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def dry_run(tmp_path: Path, *overrides: str) -> Path:
    code = main(["model=tiny_llama", "cluster=slurmlab", "dry_run=true", f"run_root={tmp_path}/runs", *overrides])
    assert code == 0
    (run,) = (tmp_path / "runs").iterdir()
    return run


@pytest.mark.parametrize("umask,folders,files", [(None, 0o700, 0o600), ("027", 0o750, 0o640), ("007", 0o770, 0o660)])
def test_the_run_folder_and_its_files_follow_the_umask(umask, folders, files, tmp_path, loose_shell_umask):
    run = dry_run(tmp_path, *([f"cluster.umask={umask}"] if umask else []))
    paths = [run, *run.rglob("*")]
    dirs, plain = [p for p in paths if p.is_dir()], [p for p in paths if p.is_file()]
    assert {"config.yaml", "manifest.json", "train.sbatch", "train.yaml"} <= {p.name for p in plain}
    assert {str(p): oct(mode(p)) for p in dirs if mode(p) != folders} == {}
    assert {str(p): oct(mode(p)) for p in plain if mode(p) != files} == {}
    assert os.umask(0o022) == 0o022  # the caller's mask is back


def test_every_job_script_sets_the_umask_before_anything_else(tmp_path, loose_shell_umask):
    run = dry_run(tmp_path, "cluster.umask=027", "cluster.setup=['echo site']")
    for script in sorted((run / "dry_run").glob("*.sbatch")):
        setup = script.read_text().split("# setup\n", 1)[1].splitlines()
        assert setup[:2] == ["umask 027", "echo site"], script


def test_what_a_job_writes_follows_the_umask(tmp_path, loose_shell_umask):
    """Run the train script's shell with `srun` replaced by a stand-in that writes a file, as
    the job's tasks would (a log, a checkpoint)."""
    run = dry_run(tmp_path)
    bin_dir, out = tmp_path / "bin", tmp_path / "written"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f'#!/bin/sh\necho data > "{out}"\n')
    (bin_dir / "srun").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(["bash", str(run / "dry_run" / "train.sbatch")], env=env, check=True, capture_output=True)
    assert mode(out) == 0o600


@pytest.mark.parametrize("value", ["27", "0777", "700", "abc", "0o27"])
def test_a_umask_that_is_not_three_octal_digits_with_the_owner_free_is_refused(value, tmp_path, capsys):
    code = main(
        ["model=tiny_llama", "cluster=slurmlab", "dry_run=true", f"run_root={tmp_path}", f"cluster.umask={value}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hpcft: error: cluster.umask: must be three octal digits"), err
    assert not list(tmp_path.iterdir())


def test_an_unquoted_umask_in_a_site_file_is_refused_not_misread(tmp_path, capsys):
    """YAML reads `umask: 027` as the number 23; taken as "23" it would mean 023 (readable by all)."""
    (tmp_path / "site" / "cluster").mkdir(parents=True)
    (tmp_path / "site" / "cluster" / "mine.yaml").write_text("defaults: [slurmlab, _self_]\nname: mine\numask: 027\n")
    args = ["--config-dir", str(tmp_path / "site"), "model=tiny_llama", "cluster=mine", "dry_run=true"]
    assert main([*args, f"run_root={tmp_path}/runs"]) == 2
    assert "cluster.umask: must be three octal digits" in capsys.readouterr().err


def test_the_rundir_api_and_atomic_writes(tmp_path, loose_shell_umask):
    with run_umask("027"):
        layout = create_run_dir(tmp_path / "runs", "r")
        write_atomic(layout.manifest, "{}")
        write_atomic(layout.root / "secret.txt", "x", private=True)
    assert (mode(tmp_path / "runs"), mode(layout.root)) == (0o750, 0o750)
    assert (mode(layout.manifest), mode(layout.root / "secret.txt")) == (0o640, 0o600)
    write_atomic(layout.manifest, "{}\n")  # rewritten later (`status`) under the shell's 022
    assert mode(layout.manifest) == 0o640


def test_predictions_stay_private_whatever_the_umask(tmp_path, loose_shell_umask):
    path = tmp_path / "eval" / "predictions.jsonl"
    answers = Answers(path, 2, tmp_path / "eval" / "progress.json")
    answers.add({"index": 0, "prediction": "a"})
    assert mode(path) == 0o600
    answers.file.close()
    resumed = Answers(path, 2, tmp_path / "eval" / "progress.json")  # a requeued eval rewrites it
    assert mode(path) == 0o600
    resumed.add({"index": 1, "prediction": "b"})
    assert [r["index"] for r in resumed.finish()] == [0, 1] and mode(path) == 0o600
    assert json.loads(path.read_text().splitlines()[1])["prediction"] == "b"


@pytest.mark.parametrize("umask", ["077", "027"])
def test_a_sweep_point_s_record_is_rewritten_as_write_atomic_would(umask, tmp_path, loose_shell_umask):
    """`rewrite_new` (a point's record after its arrays are queued): the new text, the mode
    `write_new` gave the file, no temporary file left; a stray temporary file of that name
    makes it take `write_atomic`'s way."""
    from hpcft.sweep.arrays import rewrite_new, write_new

    with run_umask(umask):
        path = tmp_path / "0" / "manifest.json"
        write_new(path, '{"status": "submitting"}\n')
        before = mode(path)
        rewrite_new(path, '{"status": "submitted"}\n')
        assert path.read_text() == '{"status": "submitted"}\n' and mode(path) == before
        assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json"]
        (path.parent / ".manifest.json.new").write_text("stray")
        rewrite_new(path, "again\n")
        assert path.read_text() == "again\n" and mode(path) == before
