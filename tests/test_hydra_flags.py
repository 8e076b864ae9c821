"""Hydra's flags and settings behave in hpcft as in any Hydra app: each case runs the same
command line through hpcft and through a plain `@hydra.main` app over the same conf/
(tests/hydra_app.py) and compares what they print, the folders they pick and the names.

Nothing is submitted: `--cfg`/`--info` print, sweeps and runs are dry runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpcft.cli import main
from hpcft.config.compose import conf_dir

HERE = Path(__file__).resolve().parent
LINE = ["model=tiny_llama", "framework=llamafactory", "cluster=slurmlab", "seed=7"]
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]


def hydra_runs(cwd: Path, *lines: list[str], env: dict[str, str] | None = None) -> list[str]:
    """What the plain Hydra app prints for each command line, in one process."""
    done = subprocess.run(
        [sys.executable, str(HERE / "hydra_app.py"), json.dumps(list(lines))],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(HERE.parent)},
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.replace("JobRuntime:name=hydra_app", "JobRuntime:name=hpcft")  # the apps' own names
    return [out.split("\n", 1)[1] if "\n" in out else "" for out in printed.split("=== ")[1:]]


def timeless(printed: str) -> str:
    """--info plugins ends with how long the scan of each module took (what a process had
    imported before differs): left out."""
    return re.sub(r"Total plugins scan time.*?(?=\n\n|\Z)", "", printed, flags=re.S)


def jobs(printed: str) -> list[dict]:
    return [json.loads(line[4:]) for line in printed.splitlines() if line.startswith("JOB ")]


def hpcft_prints(args: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def shipped(group: str) -> list[str]:
    """The options conf/ ships for a group."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml") if not p.stem.startswith("base_"))


def site(tmp_path: Path) -> Path:
    """A user's config folder: a group of its own, an experiment, a primary config."""
    folder = tmp_path / "site"
    (folder / "mygroup").mkdir(parents=True)
    (folder / "mygroup" / "one.yaml").write_text("# @package _global_\nname: from_mygroup\n")
    (folder / "experiment").mkdir()
    (folder / "experiment" / "mine.yaml").write_text("# @package _global_\nrun_root: from_experiment\n")
    (folder / "mine.yaml").write_text("defaults: [hpcft, _self_]\nname: from_primary\n")
    return folder


FLAGS = [
    ["--cfg", "job"],
    ["--cfg", "job", "--resolve"],
    ["--cfg", "job", "--package", "framework"],
    ["--cfg", "job", "--package", "seed"],
    ["--cfg", "hydra"],
    ["--cfg", "all", "--package", "hydra.job"],
    ["--info", "defaults"],
    ["--info", "defaults-tree"],
    ["--info", "config"],
    ["--info", "searchpath"],
    ["--info", "plugins"],
]


def test_cfg_and_info_print_what_hydra_prints(tmp_path, capsys, monkeypatch):
    folder = site(tmp_path)
    monkeypatch.chdir(tmp_path)
    lines = [
        *([*flags, *LINE] for flags in FLAGS),
        ["--info", "all", *LINE],
        ["-cd", str(folder), "--cfg", "job", "+mygroup=one", "+experiment=mine", *LINE],
        ["-cd", str(folder), "--info", "searchpath", *LINE],
        ["-cp", str(folder), "-cn", "mine", "--cfg", "job", f"hydra.searchpath=[file://{conf_dir()}]", *LINE],
    ]
    theirs = hydra_runs(tmp_path, *lines)
    for line, printed in zip(lines, theirs, strict=True):
        ours = hpcft_prints(line, capsys)
        assert timeless(ours) == timeless(printed), line
    assert "run_root: from_experiment" in theirs[-3] and "name: from_mygroup" in theirs[-3]
    assert "name: from_primary" in theirs[-1]
    assert "file://" + str(folder) in theirs[-2]


