"""A sweep keeps Hydra's conventions: `hydra.sweep.dir`/`subdir` (interpolations included),
`.hydra/` in every point, `hydra.job.*`, callbacks and sweepers that launch in batches.

The dir/subdir cases are those of Hydra's own launcher conformance suite
(`hydra.test_utils.launcher_common_tests`) that apply to a launcher which submits and exits.
Dry runs and stand-in Slurm commands; tests/integration/test_sweep.py submits for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from hpcft.cli import main
from hpcft.config.compose import conf_dir

TINY = ("model=tiny_llama", "cluster=slurmlab", "stages=[train]")


def sweep(tmp_path: Path, *overrides: str, dry_run: bool = True) -> int:
    return main(["-m", *TINY, *overrides, f"run_root={tmp_path / 'runs'}", *(["dry_run=true"] if dry_run else [])])


def point_dirs(sweep_dir: Path) -> list[str]:
    return sorted(p.name for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())


def test_subdir_by_override_dirname_names_each_point_by_its_overrides(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    code = sweep(
        tmp_path,
        "framework.lora_rank=4,8",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.job.override_dirname}",
        "hydra.job.config.override_dirname.exclude_keys=[run_root,dry_run,cluster,model,stages]",
    )
    assert code == 0, capsys.readouterr().err
    assert point_dirs(sweep_dir) == ["framework.lora_rank=4", "framework.lora_rank=8"]
    point = sweep_dir / "framework.lora_rank=8"
    assert "framework.lora_rank=8" in yaml.safe_load((point / ".hydra" / "overrides.yaml").read_text())
    assert yaml.safe_load((point / ".hydra" / "config.yaml").read_text())["framework"]["lora_rank"] == 8
    hydra = yaml.safe_load((point / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["job"]["num"] == 1 and hydra["job"]["override_dirname"] == "framework.lora_rank=8"
    assert (sweep_dir / "multirun.yaml").is_file()
    assert (point / "config.yaml").is_file() and (point / "native" / "train.yaml").is_file()  # hpcft's own


def test_override_dirname_with_custom_separators_and_excluded_keys(tmp_path, capsys):
    code = sweep(
        tmp_path,
        "framework.lora_rank=4",
        "framework.learning_rate=1e-3,1e-4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweep.subdir=${hydra.job.override_dirname}",
        "hydra.job.config.override_dirname.kv_sep=_",
        "hydra.job.config.override_dirname.item_sep=+",
        "hydra.job.config.override_dirname.exclude_keys=[run_root,dry_run,cluster,model,stages,framework.lora_rank]",
    )
    assert code == 0, capsys.readouterr().err
    assert point_dirs(tmp_path / "sweep") == ["framework.learning_rate_0.0001", "framework.learning_rate_0.001"]


def test_sweep_dir_relative_to_the_working_directory_and_numbered_subdirs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sweep(tmp_path, "framework.lora_rank=4,8,16", "hydra.sweep.dir=mine/here") == 0
    assert point_dirs(tmp_path / "mine" / "here") == ["0", "1", "2"]


def test_job_name_names_the_sweep_folder_and_is_recorded(tmp_path, capsys):
    assert sweep(tmp_path, "framework.lora_rank=4,8", "hydra.job.name=lr_study") == 0
    (sweep_dir,) = (tmp_path / "runs").iterdir()
    assert sweep_dir.name.startswith("lr_study-sweep-")
    hydra = yaml.safe_load((sweep_dir / "0" / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["job"]["name"] == "lr_study" and hydra["job"]["id"] == "0"


def test_output_subdir_null_writes_no_hydra_folder(tmp_path, capsys):
    assert sweep(tmp_path, "framework.lora_rank=4,8", "hydra.output_subdir=null") == 0
    (sweep_dir,) = (tmp_path / "runs").iterdir()
    assert (sweep_dir / "0" / "config.yaml").is_file() and not (sweep_dir / "0" / ".hydra").exists()


def test_two_points_in_one_folder_are_refused_before_anything_is_written(tmp_path, capsys):
    code = sweep(tmp_path, "framework.lora_rank=4,8", f"hydra.sweep.dir={tmp_path / 's'}", "hydra.sweep.subdir=same")
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "hydra.sweep.subdir: points 0 and 1 both get" in err
    assert not (tmp_path / "s").exists()  # not even the multirun.yaml Hydra's sweeper writes first


def test_an_existing_sweep_folder_is_never_reused(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text("{}")
    (tmp_path / "s" / "multirun.yaml").write_text("the earlier sweep's\n")
    code = sweep(tmp_path, "framework.lora_rank=4,8", f"hydra.sweep.dir={tmp_path / 's'}")
    assert code == 2 and "already holds a sweep" in capsys.readouterr().err
    assert (tmp_path / "s" / "multirun.yaml").read_text() == "the earlier sweep's\n"  # left as it was


def test_batches_name_their_dry_run_scripts(tmp_path, capsys):
    assert sweep(tmp_path, "framework.lora_rank=4,8,16,32", "hydra.sweeper.max_batch_size=2") == 0
    (sweep_dir,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in (sweep_dir / "dry_run").iterdir()) == [
        "batch0.group0.train.sbatch",
        "batch1.group0.train.sbatch",
    ]
    assert point_dirs(sweep_dir) == ["0", "1", "2", "3"]


def test_sweepers_the_controller_does_not_drive_yet_are_refused_in_one_line(tmp_path, capsys):
    assert sweep(tmp_path, "hydra/sweeper=ax", "framework.lora_rank=4,8") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "hydra/sweeper=ax" in err and "optuna" in err


class Recorder(Callback):
    """Appends each callback Hydra fires, with the point's values, to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _note(self, event: str, **values: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"event": event, **values}) + "\n")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._note("multirun_start")

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self._note("job_start", num=config.hydra.job.num, lora_rank=config.framework.lora_rank)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        ranks = [config.framework.lora_rank, job_return.cfg.framework.lora_rank]
        self._note("job_end", status=job_return.status.name, run=Path(job_return.return_value).name, ranks=ranks)
        self._note("job_end_num", num=config.hydra.job.num, hydra_num=job_return.hydra_cfg.hydra.job.num)


