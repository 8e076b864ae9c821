"""Results as people read them: base vs fine-tuned for both metrics shapes, status lines,
single-run reports, loss curves from the Trainer's own log, and the base model's server."""

from __future__ import annotations

import json
from pathlib import Path

from hpcft.cli import main
from hpcft.cli.status import metric_summary
from hpcft.configure import load_config
from hpcft.frameworks import adapter_for
from hpcft.plots import loss_curve
from hpcft.results import comparison_rows, gains, headline
from hpcft.rundir import RunLayout, write_json_atomic

GENERATION = {
    "rouge-l": 61.25,
    "bleu-4": 40.0,
    "rows": 6.0,
    "model": "m-ft",
    "generation": {"max_tokens": 8},
    "base": {"rouge-l": 1.25, "bleu-4": 0.5, "rows": 6.0},
    "gain": {"rouge-l": 60.0, "bleu-4": 39.5},
}
RETRIEVAL = {
    "fine_tuned": {"recall@1": 100.0, "mrr@10": 100.0},
    "base": {"recall@1": 12.5, "mrr@10": 43.65},
    "gain": {"recall@1": 87.5, "mrr@10": 56.35},
    "queries": 8,
}


def test_both_shapes_give_the_fine_tuned_metrics_and_the_gain():
    assert headline(GENERATION) == {"rouge-l": 61.25, "bleu-4": 40.0}
    assert headline(RETRIEVAL) == {"recall@1": 100.0, "mrr@10": 100.0}
    assert gains(GENERATION) == {"rouge-l": 60.0, "bleu-4": 39.5}
    assert comparison_rows(RETRIEVAL)[0] == ["recall@1", "12.50", "100.00", "+87.50"]
    assert comparison_rows({"rouge-l": 5.0})[0] == ["rouge-l", "", "5.00", ""]


def run_with(tmp_path: Path, metrics: dict) -> Path:
    run = tmp_path / "run"
    write_json_atomic(RunLayout(run).metrics, metrics)
    write_json_atomic(RunLayout(run).manifest, {"run_name": "run", "executor": "local", "stages": {}})
    return run


def test_status_shows_embedding_metrics_with_their_gain(tmp_path):
    assert metric_summary(run_with(tmp_path, RETRIEVAL)) == "recall@1=100.00 (+87.50)  mrr@10=100.00 (+56.35)"


def test_report_of_a_single_run_compares_and_draws_the_loss(tmp_path, capsys):
    run = run_with(tmp_path, GENERATION)
    state = {"log_history": [{"step": 5, "loss": 2.5}, {"step": 10, "loss": 1.0}, {"train_runtime": 3.0}]}
    write_json_atomic(run / "train" / "trainer_state.json", state)
    assert main(["report", str(run)]) == 0
    report = (run / "report.md").read_text()
    assert "rouge-l  1.25  61.25       +60.00" in report
    assert (run / "train" / "training_loss.png").read_bytes()[:4] == b"\x89PNG"


