"""Standard LLM suites (`eval.suites`): the login node's checks, the lm-eval command the eval
job runs, resuming finished tasks, and how the scores join metrics.json. The real runs
against vLLM are tests/integration/test_suites.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcft.cli import main
from hpcft.config.suites import suite_job, validate_suites
from hpcft.configure import load_config
from hpcft.errors import ConfigError
from hpcft.jobs.spec import SuiteJob
from hpcft.jobs.suites import Suites, joined, key_env, lm_eval_argv, suite_rows, task_scores
from hpcft.rundir import RunLayout
from tests.test_cli_refusals import refuse, sbatch_log  # noqa: F401 (a fixture)
from tests.test_submit_path_imports import HEAVY

TASKS = Path(__file__).parent / "fixtures" / "suites"
SUITES = ["eval.suites=[hpcft_mc,hpcft_gen]", f"eval.suite_tasks_dir={TASKS}"]
GPU_LLM = ["model=internlm2", "cluster=8gpu"]


def test_suites_off_by_default_give_the_eval_job_none():
    assert suite_job(load_config(GPU_LLM)) is None


def test_named_suites_reach_the_eval_job_with_their_settings(capsys, run_root):
    cfg = load_config([*GPU_LLM, *SUITES, "eval.suite_fewshot=2", "eval.suite_limit=5", "deploy.max_model_len=4096"])
    validate_suites(cfg)
    job = suite_job(cfg)
    assert job is not None
    assert (job.tasks, job.num_fewshot, job.limit, job.max_length) == (("hpcft_mc", "hpcft_gen"), 2, 5, 4096)
    assert job.include_path == str(TASKS) and job.tokenizer == cfg.model.path
    assert main([*GPU_LLM, *SUITES, "dry_run=true", f"run_root={run_root}"]) == 0


def test_lm_eval_sends_eval_concurrency_except_on_a_lora_server():
    full = suite_job(load_config([*GPU_LLM, *SUITES, "framework.finetuning_type=full", "eval.concurrency=48"]))
    lora = suite_job(load_config([*GPU_LLM, *SUITES, "framework.finetuning_type=lora"]))
    assert full is not None and lora is not None
    assert (full.concurrency, lora.concurrency) == (48, 1)  # vllm-project/vllm#16668 on LoRA servers


@pytest.mark.parametrize(
    "overrides,said",
    [
        (["model=minilm", "cluster=8gpu"], "eval.suites: standard LLM suites score LLMs"),
        ([*GPU_LLM, "deploy.backend=huggingface"], "eval.suites: suites need vLLM's completions endpoint"),
        ([*GPU_LLM, "stages=[train,deploy]"], "eval.suites: suites run in the eval stage"),
        ([*GPU_LLM, "eval.suite_fewshot=-1"], "eval.suite_fewshot: must be >= 0"),
        ([*GPU_LLM, "eval.suite_limit=0"], "eval.suite_limit: must be > 0"),
        ([*GPU_LLM, "eval.suite_tasks_dir=/nonexistent"], "eval.suite_tasks_dir: /nonexistent is not a folder"),
    ],
)
def test_suites_that_cannot_run_are_refused_naming_the_key(overrides, said, capsys, sbatch_log, run_root):  # noqa: F811
    args = [*overrides, "eval.suites=[hpcft_mc]", f"eval.suite_tasks_dir={TASKS}", f"run_root={run_root}"]
    if "eval.suite_tasks_dir=/nonexistent" in overrides:
        args.remove(f"eval.suite_tasks_dir={TASKS}")
    assert said in refuse(args, capsys, sbatch_log)


def task_dir(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "mine.yaml").write_text("task: mine\noutput_type: multiple_choice\n" + body)
    return folder


def test_a_local_task_whose_data_file_is_missing_is_refused(tmp_path):
    folder = task_dir(tmp_path, "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: rows.jsonl\n")
    cfg = load_config([*GPU_LLM, "eval.suites=[mine]", f"eval.suite_tasks_dir={folder}"])
    with pytest.raises(ConfigError, match=r"eval.suites: task mine .*data file rows.jsonl not found"):
        validate_suites(cfg)
    (folder / "rows.jsonl").write_text("{}\n")
    validate_suites(cfg)


def test_a_hub_dataset_missing_from_the_offline_cluster_s_cache_is_refused(tmp_path):
    folder = task_dir(tmp_path, "dataset_path: someorg/somedata\nfoo: !function utils.process\n")
    cache = tmp_path / "hf" / "datasets"
    cache.mkdir(parents=True)
    cfg = load_config([*GPU_LLM, "eval.suites=[mine]", f"eval.suite_tasks_dir={folder}"])
    cfg.cluster.env, cfg.cluster.internet = {"HF_HOME": str(tmp_path / "hf")}, True
    validate_suites(cfg)  # compute nodes online: they download it
    cfg.cluster.internet = False
    with pytest.raises(ConfigError, match=r"eval.suites: task mine needs the hub dataset someorg/somedata"):
        validate_suites(cfg)
    (cache / "someorg___somedata").mkdir()
    validate_suites(cfg)


def test_a_built_in_task_whose_hub_dataset_is_not_cached_is_refused(tmp_path):
    pytest.importorskip("lm_eval")  # its task files are read, never imported
    cfg = load_config([*GPU_LLM, "eval.suites=[arc_easy]"])
    cfg.cluster.env, cfg.cluster.internet = {"HF_HOME": str(tmp_path)}, False
    (tmp_path / "datasets").mkdir()
    with pytest.raises(ConfigError, match=r"eval.suites: task arc_easy needs the hub dataset allenai/ai2_arc"):
        validate_suites(cfg)


ENDPOINT = {"base_url": "http://node1:8000/v1", "model": "tiny-ft", "api_key_file": ""}


def test_lm_eval_runs_as_typed_by_hand_and_the_key_is_only_in_its_environment(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    job = SuiteJob(tasks=("hpcft_mc",), tokenizer="/m/tok", num_fewshot=2, limit=5, include_path="/t")
    argv = lm_eval_argv(job, {**ENDPOINT, "api_key_file": str(key_file)}, "hpcft_mc", tmp_path / "out")
    assert argv[1:6] == ["-m", "lm_eval", "run", "--model", "local-completions"]
    assert argv[6:8] == [
        "--model_args",
        "base_url=http://node1:8000/v1/completions,model=tiny-ft,tokenizer=/m/tok,tokenizer_backend=huggingface,"
        "num_concurrent=8,max_retries=5,timeout=300",
    ]
    assert argv[8:] == [
        "--tasks", "hpcft_mc", "--output_path", str(tmp_path / "out"), "--log_samples",
        "--num_fewshot", "2", "--limit", "5", "--include_path", "/t",
    ]  # fmt: skip
    assert "s3cret-key" not in " ".join(argv)
    env = key_env({"api_key_file": str(key_file)}, offline=True)
    assert (env["OPENAI_API_KEY"], env["HF_DATASETS_OFFLINE"]) == ("s3cret-key", "1")
    assert "HF_DATASETS_OFFLINE" not in key_env({"api_key_file": str(key_file)}, offline=False)


def lm_eval_results(task: str, acc: float) -> dict:
    """What lm-eval writes for a task (the parts hpcft reads)."""
    values = {"alias": task, "sample_len": 10, "acc,none": acc, "acc_stderr,none": 0.1, "exact_match,flex": 0.5}
    return {"results": {task: values}, "lm_eval_version": "0.4.13"}


def test_a_finished_task_is_not_run_again(tmp_path):
    layout = RunLayout(tmp_path)
    out = layout.eval / "suites" / "fine_tuned" / "hpcft_mc" / "tiny-ft"
    out.mkdir(parents=True)
    (out / "results_2026-01-01T00-00-00.json").write_text(json.dumps(lm_eval_results("hpcft_mc", 0.3)))
    (out / "samples_hpcft_mc_2026-01-01T00-00-00.jsonl").write_text("")
    suites = Suites(SuiteJob(tasks=("hpcft_mc",), tokenizer="t"), layout, ENDPOINT)
    # no lm-eval is started: nothing here could answer it
    assert suites.run() == {"fine_tuned": {"hpcft_mc": lm_eval_results("hpcft_mc", 0.3)}}


def test_suite_scores_join_metrics_json_in_points_beside_the_base():
    results = {
        "fine_tuned": {"mc": lm_eval_results("mc", 0.4)},
        "base": {"mc": lm_eval_results("mc", 0.25)},
    }
    assert task_scores("mc", results["fine_tuned"]["mc"]) == {"mc/acc": 40.0, "mc/exact_match:flex": 50.0}
    record = {"rouge-l": 10.0, "base": {"rouge-l": 4.0}, "gain": {"rouge-l": 6.0}}
    out = joined(record, results, SuiteJob(tasks=("mc",), tokenizer="t", num_fewshot=0), {})
    assert out["mc/acc"] == 40.0 and out["base"] == {"rouge-l": 4.0, "mc/acc": 25.0, "mc/exact_match:flex": 50.0}
    assert out["gain"] == {"rouge-l": 6.0, "mc/acc": 15.0, "mc/exact_match:flex": 0.0}
    assert out["suites"] == {"tasks": ["mc"], "num_fewshot": 0, "limit": None, "model": "local-completions"}


PROBE = """
import json, sys
from hpcft.cli import main
code = main(sys.argv[2:] + ["dry_run=true", "run_root=" + sys.argv[1]])
import hpcft.submit, hpcft.jobs.entry
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_a_run_with_suites_is_submitted_without_importing_lm_eval(tmp_path):
    args = [sys.executable, "-c", PROBE, str(tmp_path), *GPU_LLM, *SUITES]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert sorted(m for m in result["modules"] if m.split(".")[0] in (*HEAVY, "lm_eval")) == []