def test_callbacks_fire_on_the_login_node_for_every_point(tmp_path, capsys):
    log = tmp_path / "events.jsonl"
    code = sweep(
        tmp_path,
        "framework.lora_rank=4,8",
        f"+hydra.callbacks.rec._target_={Recorder.__module__}.Recorder",
        f"+hydra.callbacks.rec.path={log}",
    )
    assert code == 0, capsys.readouterr().err
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[0] == {"event": "multirun_start"}
    starts = [e for e in events if e["event"] == "job_start"]
    assert [(e["num"], e["lora_rank"]) for e in starts] == [(0, 4), (1, 8)]
    assert [e["run"] for e in events if e["event"] == "job_end"] == ["0", "1"]
    # as Hydra's run_job: on_job_end gets the point's config, and the job's return carries it
    assert [e["ranks"] for e in events if e["event"] == "job_end"] == [[4, 4], [8, 8]]
    assert [(e["num"], e["hydra_num"]) for e in events if e["event"] == "job_end_num"] == [(0, 0), (1, 1)]


FOREIGN_APP = """
import hydra

@hydra.main(config_path=None, version_base="1.3")
def main(cfg):
    return 1.0

main()
"""


def test_a_foreign_app_under_hpcft_s_launcher_gets_one_line(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(FOREIGN_APP)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    done = subprocess.run(
        [sys.executable, str(app), "-m", "hydra/launcher=hpcft", "+x=1,2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "hydra/launcher=hpcft submits hpcft's own fine-tuning pipelines" in done.stderr


def test_a_sweep_launched_in_batches_is_one_sweep_to_status_and_cancel(tmp_path, capsys, stand_in_slurm):
    code = sweep(tmp_path, "framework.lora_rank=4,8,16,32", "hydra.sweeper.max_batch_size=2", dry_run=False)
    assert code == 0, capsys.readouterr().err
    (sweep_dir,) = (tmp_path / "runs").iterdir()
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["batches"] == 2 and record["status"] == "submitted"
    assert [p["num"] for p in record["points"]] == [0, 1, 2, 3]
    assert [a["job_id"] for a in record["arrays"]] == ["100", "101"]
    capsys.readouterr()
    assert main(["status", str(sweep_dir)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if " train " in line]
    assert len(rows) == 4 and all("SUBMITTED" in row for row in rows)
    assert main(["cancel", str(sweep_dir)]) == 0
    cancelled = stand_in_slurm.cancelled.read_text().split()
    assert sorted(cancelled) == ["100_0", "100_1", "101_0", "101_1"]


def test_a_bad_point_in_a_later_batch_stops_the_sweep_before_the_first_batch(tmp_path, capsys, stand_in_slurm):
    code = sweep(tmp_path, "framework.cutoff_len=64,128,256,0", "hydra.sweeper.max_batch_size=2", dry_run=False)
    assert code == 2 and "framework.cutoff_len: must be > 0 (got 0)" in capsys.readouterr().err
    assert (stand_in_slurm.queue.parent / "next_id").read_text().strip() == "100"  # no sbatch ran


GLOB_APP = """
import json
import sys

import hydra
from hydra.core.hydra_config import HydraConfig

import hpcft.configure  # noqa: F401  (the frameworks' schemas)
from hpcft.config.compose import conf_dir, register_all_schemas

register_all_schemas()


@hydra.main(config_path=str(conf_dir()), config_name="hpcft", version_base="1.3")
def main(cfg):
    print("point", HydraConfig.get().runtime.choices.model)


for args in json.loads(sys.argv.pop(1)):  # one multirun per command line
    print("multirun")
    sys.argv[1:] = args
    main()
"""


def hydra_globs(tmp_path: Path, *runs: list[str]) -> list[list[str]]:
    """For each command line, the models Hydra's own sweeper and launcher run (hpcft's conf/ as the app's)."""
    app = tmp_path / "glob_app.py"
    app.write_text(GLOB_APP)
    quiet = ["framework=llamafactory", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    lines = [["-m", *args, *quiet, f"hydra.sweep.dir={tmp_path / 'hydra' / str(i)}"] for i, args in enumerate(runs)]
    done = subprocess.run(
        [sys.executable, str(app), json.dumps(lines)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [[line.split()[1] for line in run.splitlines() if line] for run in done.stdout.split("multirun\n")[1:]]


def planned_models(tmp_path: Path, *args: str) -> list[str]:
    """The model of each point hpcft plans, in point order (a dry run's `.hydra/overrides.yaml`)."""
    runs = tmp_path / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    plan = ["cluster=2x8gpu", "deepspeed=zero3", "stages=[train]", "dry_run=true", f"run_root={runs}"]
    assert main(["-m", *args, *plan]) == 0
    (sweep_dir,) = runs.iterdir()
    points = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    overrides = [yaml.safe_load((p / ".hydra" / "overrides.yaml").read_text()) for p in points]
    return [next(o.split("=", 1)[1] for o in point if o.startswith("model=")) for point in overrides]


def test_glob_sweeps_plan_the_options_hydra_s_glob_picks_config_dir_included(tmp_path, capsys):
    site = tmp_path / "site" / "model"
    site.mkdir(parents=True)
    tiny = (conf_dir() / "model" / "tiny_llama.yaml").read_text()
    (site / "tiny_site.yaml").write_text(tiny.replace("name: tiny_llama", "name: tiny_site"))
    runs = [
        ["model=glob(tiny*)"],
        ["--config-dir", str(tmp_path / "site"), "model=glob(tiny*)"],
        ["--config-dir", str(tmp_path / "site"), "model=glob(*,exclude=[bge*,minilm])"],
    ]
    planned = [planned_models(tmp_path, *args) for args in runs]
    # Hydra's glob also lists the schemas hpcft stores in each group (base_model): no options to hpcft
    assert planned == [[m for m in models if not m.startswith("base_")] for models in hydra_globs(tmp_path, *runs)]
    assert planned == [
        ["tiny_llama"],
        ["tiny_llama", "tiny_site"],
        ["internlm2", "llama3_8b", "qwen2_5_72b", "qwen2_5_7b", "tiny_llama", "tiny_site"],
    ]


def test_cfg_with_multirun_prints_every_point_s_config_and_submits_nothing(tmp_path, capsys, stand_in_slurm):
    runs = tmp_path / "runs"
    assert main(["-m", "model=tiny_llama", "cluster=slurmlab", "seed=1,2", f"run_root={runs}", "--cfg", "job"]) == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [p["seed"] for p in printed] == [1, 2] and {p["model"]["name"] for p in printed} == {"tiny_llama"}
    assert (stand_in_slurm.queue.parent / "next_id").read_text().strip() == "100"  # no sbatch ran
    assert not runs.exists()


def test_cfg_with_multirun_prints_what_the_sweep_gives_each_point_in_hydra_s_order(tmp_path, capsys):
    swept = [*TINY, "framework.lora_rank=4,8", "seed=1,2", "dry_run=true", f"run_root={tmp_path / 'runs'}"]
    assert main(["-m", "--cfg", *swept]) == 0
    out = capsys.readouterr().out
    assert main(["-m", *swept]) == 0  # the same sweep, dry run: each point's config.yaml and .hydra/overrides.yaml
    (sweep_dir,) = (tmp_path / "runs").iterdir()
    points = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    heads = [line.split(": ", 1)[1].split() for line in out.splitlines() if line.startswith("# point ")]
    recorded = [yaml.safe_load((p / ".hydra" / "overrides.yaml").read_text()) for p in points]
    assert [[*h, "framework=llamafactory"] for h in heads] == recorded  # the sweep adds the framework the model implies
    printed = [yaml.safe_load(doc.split("\n", 1)[1]) for doc in out.split("---\n")]
    # `--cfg job` prints the composed config, as Hydra does: what each point's .hydra/config.yaml records
    assert printed == [yaml.safe_load((p / ".hydra" / "config.yaml").read_text()) for p in points]