def test_with_multirun_the_flags_print_and_submit_nothing(tmp_path, capsys, stand_in_slurm):
    runs = tmp_path / "runs"
    for flags in (["--cfg", "hydra"], ["--cfg", "all"], ["--info", "defaults"], ["--info"]):
        out = hpcft_prints(["-m", *LINE[:3], "seed=1,2", f"run_root={runs}", *flags], capsys)
        assert out.strip()
    out = hpcft_prints(["-m", *LINE[:3], "seed=1,2", "--cfg", "job", "--package", "seed"], capsys)
    head = "# point {}: model=tiny_llama framework=llamafactory cluster=slurmlab seed={}\n{}\n"
    assert out.split("---\n") == [head.format(0, 1, 1), head.format(1, 2, 2)]
    assert (stand_in_slurm.queue.parent / "next_id").read_text().strip() == "100"  # no sbatch ran
    assert not runs.exists()


def test_help_lists_every_group_the_experiments_and_the_user_s_own(tmp_path, capsys):
    folder = site(tmp_path)
    out = hpcft_prints(["--help"], capsys)
    for group in ("model", "framework", "cluster", "deepspeed", "experiment"):
        assert f"  {group:<10} {', '.join(shipped(group))}\n" in out, group
    assert "mygroup" not in out
    for args in (["-cd", str(folder)], [f"hydra.searchpath=[file://{folder}]"]):
        out = hpcft_prints([*args, "--help"], capsys)
        mine = ", ".join(sorted(["mine", *shipped("experiment")]))
        assert "  mygroup    one" in out and f"  experiment {mine}\n" in out, args
        assert "base_" not in out


def test_hydra_help_is_hydra_s(capsys):
    assert "Hydra (" in hpcft_prints(["--hydra-help"], capsys)


