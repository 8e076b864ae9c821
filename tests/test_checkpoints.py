"""`eval.checkpoints` (hpcft.checkpoints): the values refused on the login node, the plan's
jobs, the checkpoints the deploy job serves, the scores and the best step the eval picks, and
what `status`, `report` and `load` make of them. The real thing (training, vLLM, Slurm):
tests/integration/test_vllm_checkpoints.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from hpcft.checkpoints import best_summary, checkpoint_every, chosen_checkpoints, pick_best
from hpcft.cli import main
from hpcft.configure import check, load_config
from hpcft.errors import ConfigError
from hpcft.jobs.checkpoint_eval import checkpoint_predictions, scored_checkpoints
from hpcft.jobs.deploy_checkpoints import served_checkpoints, with_checkpoints
from hpcft.jobs.spec import CheckpointEval, CheckpointServing, DeployJob, EvalJob
from hpcft.plan import build_pipeline
from hpcft.rundir import RunLayout, fine_tuned_weights, write_json_atomic
from hpcft.study import Objective, metric_value
from tests.test_cli_refusals import refuse, sbatch_log  # noqa: F401 (a fixture)

LLM = ["model=internlm2", "cluster=8gpu", "framework.save_steps=1"]
TINY_6_STEPS = ["framework.num_train_epochs=1", "framework.per_device_train_batch_size=4", "deploy.backend=vllm"]
TINY_6_STEPS += ["framework.gradient_accumulation_steps=1"]  # the demo's 24 rows, 4 a step


@pytest.mark.parametrize(("value", "every"), [("last", 0), ("all", 1), ("every_4", 4), ("every_100", 100)])
def test_the_values_read_as_a_step_period(value, every):
    assert checkpoint_every(value) == every


@pytest.mark.parametrize("value", ["best", "every_0", "every_", "every_-2", "ALL", "3"])
def test_another_value_is_refused_with_the_valid_ones(value):
    with pytest.raises(ConfigError, match=r"eval.checkpoints: .* is not one of last, all, every_<n>"):
        checkpoint_every(value)


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        (["eval.checkpoints=best"], "eval.checkpoints: 'best' is not one of last, all, every_<n>"),
        (["eval.checkpoints=every_3", "framework.save_steps=2"], "3 steps is not a multiple of framework.save_steps=2"),
        (
            ["eval.checkpoints=all", "stages=[train,deploy]"],
            "eval.checkpoints: all scores checkpoints in the eval stage",
        ),
        (["eval.checkpoints=all", "framework.finetuning_type=full"], "finetuning_type=full saves whole models"),
        (["eval.checkpoints=all", "deploy.backend=huggingface"], "deploy.backend=huggingface serves one model"),
        (["eval.checkpoints=all", "framework.save_steps=500"], "framework.save_steps=500 saves no checkpoint before"),
        (["model=minilm", "eval.checkpoints=all"], "flagembedding runs cannot serve their checkpoints"),
        (
            [
                "eval.checkpoints=every_8",
                "model=tiny_llama",
                "cluster=slurmlab",
                "framework.save_steps=2",
                *TINY_6_STEPS,
            ],
            "every_8: no checkpoint before the last of this run's 6 steps (24 rows) is at a multiple of 8",
        ),
    ],
)
def test_a_run_that_cannot_score_its_checkpoints_is_refused_in_one_line(overrides, said, capsys, sbatch_log, run_root):  # noqa: F811
    err = refuse([*LLM, *overrides, f"run_root={run_root}"], capsys, sbatch_log)
    assert said in err and len(err.strip().splitlines()) == 1, err


def planned(tmp_path: Path, *overrides: str) -> tuple[DeployJob, EvalJob]:
    checked = check(load_config([*LLM, *overrides]))
    layout = RunLayout(tmp_path / "run")
    pipeline = build_pipeline(checked, layout)
    jobs = {stage.name: stage.job for stage in pipeline.stages}
    deploy, evaluate = jobs["deploy"], jobs["eval"]
    assert isinstance(deploy, DeployJob) and isinstance(evaluate, EvalJob)
    return deploy, evaluate


def test_the_plan_serves_the_checkpoints_beside_the_final_adapter_and_picks_by_the_objective(tmp_path):
    deploy, evaluate = planned(tmp_path, "eval.checkpoints=every_2", "sweep.objective=eval.bleu-4")
    assert deploy.checkpoints == CheckpointServing(
        folder=str(tmp_path / "run" / "train"), every=2, model_name="internlm2-ft", max_in_batch=16
    )
    argv = deploy.serve_argv
    assert argv[argv.index("--max-loras") + 1] == "{max_loras}" and argv[-1] == "{checkpoints}"
    assert evaluate.checkpoints == CheckpointEval(
        folder=str(tmp_path / "run" / "train"), metric="bleu-4", direction="maximize"
    )
    deploy, evaluate = planned(tmp_path, "eval.checkpoints=all")  # no eval objective: the headline metric
    assert evaluate.checkpoints is not None and evaluate.checkpoints.metric == "rouge-l"
    deploy, evaluate = planned(tmp_path)  # last: as before
    assert deploy.checkpoints is None and evaluate.checkpoints is None and "{checkpoints}" not in deploy.serve_argv


def saved(folder: Path, steps: list[int], final: int | None) -> None:
    for step in steps:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"x")
    (folder / "checkpoint-8").mkdir()  # a checkpoint cut off before its adapter was written
    if final is not None:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": final}))


def test_the_deploy_job_serves_the_chosen_checkpoints_but_the_final_one(tmp_path):
    folder = tmp_path / "train"
    saved(folder, [2, 4, 6, 10], final=10)
    assert [s for s, _ in chosen_checkpoints(folder, 1, 10)] == [2, 4, 6]
    assert [s for s, _ in chosen_checkpoints(folder, 4, 10)] == [4]
    assert chosen_checkpoints(folder, 0, 10) == []
    serving = CheckpointServing(folder=str(folder), every=2, model_name="m-ft", max_in_batch=2)
    job = DeployJob(run_dir=str(tmp_path), model_name="m-ft", serve_argv=[], checkpoints=serving)
    served = served_checkpoints(job)
    assert [(s["step"], s["model"]) for s in served] == [(2, "m-ft-step-2"), (4, "m-ft-step-4"), (6, "m-ft-step-6")]
    argv = [
        "vllm",
        "--max-loras",
        "{max_loras}",
        "--max-cpu-loras",
        "{loras}",
        "--lora-modules",
        "m-ft=x",
        "{checkpoints}",
    ]
    filled = with_checkpoints(job, argv, served)
    assert filled[:7] == ["vllm", "--max-loras", "2", "--max-cpu-loras", "4", "--lora-modules", "m-ft=x"]
    assert [json.loads(entry) for entry in filled[7:]] == [{"name": s["model"], "path": s["path"]} for s in served]


def test_the_best_is_the_objective_s_best_the_earliest_on_a_tie():
    points = [{"step": s, "metrics": {"rouge-l": v, "loss": -v}} for s, v in [(2, 10.0), (4, 30.0), (6, 30.0)]]
    assert pick_best(points, "rouge-l", "maximize")["step"] == 4  # type: ignore[index]
    assert pick_best(points, "loss", "minimize")["step"] == 4  # type: ignore[index]
    assert pick_best(points[:1], "rouge-l", "minimize")["step"] == 2  # type: ignore[index]
    assert pick_best(points, "bleu-4", "maximize") is None


def answer_file(path: Path, answers: list[str], labels: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"index": i, "prompt": "q", "label": label, "predict": a}
        for i, (a, label) in enumerate(zip(answers, labels, strict=True))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def scored_run(tmp_path: Path) -> tuple[RunLayout, dict[str, Any]]:
    """A run whose eval scored checkpoints 2 and 4 and the final model (step 6): step 4 answers best."""
    layout = RunLayout(tmp_path / "run")
    saved(layout.train_output, [2, 4, 6], final=6)
    labels = ["the cat sat", "a red sun", "blue sky"]
    answer_file(checkpoint_predictions(layout, 2), ["dog", "moon", "grass"], labels)
    answer_file(checkpoint_predictions(layout, 4), labels, labels)
    spec = CheckpointEval(folder=str(layout.train_output), metric="rouge-l", direction="maximize")
    job = EvalJob(run_dir=str(layout.root), evalset="eval.json", checkpoints=spec)
    asked = [
        {"step": s, "model": f"m-ft-step-{s}", "path": str(layout.train_output / f"checkpoint-{s}")} for s in (2, 4)
    ]
    final = {"rouge-l": 40.0, "bleu-4": 20.0, "rows": 3.0}
    return layout, {**final, **scored_checkpoints(job, layout, asked, "m-ft", final, 3)}


def test_the_eval_scores_each_checkpoint_and_picks_the_best_step(tmp_path):
    layout, metrics = scored_run(tmp_path)
    points = metrics["checkpoints"]
    assert [(p["step"], p["model"], p.get("final", False)) for p in points] == [
        (2, "m-ft-step-2", False),
        (4, "m-ft-step-4", False),
        (6, "m-ft", True),
    ]
    assert points[0]["metrics"]["rouge-l"] == 0.0 and points[1]["metrics"]["rouge-l"] == 100.0
    assert metrics["best_checkpoint"] == {
        "step": 4,
        "path": str(layout.train_output / "checkpoint-4"),
        "metric": "rouge-l",
        "value": 100.0,
        "direction": "maximize",
        "final": False,
    }
    assert best_summary(metrics) == "best checkpoint: step 4 (rouge-l=100.00 of 3 steps)"


def test_status_report_and_load_show_the_best_checkpoint(tmp_path, capsys, run_root):
    assert main(["model=tiny_llama", "cluster=slurmlab", "dry_run=true", f"run_root={run_root}"]) == 0
    (run,) = [p for p in run_root.iterdir() if p.is_dir()]
    capsys.readouterr()
    layout, metrics = scored_run(tmp_path)
    RunLayout(run).eval.mkdir(parents=True, exist_ok=True)
    best = metrics["best_checkpoint"]
    RunLayout(run).metrics.write_text(json.dumps(metrics))
    assert fine_tuned_weights(run) == layout.train_output / "checkpoint-4"  # what load and Run.model_path give
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "rouge-l by step" in out and "4 best" in out and "6 final" in out
    assert (run / "checkpoints.png").stat().st_size > 0
    assert main(["status", str(run)]) == 0
    assert "best checkpoint: step 4" in capsys.readouterr().out
    RunLayout(run).metrics.write_text(json.dumps({**metrics, "best_checkpoint": {**best, "final": True}}))
    with pytest.raises(Exception, match="no fine-tuned weights"):
        fine_tuned_weights(run)  # the final model: found as before (this dry run trained nothing)


def test_a_study_trial_is_worth_its_best_checkpoint(tmp_path):
    layout, metrics = scored_run(tmp_path)
    layout.eval.mkdir(parents=True, exist_ok=True)
    layout.metrics.write_text(json.dumps(metrics))
    assert metric_value(layout.root, Objective(stage="eval", metric="rouge-l", direction="maximize")) == 100.0
    assert metric_value(layout.root, Objective(stage="eval", metric="bleu-4", direction="maximize")) == 20.0  # final
    assert metric_value(layout.root, Objective(stage="eval", metric="rouge-l", direction="minimize")) == 40.0


def test_the_eval_asks_each_published_checkpoint_once_and_a_requeue_scores_them_from_disk(tmp_path):
    """Against a stand-in engine (it answers every model alike: a tie, the earliest step wins)."""
    from benchmarks.standin_engine import Engine, Server
    from hpcft.jobs.evaluate import run_eval
    from tests.test_eval_engine import eval_run

    folder = tmp_path / "train"
    saved(folder, [2], final=4)
    spec = CheckpointEval(folder=str(folder), metric="rouge-l", direction="maximize")
    with Server(Engine(latency_s=0.001)) as server:
        job, layout = eval_run(tmp_path, 20, server, checkpoints=spec)
        point = {"step": 2, "model": "standin-step-2", "path": str(folder / "checkpoint-2")}
        write_json_atomic(layout.endpoint, {**server.endpoint, "checkpoints": [point]})
        run_eval(job)
        assert server.engine.arrivals == 40  # the final adapter's 20 rows, then the checkpoint's
    first = json.loads(layout.metrics.read_text())
    assert [(p["step"], p["model"]) for p in first["checkpoints"]] == [(2, "standin-step-2"), (4, "standin")]
    assert first["checkpoints"][0]["metrics"] == first["checkpoints"][1]["metrics"]
    assert first["best_checkpoint"]["step"] == 2 and first["best_checkpoint"]["path"] == point["path"]
    write_json_atomic(layout.endpoint, {**server.endpoint, "checkpoints": [point], "stopped": True})
    layout.metrics.unlink()  # requeued while scoring, the server gone
    run_eval(dataclasses.replace(job, endpoint_timeout_s=1))
    assert json.loads(layout.metrics.read_text()) == first