def test_a_lora_sweep_with_suites_gets_a_server_per_point(tmp_path, capsys):
    """Their log-likelihood requests must not share a LoRA server's batches (hpcft.jobs.suites)."""
    from tests.test_shared_server import LORA_SWEEP, dry_sweep

    tiny = [*LORA_SWEEP[:3], "framework.lora_rank=4,8", *SUITES]
    dry_sweep(tmp_path, *tiny)
    assert "one job serving them all" not in capsys.readouterr().out


FAKE_LM_EVAL = """
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if os.environ.get("FAIL"):
    sys.exit(3)
out = Path(args[args.index("--output_path") + 1]) / "tiny-ft"
out.mkdir(parents=True)
seen = {"key": os.environ.get("OPENAI_API_KEY"), "cwd": os.getcwd(), "key_in_argv": any("k3y" in a for a in args)}
results = {"results": {"mc": {"acc,none": 0.5}}, "seen": seen}
(out / "results_2026-01-01T00-00-00.json").write_text(json.dumps(results))
(out / "samples_mc_2026-01-01T00-00-00.jsonl").write_text("")
"""


def fake_lm_eval(monkeypatch, tmp_path: Path) -> None:
    """lm-eval's command replaced by a script that writes what lm-eval writes (the subprocess
    boundary faked: the real one runs in tests/integration/test_suites.py)."""
    script = tmp_path / "fake_lm_eval.py"
    script.write_text(FAKE_LM_EVAL)
    real = lm_eval_argv
    monkeypatch.setattr("hpcft.jobs.suites.lm_eval_argv", lambda *a: [sys.executable, str(script), *real(*a)[2:]])