def test_report_refuses_what_is_neither_a_run_nor_a_sweep(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def test_loss_curve_reads_the_final_log_else_the_latest_checkpoint(tmp_path):
    for step in (2, 10):
        state = {"log_history": [{"step": s, "loss": 1.0 / s} for s in range(1, step + 1)]}
        write_json_atomic(tmp_path / f"checkpoint-{step}" / "trainer_state.json", state)
    assert [s for s, _ in loss_curve(tmp_path)] == list(range(1, 11))
    write_json_atomic(tmp_path / "trainer_state.json", {"log_history": [{"step": 12, "loss": 0.1}]})
    assert loss_curve(tmp_path) == [(12, 0.1)]
    assert loss_curve(tmp_path / "missing") == []


def test_a_small_llm_is_served_beside_its_base_by_one_process_so_eval_scores_the_base(tmp_path):
    layout = RunLayout(tmp_path)
    adapter = adapter_for(load_config(["model=tiny_llama"]))
    files, job = adapter.deploy_files(layout), adapter.deploy_job(layout)
    assert (
        "model_name_or_path:" in files["native/api_base.yaml"]
        and str(layout.merged) not in files["native/api_base.yaml"]
    )
    beside = ["--base", "tiny_llama-base", str(layout.native / "api_base.yaml")]
    assert job.serve_argv[-3:] == beside and job.baseline_argv is None  # one server, both names
    assert job.baseline_model_name == "tiny_llama-base"
    off = adapter_for(load_config(["model=tiny_llama", "eval.baseline=false"]))
    assert "--base" not in off.deploy_job(layout).serve_argv and "native/api_base.yaml" not in off.deploy_files(layout)
    big = adapter_for(load_config(["model=internlm2", "cluster=8gpu"]))  # 7B: one copy by default
    assert "--base" not in big.deploy_job(layout).serve_argv and not big.deploy_job(layout).baseline_model_name
    cpu_full = ["model=internlm2", "cluster=slurmlab", "eval.baseline=true", "framework.finetuning_type=full"]
    files = adapter_for(load_config(cpu_full)).deploy_files(layout)
    assert set(files) == {"native/api.yaml", "native/api_base.yaml"}


def test_the_quick_start_experiments_compose():
    llm = load_config(["+experiment=quickstart"])
    assert (llm.model.name, llm.framework.finetuning_type, llm.eval.baseline) == ("tiny_llama", "full", True)
    embedding = load_config(["+experiment=quickstart_embedding"])
    assert (embedding.model.name, embedding.framework.name) == ("minilm", "flagembedding")
    assert json.loads(Path(embedding.evalset).read_text().splitlines()[0])["pos"]


def test_status_of_a_local_run_shows_elapsed_time_and_the_node(tmp_path):
    from hpcft.cli.status import render

    run = tmp_path / "run"
    stages = {
        "train": {"job_id": "101", "state": "COMPLETED", "started": 1000.0, "ended": 1065.0},
        "eval": {"job_id": "102", "state": "COMPLETED", "started": 1065.0, "ended": 1070.5},
    }
    write_json_atomic(RunLayout(run).manifest, {"run_name": "run", "executor": "local", "stages": stages})
    text, done = render([run])
    assert done
    assert [line.split()[-2:] for line in text.splitlines()[1:3]] == [["0:01:05", "local"], ["0:00:05", "local"]]


def report_of_sweep(sweep: Path, points: list[tuple[list[str], dict, dict[str, dict]]]) -> list[str]:
    """`report` on a sweep of points given as (overrides, stages, {file under the run: JSON});
    the lines of its report.csv."""
    records = []
    for num, (overrides, stages, files) in enumerate(points):
        run = sweep / str(num)
        write_json_atomic(run / "manifest.json", {"executor": "slurm", "stages": stages, "overrides": overrides})
        for name, data in files.items():
            write_json_atomic(run / name, data)
        records.append({"num": num, "overrides": overrides, "run_dir": str(run)})
    write_json_atomic(sweep / "sweep.json", {"points": records, "arrays": []})
    assert main(["report", str(sweep)]) == 0
    return (sweep / "report.csv").read_text().splitlines()


def test_a_sweep_report_has_each_metric_once_after_the_varying_parameters(tmp_path):
    metrics = RunLayout(Path()).metrics.as_posix()
    header, *rows = report_of_sweep(
        tmp_path / "sweep",
        [
            (
                [f"framework.learning_rate={lr}", "model=tiny_llama"],
                {},
                {metrics: {**GENERATION, "rouge-l": rouge, "base": {"rouge-l": 1.0}}},
            )
            for lr, rouge in [("1e-3", 10.0), ("1e-4", 20.0)]
        ],
    )
    assert header == "run,framework.learning_rate,rouge-l,bleu-4"
    assert rows == ["0,1e-3,10.0,40.0", "1,1e-4,20.0,40.0"]


def test_a_train_only_sweep_report_shows_the_trainers_loss_not_eval_columns(tmp_path):
    trained = {"train": {"job_id": "7_0", "state": "COMPLETED"}}
    header, *rows = report_of_sweep(
        tmp_path / "sweep",
        [
            ([f"framework.learning_rate={lr}"], trained, {"train/all_results.json": {"train_loss": loss, "epoch": 3.0}})
            for lr, loss in [("1e-3", 2.5), ("1e-4", 3.25)]
        ],
    )
    assert header == "run,framework.learning_rate,train_loss"
    assert rows == ["0,1e-3,2.5", "1,1e-4,3.25"]
