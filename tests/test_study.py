"""Adaptive sweeps (`hydra/sweeper=optuna`): what the login node checks and submits, and how
the controller resumes a study, with a real Optuna study on SQLite. The controller runs on
the real cluster in tests/integration/test_study.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest

from hpcft.cli import main
from hpcft.manifest import Manifest, StageRecord
from hpcft.scheduler import StageState
from hpcft.study import ControllerRecord, Objective, controller_of, study_summary
from hpcft.sweep.controller import await_objectives, settle_unfinished, trials_record

optuna.logging.set_verbosity(logging.WARNING)
SEARCH = ("framework.learning_rate=interval(1e-4,1e-2)", "framework.lora_rank=choice(4,8,16)")
OPTUNA = ("hydra/sweeper=optuna", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2")


def study(tmp_path: Path, *overrides: str, dry_run: bool = True) -> int:
    args = ["-m", *OPTUNA, *SEARCH, "model=tiny_llama", "cluster=slurmlab", f"run_root={tmp_path / 'runs'}"]
    return main([*args, *overrides, *(["dry_run=true"] if dry_run else [])])


def the_sweep(tmp_path: Path) -> Path:
    (sweep_dir,) = (tmp_path / "runs").iterdir()
    return sweep_dir


def test_the_study_is_checked_and_recorded_with_its_storage_in_the_sweep_folder(tmp_path, capsys):
    assert study(tmp_path) == 0
    sweep_dir = the_sweep(tmp_path)
    record = controller_of(sweep_dir)
    assert record is not None and record.job_id is None  # a dry run submits nothing
    assert (record.n_trials, record.n_jobs) == (6, 2)
    assert record.objective == Objective(stage="eval", metric="rouge-l", direction="maximize")
    assert record.storage == f"sqlite:///{sweep_dir / 'optuna.db'}"
    # the controller, and every restart of it, finds the same folder and the same study
    assert f"hydra.sweep.dir={sweep_dir}" in record.overrides
    assert "hydra.sweeper.direction=maximize" in record.overrides
    assert "hydra.sweeper.max_failure_rate=1.0" in record.overrides
    assert "eval.rouge-l" in capsys.readouterr().out


def test_a_loss_objective_is_minimised_and_a_given_direction_kept(tmp_path):
    assert study(tmp_path, "stages=[train]") == 0
    record = controller_of(the_sweep(tmp_path))
    assert record is not None
    assert record.objective == Objective(stage="train", metric="train_loss", direction="minimize")


@pytest.mark.parametrize(
    "override,named",
    [
        ("sweep.objective=eval", "sweep.objective"),
        ("sweep.objective=deploy.latency", "sweep.objective"),
        ("stages=[train]", "sweep.objective"),  # with the eval objective below
        ("framework.lora_rnk=choice(4,8)", "lora_rnk"),
        ("framework.lora_rank=choice(4,eight)", "framework.lora_rank"),
        ("hydra.sweeper.n_trials=many", "n_trials"),
        ("sweep.poll_s=0", "sweep.poll_s"),
        ("hydra.sweeper.direction=upward", "direction"),
        # every value a search can yield, not only its first (issue 29)
        ("framework.lora_rank=choice(4,0)", "framework.lora_rank: must be > 0 (got 0); a trial of the study may take"),
        ("framework.lora_rank=range(0,8,2)", "framework.lora_rank: must be > 0 (got 0)"),
        ("framework.learning_rate=interval(1e-2,1e-4)", "Optuna refuses it: its low end 0.01 is above its high end"),
        ("framework.learning_rate=tag(log,interval(0,1e-2))", "a log scale needs a low end above 0"),
        ("framework.lora_rank=interval(4,64)", "Optuna draws interval() as floats"),
        ("framework.val_size=interval(0.1,1.5)", "framework.val_size: must be in [0.0, 1.0)"),
        ("hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs: must be > 0 (got 0)"),
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials: must be > 0 (got 0)"),
        ("hydra.sweeper.max_failure_rate=1.5", "hydra.sweeper.max_failure_rate: must be in [0, 1]"),
        ("hydra/sweeper/sampler=tpee", "hydra/sweeper/sampler: unknown sampler 'tpee'; did you mean 'tpe'"),
        ("hydra.sweeper.sampler=random", "choose the sampler with hydra/sweeper/sampler=<name>"),
        ("hydra/sweeper/sampler=grid", "the grid sampler takes choice() and range() only"),
    ],
)
def test_bad_settings_fail_on_the_login_node_in_one_line(tmp_path, capsys, override, named):
    extra = ("sweep.objective=eval.rouge-l",) if override == "stages=[train]" else ()
    assert study(tmp_path, override, *extra) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_controller_is_one_small_cpu_job_named_after_the_sweep(tmp_path, capsys, stand_in_slurm):
    assert study(tmp_path, dry_run=False) == 0
    sweep_dir = the_sweep(tmp_path)
    record = controller_of(sweep_dir)
    assert record is not None and record.job_id == "100" and record.logs
    script = (sweep_dir / "slurm" / "100_submission.sh").read_text()
    assert f"#SBATCH --job-name={sweep_dir.name}.controller" in script
    assert "#SBATCH --cpus-per-task=1" in script and "--gpus" not in script
    assert "controller job 100" in capsys.readouterr().out


def point(sweep_dir: Path, num: int, state: StageState, rouge: float | None) -> Path:
    """A finished point of a sweep, as the local executor records it."""
    run = sweep_dir / str(num)
    (run / "eval").mkdir(parents=True)
    manifest = Manifest(run_name=run.name, run_dir=str(run), executor="local", status="completed")
    manifest.stages = {"train": StageRecord(state=StageState.COMPLETED), "eval": StageRecord(state=state)}
    manifest.write(run / "manifest.json")
    if rouge is not None:
        (run / "eval" / "metrics.json").write_text(json.dumps({"rouge-l": rouge, "bleu-4": 1.0, "rows": 6}))
    return run


def record_of(sweep_dir: Path) -> ControllerRecord:
    return ControllerRecord(
        sweep_dir=str(sweep_dir),
        overrides=[],
        implied_keys=[],
        objective=Objective(stage="eval", metric="rouge-l", direction="maximize"),
        n_trials=6,
        n_jobs=2,
        storage=f"sqlite:///{sweep_dir / 'optuna.db'}",
        study_name="s",
        poll_s=0.01,
    )


def test_a_restarted_controller_tells_the_trials_it_had_submitted_and_only_those(tmp_path):
    sweep_dir = tmp_path / "sweep"
    record = record_of(sweep_dir)
    runs = [point(sweep_dir, 0, StageState.COMPLETED, 10.0), point(sweep_dir, 1, StageState.COMPLETED, 30.0)]
    runs += [point(sweep_dir, 2, StageState.COMPLETED, 20.0), point(sweep_dir, 3, StageState.FAILED, None)]
    points = [{"num": i, "overrides": [], "run_dir": str(run)} for i, run in enumerate(runs)]
    (sweep_dir / "sweep.json").write_text(json.dumps({"points": points, "batches": 2}))
    s = optuna.create_study(study_name="s", storage=record.storage, direction="maximize")
    for value in (10.0, 30.0):
        trial = s.ask({"x": optuna.distributions.UniformDistribution(0, 1)})
        s.tell(trial, value)
    for _ in range(3):  # 2 and 3 were submitted before the restart; 4 was asked for, never submitted
        s.ask({"x": optuna.distributions.UniformDistribution(0, 1)})
    settle_unfinished(s, record, poll_s=0.01)
    states = [(t.number, t.state.name, t.value) for t in s.trials]
    assert states == [
        (0, "COMPLETE", 10.0),
        (1, "COMPLETE", 30.0),
        (2, "COMPLETE", 20.0),
        (3, "FAIL", None),
        (4, "FAIL", None),
    ]
    summary = trials_record(s, record, "running")
    assert summary["best"]["number"] == 1 and summary["best"]["run_dir"] == str(runs[1])
    assert study_summary(record) == "3 of 6 trials scored; best so far: trial 1, eval.rouge-l=30"


def test_a_trial_without_its_metric_fails_with_the_reason(tmp_path):
    run = point(tmp_path, 0, StageState.COMPLETED, None)
    (result,) = await_objectives([run], Objective(stage="eval", metric="rouge-l", direction="maximize"), 0.01)
    assert isinstance(result, Exception) and "eval.rouge-l not among" in str(result)
    (result,) = await_objectives([run], Objective(stage="train", metric="train_loss", direction="minimize"), 0.01)
    assert isinstance(result, Exception) and "train.train_loss" in str(result)


def test_the_sweeper_is_told_each_result_a_failure_included_and_a_restart_numbers_trials_after(tmp_path, monkeypatch):
    """The real Hydra multirun, Optuna sweeper and hpcft launcher inside the controller; only
    the submission and the wait for results are stand-ins (the cluster runs them in
    tests/integration/test_study.py)."""
    import hpcft.sweep.controller
    import hpcft.sweep.launch
    from hpcft.sweep.controller import TrialFailed, run_controller

    assert study(tmp_path, "hydra.sweeper.n_trials=4", "stages=[train]") == 0
    sweep_dir = the_sweep(tmp_path)
    launched: list[int] = []

    def submitted(points, sweep_dir, batch=0, say=print):
        launched.extend(p.num for p in points)
        for p in points:
            p.run_dir.mkdir(parents=True)
        record = json.loads(path.read_text()) if (path := sweep_dir / "sweep.json").is_file() else {"points": []}
        record["points"] += [{"num": p.num, "overrides": list(p.overrides), "run_dir": str(p.run_dir)} for p in points]
        record["batches"] = batch + 1
        path.write_text(json.dumps(record))
        return [p.run_dir for p in points]

    def results(runs, objective, poll_s):
        return [TrialFailed("training failed") if int(r.name) % 2 else float(r.name) for r in runs]

    monkeypatch.setattr(hpcft.sweep.launch, "launch_sweep", submitted)
    monkeypatch.setattr(hpcft.sweep.controller, "await_objectives", results)
    run_controller(str(sweep_dir))
    trials = json.loads((sweep_dir / "trials.json").read_text())
    assert [(t["number"], t["state"]) for t in trials["trials"]] == [
        (0, "COMPLETE"),
        (1, "FAIL"),
        (2, "COMPLETE"),
        (3, "FAIL"),
    ]
    assert trials["best"]["number"] == 0  # train_loss is minimised
    record = json.loads((sweep_dir / "controller.json").read_text())
    (sweep_dir / "controller.json").write_text(json.dumps({**record, "n_trials": 6}))
    run_controller(str(sweep_dir))  # a restart: two trials to go, numbered after the first four
    assert launched == [0, 1, 2, 3, 4, 5]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3", "4", "5"]
    assert len(json.loads((sweep_dir / "trials.json").read_text())["trials"]) == 6


@pytest.mark.parametrize("n_jobs", [1, 2, 4])
def test_a_trial_refused_in_the_controller_fails_and_the_study_goes_on(tmp_path, monkeypatch, n_jobs):
    """Each value passes on the login node, one combination does not (3 per device does not
    divide a global batch of 4): the grid sampler tries all four, in batches of `n_jobs`; that
    trial fails, not the study (Optuna's grid sampler stops the study once its last batch is
    asked, which Hydra's sweeper let through as an error when a trial of it failed)."""
    import hpcft.sweep.controller
    import hpcft.sweep.launch
    from hpcft.sweep.controller import run_controller

    grid = ["-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=4"]
    search = ["framework.per_device_train_batch_size=choice(1,3)", "framework.global_batch_size=choice(3,4)"]
    fixed = ["model=tiny_llama", "cluster=slurmlab", "stages=[train]", f"run_root={tmp_path / 'runs'}", "dry_run=true"]
    assert main([*grid, *search, *fixed, f"hydra.sweeper.n_jobs={n_jobs}"]) == 0
    sweep_dir = the_sweep(tmp_path)
    launched: list[tuple[str, ...]] = []

    def submitted(points, sweep_dir, batch=0, say=print):
        launched.extend(p.overrides for p in points)
        path = sweep_dir / "sweep.json"
        record = json.loads(path.read_text()) if path.is_file() else {"points": []}
        record["points"] += [{"num": p.num, "overrides": list(p.overrides), "run_dir": str(p.run_dir)} for p in points]
        path.write_text(json.dumps({**record, "batches": batch + 1}))
        return [p.run_dir for p in points]

    monkeypatch.setattr(hpcft.sweep.launch, "launch_sweep", submitted)
    monkeypatch.setattr(hpcft.sweep.controller, "await_objectives", lambda runs, objective, poll_s: [1.0] * len(runs))
    run_controller(str(sweep_dir))
    trials = json.loads((sweep_dir / "trials.json").read_text())
    outcome = {
        (t["params"]["framework.per_device_train_batch_size"], t["params"]["framework.global_batch_size"]): t["state"]
        for t in trials["trials"]
    }
    assert outcome == {(1, 3): "COMPLETE", (1, 4): "COMPLETE", (3, 3): "COMPLETE", (3, 4): "FAIL"}
    assert len(launched) == 3 and trials["status"] == "completed"


def test_trials_derived_from_the_command_s_composition_are_the_composed_ones(tmp_path):
    """The login node checks each trial derived from the command's one composition (the
    sweeper's fixed `params` applied to it); composed one by one, the configs are the same."""
    from hpcft.config.compose import compose_with_hydra
    from hpcft.sweep.adaptive import Trials, check_trials
    from hpcft.sweep.derive import PointBase

    fixed = ["model=tiny_llama", "cluster=slurmlab", "framework=llamafactory", f"run_root={tmp_path}"]
    sweeper = {"n_trials": 4, "n_jobs": 2, "max_failure_rate": 1.0, "params": {"framework.num_train_epochs": "2"}}
    _, settings = compose_with_hydra([*fixed, *OPTUNA], keep=True)
    assert settings.composition is not None
    made: list[object] = []
    for trials in (Trials(base=PointBase(settings.composition)), Trials()):
        made.append(check_trials([*fixed, *SEARCH], sweeper, [], trials))
    assert made[0] == made[1]
    assert made[0].framework.num_train_epochs == 2  # type: ignore[attr-defined]