def test_each_task_runs_in_the_task_folder_with_the_key_in_its_environment(tmp_path, monkeypatch):
    fake_lm_eval(monkeypatch, tmp_path)
    (tmp_path / "key").write_text("k3y\n")
    endpoint = {**ENDPOINT, "api_key_file": str(tmp_path / "key")}
    job = SuiteJob(tasks=("mc",), tokenizer="t", include_path=str(TASKS))
    results = Suites(job, RunLayout(tmp_path / "run"), endpoint).run()
    assert results["fine_tuned"]["mc"]["seen"] == {"key": "k3y", "cwd": str(TASKS), "key_in_argv": False}


def test_a_failed_lm_eval_run_fails_the_suites_naming_the_task(tmp_path, monkeypatch):
    fake_lm_eval(monkeypatch, tmp_path)
    monkeypatch.setenv("FAIL", "1")
    (tmp_path / "key").write_text("k3y\n")
    endpoint = {**ENDPOINT, "api_key_file": str(tmp_path / "key")}
    suites = Suites(SuiteJob(tasks=("mc",), tokenizer="t"), RunLayout(tmp_path / "run"), endpoint)
    with pytest.raises(RuntimeError, match=r"suites: lm-eval exited with status 3 on mc \(fine_tuned\)"):
        suites.run()


def samples(task: str, hits: list[int]) -> str:
    """lm-eval's `--log_samples` lines (the fields hpcft reads): one per row, `acc` 1 or 0."""
    lines = [{"doc_id": i, "filter": "none", "metrics": ["acc"], "acc": float(h)} for i, h in enumerate(hits)]
    return "\n".join(json.dumps(line) for line in lines) + "\n"


def test_suite_gains_get_a_paired_interval_and_mcnemar_from_lm_eval_s_own_rows(tmp_path):
    layout = RunLayout(tmp_path)
    hits = {"fine_tuned": [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], "base": [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]}
    for label, row_hits in hits.items():
        out = layout.eval / "suites" / label / "mc" / "m"
        out.mkdir(parents=True)
        (out / "samples_mc_2026-01-01T00-00-00.jsonl").write_text(samples("mc", row_hits))
    results = {label: {"mc": lm_eval_results("mc", sum(h) / 10)} for label, h in hits.items()}
    record = {"ci95": {"rouge-l": [1.0, 2.0]}, "mcnemar_p": {"exact_match": 1.0}}
    out = joined(record, results, SuiteJob(tasks=("mc",), tokenizer="t"), suite_rows(layout, results))
    assert out["gain"]["mc/acc"] == pytest.approx(60.0)
    low, high = out["ci95"]["mc/acc"]
    assert 0 < low < 60 < high <= 100 and out["ci95"]["rouge-l"] == [1.0, 2.0]
    assert out["mcnemar_p"] == {"exact_match": 1.0, "mc/acc": pytest.approx(2 / 2**6)}  # 6 rows only one got
    assert "mc/exact_match:flex" not in out["ci95"]  # no rows logged for it: no interval
