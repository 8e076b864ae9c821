"""Sweeps become job arrays: grouping by resource shape, splitting, throttling (dry runs, no
Slurm). tests/integration/test_sweep.py submits a real sweep to the local cluster."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hpcft.cli import main


def dry_sweep(run_root: Path, capsys, *overrides: str) -> tuple[str, Path]:
    assert main(["-m", *overrides, "dry_run=true", f"run_root={run_root}"]) == 0
    (sweep,) = run_root.iterdir()
    return capsys.readouterr().out, sweep


def arrays(out: str) -> list[tuple[int, str, int]]:
    """(group, stage, points) of each printed array script."""
    found = re.findall(r"# ---- array group (\d+) \((\d+) points: [\d,]+\) (\w+):", out)
    return [(int(g), stage, int(n)) for g, n, stage in found]


def test_six_points_make_one_array_per_stage(run_root, capsys):
    out, sweep = dry_sweep(
        run_root,
        capsys,
        "model=tiny_llama",
        "cluster=slurmlab",
        "framework.learning_rate=1e-3,1e-4",
        "framework.lora_rank=4,8,16",
    )
    assert arrays(out) == [(0, "train", 6), (0, "deploy", 6), (0, "eval", 6)]
    assert "#SBATCH --array=0-5%6" in out
    assert "#SBATCH --dependency='aftercorr:<train array>'" in out
    assert out.count("#SBATCH --dependency='aftercorr:<train array>'") == 2  # deploy and eval
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == [str(i) for i in range(6)]
    # each point has its own run directory with its own native config
    configs = {(sweep / str(i) / "native" / "train.yaml").read_text() for i in range(6)}
    assert len(configs) == 6
    assert "framework.lora_rank=16" in yaml.safe_load((sweep / "5" / ".hydra" / "overrides.yaml").read_text())


def test_models_of_different_sizes_get_separate_arrays_with_their_own_gpus(run_root, capsys):
    out, _ = dry_sweep(run_root, capsys, "model=qwen2_5_7b,qwen2_5_72b", "cluster=2x8gpu", "deepspeed=zero3")
    assert [a[:2] for a in arrays(out)] == [
        (0, "train"),
        (0, "deploy"),
        (0, "eval"),
        (1, "train"),
        (1, "deploy"),
        (1, "eval"),
    ]
    deploy_gpus = re.findall(r"deploy: .*?\n(?:.*\n)*?#SBATCH --gpus-per-node=(\d+)", out)
    assert deploy_gpus == ["1", "4"]
    # one point per group: plain jobs with plain dependencies
    assert "#SBATCH --dependency='afterok:<train array>'" in out
    assert "#SBATCH --dependency='afterok:<train array>,after:<deploy array>'" in out


def test_arrays_longer_than_the_cluster_allows_are_split_and_throttled(run_root, capsys):
    out, _ = dry_sweep(
        run_root,
        capsys,
        "model=tiny_llama",
        "cluster=slurmlab",
        "cluster.max_array_size=4",
        "cluster.array_parallelism=2",
        "framework.learning_rate=range(1,7)",
        "stages=[train]",
    )
    assert arrays(out) == [(0, "train", 4), (1, "train", 2)]
    assert "#SBATCH --array=0-3%2" in out and "#SBATCH --array=0-1%2" in out


def test_a_bad_point_fails_the_whole_sweep_before_anything_is_written(run_root, capsys):
    code = main(["-m", "model=tiny_llama", "cluster=slurmlab", "framework.cutoff_len=64,0", f"run_root={run_root}"])
    assert code == 2
    assert "framework.cutoff_len: must be > 0 (got 0)" in capsys.readouterr().err
    assert not any(p.name.isdigit() for sweep in run_root.iterdir() for p in sweep.iterdir())


def test_hydra_records_the_sweep_and_each_point_its_config(run_root, capsys):
    _, sweep = dry_sweep(run_root, capsys, "model=tiny_llama", "framework.lora_rank=4,8", "stages=[train]")
    assert "framework.lora_rank=4,8" in (sweep / "multirun.yaml").read_text()
    assert "lora_rank: 4" in (sweep / "0" / "config.yaml").read_text()
    assert "lora_rank: 8" in (sweep / "1" / "config.yaml").read_text()


def test_points_sharing_a_composition_get_the_config_a_single_run_would(run_root, capsys):
    # Points differing only in values share one composition of their groups; each must still
    # equal what `python -m hpcft <that point's overrides>` composes on its own.
    from hpcft.config.overrides import hydra_value
    from hpcft.configure import load_config
    from hpcft.launch import config_yaml

    swept = [
        "model=tiny_llama",
        "deepspeed=none,zero2",
        "framework.learning_rate=1e-3,1e-4",
        "+framework.args.warmup_ratio=0.1",
    ]
    _, sweep = dry_sweep(run_root, capsys, *swept, "name=" + hydra_value("it's ${oc.env:HOME}"), "stages=[train]")
    for point in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        overrides = yaml.safe_load((point / ".hydra" / "overrides.yaml").read_text())
        alone = load_config([*overrides, f"run_root={run_root}", "dry_run=true"])
        assert (point / "config.yaml").read_text() == config_yaml(alone), overrides
    assert len({(p / "config.yaml").read_text() for p in sweep.iterdir() if p.name.isdigit()}) == 4


def test_a_bad_value_in_a_sweep_names_its_key(run_root, capsys):
    code = main(["-m", "model=tiny_llama", "framework.learning_rat=1e-3,1e-4", f"run_root={run_root}"])
    assert code == 2
    assert "framework.learning_rat" in capsys.readouterr().err


def test_a_sweep_slurm_cannot_take_says_why_in_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import os

    from hpcft.cli import main

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "squeue", "scancel", "srun"):  # a login node whose controller is unreachable
        stub = bin_dir / name
        stub.write_text(
            "#!/bin/sh\necho 'sbatch: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host' >&2\nexit 1\n"
        )
        stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runs = tmp_path / "runs"
    code = main(["-m", "model=tiny_llama", "cluster=slurmlab", f"run_root={runs}", "framework.lora_rank=4,8"])
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("hpcft:")]  # sbatch prints its own line too
    assert code == 1 and len(ours) == 1 and "Traceback" not in err
    assert "nothing was submitted: sbatch: error: resolve_ctls_from_dns_srv" in ours[0]
    assert list(runs.iterdir()) == []


def test_an_optuna_study_searches_the_options_a_glob_matches(run_root, capsys):
    import json

    args = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "model=glob(*,exclude=[bge*,minilm,q*])"]
    assert main([*args, "cluster=slurmlab", "dry_run=true", f"run_root={run_root}"]) == 0
    (sweep,) = run_root.iterdir()
    overrides = json.loads((sweep / "controller.json").read_text())["overrides"]
    assert "model=internlm2,llama3_8b,tiny_llama" in overrides  # Optuna's categorical: Hydra's own glob would fail