@pytest.mark.parametrize(
    "args,said",
    [
        (["--resolve", "model=tiny_llama"], "--resolve: only with --cfg or --help"),
        (["--package", "framework", "model=tiny_llama"], "--package: only with --cfg"),
        (["--cfg", "job", "--info", "model=tiny_llama"], "--cfg and --info: one at a time"),
        (["--run", "-m", "model=tiny_llama"], "--run and -m: one at a time"),
        (["--info=nope", "model=tiny_llama"], "argument --info/-i: invalid choice: 'nope'"),
        (["--cfg", "job", "--package", "nope", "model=tiny_llama"], "--package nope: not in the config"),
        (["-cp", "/no/such/folder", "-cn", "x", "model=tiny_llama"], "--config-path /no/such/folder: no such folder"),
        (["-sc", "model=tiny_llama"], "Expecting one subcommand from ['install', 'uninstall', 'query']"),
        (["-sc", "install=fish"], "-sc install=fish: hpcft completes in bash and zsh"),
        (
            ["-m", "hydra/sweeper=optuna", "model=tiny_llama", 'hydra.sweeper.params.seed="range(1,3)"'],
            'hydra.sweeper.params.seed="range(1,3)": Hydra reads the key as a path under hydra.sweeper.params',
        ),
    ],
)
def test_flags_hydra_refuses_are_one_line(args, said, capsys, run_root):
    assert main([*args, f"run_root={run_root}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and said in err, err
    assert list(run_root.iterdir()) == []


COMPLETE = """
eval "$(python -m hpcft -sc install=bash)"
for line in "$@"; do
    COMP_LINE="$line"; COMP_POINT=${#line}; COMP_WORDS=($line); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    [ "${line: -1}" = " " ] && COMP_CWORD=${#COMP_WORDS[@]}
    COMPREPLY=()
    hpcft_bash_completion
    echo "${COMPREPLY[*]}"
done
"""


def bash_completes(tmp_path: Path, *lines: str) -> list[list[str]]:
    """Each line completed as bash does it with hpcft's installed completion (COMP_LINE,
    COMP_POINT, COMP_WORDS, COMP_CWORD, then the completion function), `python` being this
    interpreter and `hpcft` its console script."""
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        ["bash", "-c", COMPLETE, "complete", *lines],
        capture_output=True,
        text=True,
        cwd=HERE.parent,
        timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


def test_bash_completes_model_to_the_shipped_models(tmp_path):
    models = shipped("model")
    folder = site(tmp_path)
    answers = bash_completes(
        tmp_path,
        "python -m hpcft model=",
        "hpcft cluster=slurmlab model=tiny",
        "python -m hpcft mod",
        f"python -m hpcft -cd {folder} mygr",
        "python -m hpcft model=tiny_llama framework.learning_ra",
        "python -m hpcft +experiment=",
    )
    assert answers[0] == [f"model={m}" for m in models]
    assert answers[1] == ["model=tiny_llama"]
    assert answers[2] == ["model="]
    assert answers[3] == ["mygroup="]
    assert answers[4] == ["framework.learning_rate="]
    assert answers[5] == [f"+experiment={e}" for e in shipped("experiment")]


def test_bash_completion_leaves_other_python_commands_alone(tmp_path):
    assert bash_completes(tmp_path, "python -m pip inst", "python script.py mod") == [[], []]


def point_folders(sweep_dir: Path) -> list[str]:
    return sorted(p.name for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())


EXPERIMENT = """# @package _global_
defaults:
  - override /model: tiny_llama
  - override /framework: llamafactory
hydra:
  sweep:
    dir: ${oc.env:SWEEPS}/mysweep
    subdir: ${seed}_${framework.learning_rate}
  job:
    name: myjob
"""


TINY = "# @package _global_\ndefaults:\n  - override /model: tiny_llama\n  - override /framework: llamafactory\n"
OTHERS = {
    "multi": "hydra:\n  mode: MULTIRUN\n  sweep: {dir: '${oc.env:SWEEPS}/multi'}\n  sweeper: {params: {seed: '1,2'}}\n",
    "rundir": "hydra: {run: {dir: '${oc.env:SWEEPS}/one'}}\n",
    "study": "  - override /hydra/sweeper: optuna\nhydra:\n  sweep: {dir: '${oc.env:SWEEPS}/study'}\n"
    "  sweeper:\n    n_trials: 1\n    params: {framework.learning_rate: 'interval(1e-4,1e-2)'}\n",
}


def experiments(tmp_path: Path) -> Path:
    """Experiments that set Hydra's settings: folders, names, the mode, the sweeper."""
    folder = tmp_path / "exp"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "dirs.yaml").write_text(EXPERIMENT)
    for name, text in OTHERS.items():
        (folder / "experiment" / f"{name}.yaml").write_text(TINY + text)
    return folder


def test_an_experiment_s_sweep_folder_subdir_and_job_name_are_hydra_s(tmp_path, capsys, monkeypatch):
    folder = experiments(tmp_path)
    line = ["-cd", str(folder), "+experiment=dirs", "seed=1,2", "framework.learning_rate=1e-3,1e-4"]
    (theirs,) = hydra_runs(tmp_path, ["-m", *line, *QUIET], env={"SWEEPS": str(tmp_path / "hydra")})
    monkeypatch.setenv("SWEEPS", str(tmp_path / "hpcft"))
    assert main(["-m", *line, "cluster=slurmlab", "stages=[train]", "dry_run=true"]) == 0, capsys.readouterr().err
    hydra_points = sorted(Path(job["output_dir"]).name for job in jobs(theirs))
    assert hydra_points == ["1_0.0001", "1_0.001", "2_0.0001", "2_0.001"]
    assert point_folders(tmp_path / "hpcft" / "mysweep") == hydra_points
    assert {job["name"] for job in jobs(theirs)} == {"myjob"}
    point = tmp_path / "hpcft" / "mysweep" / "2_0.0001"
    assert yaml.safe_load((point / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["name"] == "myjob"
    config = yaml.safe_load((point / "config.yaml").read_text())
    assert (config["seed"], config["framework"]["learning_rate"]) == (2, 0.0001)


def test_hydra_mode_multirun_in_an_experiment_sweeps_without_m(tmp_path, capsys, monkeypatch):
    folder = experiments(tmp_path)
    (theirs,) = hydra_runs(tmp_path, ["-cd", str(folder), "+experiment=multi", *QUIET], env={"SWEEPS": str(tmp_path)})
    assert {job["mode"] for job in jobs(theirs)} == {"RunMode.MULTIRUN"} and len(jobs(theirs)) == 2
    monkeypatch.setenv("SWEEPS", str(tmp_path / "hpcft"))
    assert main(["-cd", str(folder), "+experiment=multi", "cluster=slurmlab", "dry_run=true"]) == 0
    assert point_folders(tmp_path / "hpcft" / "multi") == sorted(Path(j["output_dir"]).name for j in jobs(theirs))


def test_hydra_run_dir_names_a_single_run_s_folder(tmp_path, capsys, monkeypatch):
    folder = experiments(tmp_path)
    (theirs,) = hydra_runs(tmp_path, ["-cd", str(folder), "+experiment=rundir", *QUIET], env={"SWEEPS": str(tmp_path)})
    assert [Path(j["output_dir"]) for j in jobs(theirs)] == [tmp_path / "one"]
    monkeypatch.setenv("SWEEPS", str(tmp_path / "hpcft"))
    assert main(["-cd", str(folder), "+experiment=rundir", "cluster=slurmlab", "dry_run=true"]) == 0
    assert (tmp_path / "hpcft" / "one" / "manifest.json").is_file()
    assert main(["-cd", str(folder), "+experiment=rundir", "cluster=slurmlab", "dry_run=true"]) == 2
    assert "already holds files; runs are never overwritten" in capsys.readouterr().err


def test_an_experiment_s_sweeper_override_is_honoured(tmp_path, capsys, monkeypatch):
    folder = experiments(tmp_path)
    line = ["-m", "-cd", str(folder), "+experiment=study"]
    (theirs,) = hydra_runs(tmp_path, [*line, *QUIET], env={"SWEEPS": str(tmp_path / "hydra")})
    assert [job["sweeper"] for job in jobs(theirs)] == ["optuna"]
    monkeypatch.setenv("SWEEPS", str(tmp_path / "hpcft"))
    assert main([*line, "cluster=slurmlab", "dry_run=true"]) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "hpcft" / "study" / "controller.json").read_text())
    assert record["n_trials"] == 1 and "+experiment=study" in record["overrides"]


def test_default_folders_are_named_after_the_run_under_run_root(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main([*LINE[:3], "stages=[train]", "dry_run=true", f"run_root={runs}"]) == 0
    assert main([*LINE[:3], "stages=[train]", "dry_run=true", f"run_root={runs}", "name=mine"]) == 0
    assert main(["-m", *LINE[:3], "stages=[train]", "dry_run=true", f"run_root={runs}", "seed=1,2"]) == 0
    names = sorted(p.name.rsplit("-", 3)[0] for p in runs.iterdir())
    assert names == ["mine", "tiny_llama-llamafactory", "tiny_llama-llamafactory-sweep"]


def test_a_primary_config_of_one_s_own_runs_and_sweeps(tmp_path, capsys):
    """`-cp DIR -cn NAME`: the run's config is NAME's (here hpcft's with a name of its own)."""
    runs = tmp_path / "runs"
    line = ["-cp", str(site(tmp_path)), "-cn", "mine", *LINE[:3], "stages=[train]", "dry_run=true", f"run_root={runs}"]
    assert main(line) == 0, capsys.readouterr().err
    assert main(["-m", *line, "seed=1,2"]) == 0, capsys.readouterr().err
    assert sorted(p.name.rsplit("-", 3)[0] for p in runs.iterdir()) == ["from_primary", "from_primary-sweep"]
    (sweep_dir,) = runs.glob("*-sweep-*")
    assert point_folders(sweep_dir) == ["0", "1"]
    hydra = yaml.safe_load((sweep_dir / "1" / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["job"]["config_name"] == "mine"
    assert yaml.safe_load((sweep_dir / "1" / "config.yaml").read_text())["name"] == "from_primary"


def test_quoted_values_are_values_not_sweeps_as_in_hydra(tmp_path, capsys):
    line = ["-m", *LINE[:3], 'name="a,b"', "seed=1,2"]
    (theirs,) = hydra_runs(tmp_path, [*line, *QUIET, f"hydra.sweep.dir={tmp_path / 'hydra'}"])
    assert [job["overrides"][-2:] for job in jobs(theirs)] == [['name="a,b"', "seed=1"], ['name="a,b"', "seed=2"]]
    runs = tmp_path / "runs"
    assert main([*line, "stages=[train]", "dry_run=true", f"run_root={runs}"]) == 0, capsys.readouterr().err
    (sweep_dir,) = runs.iterdir()
    configs = [yaml.safe_load((sweep_dir / num / "config.yaml").read_text()) for num in ("0", "1")]
    assert [(c["name"], c["seed"]) for c in configs] == [("a,b", 1), ("a,b", 2)]
    # a quoted search space is a value too: no search for Optuna, and a float key refuses the text
    study = ["-m", "hydra/sweeper=optuna", *LINE[:3], 'framework.learning_rate="interval(1e-4,1e-2)"']
    assert main([*study, "dry_run=true", f"run_root={runs}"]) == 2
    assert "framework.learning_rate: Value 'interval(1e-4,1e-2)' of type 'str' could not be" in capsys.readouterr().err


def test_a_sweep_over_experiments_of_different_model_kinds_says_which_is_which(capsys, run_root):
    assert main(["-m", "+experiment=quickstart,quickstart_embedding", "dry_run=true", f"run_root={run_root}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "(embedding: +experiment=quickstart_embedding; llm: +experiment=quickstart)" in err
    assert list(run_root.iterdir()) == []


def test_a_config_s_hydra_mode_multirun_sweeps_the_command_line_s_values_without_m(tmp_path, capsys, monkeypatch):
    folder = experiments(tmp_path)
    line = ["-cd", str(folder), "+experiment=multi", "seed=3,4"]
    (theirs,) = hydra_runs(tmp_path, [*line, *QUIET], env={"SWEEPS": str(tmp_path)})
    assert [[o for o in job["overrides"] if o.startswith("seed=")] for job in jobs(theirs)] == [["seed=3"], ["seed=4"]]
    monkeypatch.setenv("SWEEPS", str(tmp_path / "hpcft"))
    assert main([*line, "cluster=slurmlab", "dry_run=true"]) == 0, capsys.readouterr().err
    configs = [yaml.safe_load((tmp_path / "hpcft" / "multi" / n / "config.yaml").read_text()) for n in ("0", "1")]
    assert [c["seed"] for c in configs] == [3, 4]
    assert main([*LINE[:3], "seed=3,4"]) == 2  # without it, a sweep in a run is refused, with Hydra's advice
    assert "to sweep over it, add --multirun (-m)" in capsys.readouterr().err


def test_a_submitted_run_lives_in_hydra_run_dir(tmp_path, capsys, monkeypatch, stand_in_slurm):
    monkeypatch.setenv("SWEEPS", str(tmp_path))
    assert main(["-cd", str(experiments(tmp_path)), "+experiment=rundir", "cluster=slurmlab"]) == 0
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert [stage["job_id"] for stage in manifest["stages"].values()] == ["100", "101", "102"]
    assert f"Run directory: {tmp_path / 'one'}" in capsys.readouterr().out
