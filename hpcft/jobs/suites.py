"""Standard LLM suites through the run's endpoint: lm-evaluation-harness, run by the eval job.

Each (model, task) is one `python -m lm_eval run --model local-completions ...` against the
deployed server (`/v1/completions`, which vLLM serves with `echo` and `logprobs`, so
multiple-choice tasks are scored by log-likelihood), with the run's key in `OPENAI_API_KEY`
(never on the command line). lm-eval writes its own results file under
`<run>/eval/suites/<fine_tuned|base>/<task>/`; a task that has one is not run again, so a
requeued or rerun eval goes on with the tasks not finished. The scores are lm-eval's own,
collected in `<run>/eval/suites.json` as lm-eval reported them, and joined to `metrics.json`
as `<task>/<metric>` in points (x 100), the base's under `base` and the change under `gain`.

The suites run after the in-domain eval, whose `metrics.json` is written first, so they do
not hold it back; the eval job releases the server when both are done. They are not sent
beside it: vLLM (0.32, measured on CPU) kills its engine when it computes prompt
log-probabilities for a batch of requests on a server with LoRA enabled
(vllm-project/vllm#16668), so lm-eval sends one request at a time there
(`SuiteJob.concurrency`) and nothing else may share its batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import fmean
from typing import Any

from hpcft.jobs.spec import SuiteJob
from hpcft.paired import deltas
from hpcft.rowscores import BASE, FINE_TUNED
from hpcft.rundir import RunLayout, write_json_atomic

MODEL = "local-completions"
"""lm-eval's OpenAI-compatible completions model."""


def model_args(job: SuiteJob, side: dict[str, Any]) -> str:
    """lm-eval's `--model_args` for one served model (`side`: endpoint.json's entry for it).
    No key in it: lm-eval reads `OPENAI_API_KEY`."""
    args = {
        "base_url": side["base_url"].rstrip("/") + "/completions",
        "model": side["model"],
        "tokenizer": job.tokenizer,
        "tokenizer_backend": "huggingface",
        "num_concurrent": job.concurrency,
        "max_retries": job.retries,
        "timeout": job.request_timeout_s,
    }
    if job.max_length:
        args["max_length"] = job.max_length
    return ",".join(f"{k}={v}" for k, v in args.items())


def lm_eval_argv(job: SuiteJob, side: dict[str, Any], task: str, out: Path) -> list[str]:
    """The command lm-eval is run with for one task: the same a user types by hand."""
    argv = [sys.executable, "-m", "lm_eval", "run", "--model", MODEL, "--model_args", model_args(job, side)]
    argv += ["--tasks", task, "--output_path", str(out), "--log_samples"]
    if job.num_fewshot is not None:
        argv += ["--num_fewshot", str(job.num_fewshot)]
    if job.limit is not None:
        argv += ["--limit", str(job.limit)]
    if job.include_path:
        argv += ["--include_path", job.include_path]
    return argv


def finished(out: Path) -> dict[str, Any] | None:
    """lm-eval's results file for a task already run (the newest), or None. lm-eval writes
    the per-row samples after it: a run stopped between the two is not finished."""
    found = sorted(out.glob("**/results_*.json"), key=lambda p: p.stat().st_mtime)
    if not found or not any(out.glob("**/samples_*.jsonl")):
        return None
    results: dict[str, Any] = json.loads(found[-1].read_text())
    return results


def key_env(side: dict[str, Any], offline: bool) -> dict[str, str]:
    """lm-eval's environment: the run's key where its OpenAI-compatible models read it, and
    the HF libraries offline where compute nodes are (task data from files or the cache)."""
    key = Path(side["api_key_file"]).read_text().strip()
    hf = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"} if offline else {}
    return {**os.environ, **hf, "OPENAI_API_KEY": key}


class Suites:
    """Every suite for the fine-tuned model and its base, one lm-eval run at a time."""

    def __init__(self, job: SuiteJob, layout: RunLayout, endpoint: dict[str, Any]) -> None:
        self.job, self.layout, self.endpoint = job, layout, endpoint

    def sides(self) -> dict[str, dict[str, Any]]:
        sides = {FINE_TUNED: self.endpoint}
        if baseline := self.endpoint.get("baseline"):
            sides[BASE] = baseline
        return sides

    def run(self) -> dict[str, dict[str, Any]]:
        """lm-eval's results per model and task."""
        return {
            label: {task: self.task_results(label, side, task) for task in self.job.tasks}
            for label, side in self.sides().items()
        }

    def task_results(self, label: str, side: dict[str, Any], task: str) -> dict[str, Any]:
        """lm-eval's results for one task and model: from an earlier attempt, else run now.
        An eval that ends meanwhile (a requeue, a failure) ends the lm-eval run too."""
        out = self.layout.eval / "suites" / label / task
        if (done := finished(out)) is not None:
            print(f"eval: suite {task} ({label}): finished in an earlier attempt", flush=True)
            return done
        argv = lm_eval_argv(self.job, side, task, out)
        print(f"eval: suite {task} ({label}): {' '.join(argv[1:])}", flush=True)
        process = subprocess.Popen(argv, cwd=self.job.include_path, env=key_env(side, self.job.offline))
        try:
            code = process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait()
        if code != 0:
            raise RuntimeError(f"suites: lm-eval exited with status {code} on {task} ({label}); see the eval log")
        if (done := finished(out)) is None:
            raise RuntimeError(f"suites: lm-eval wrote no results for {task} in {out}")
        return done


def score_name(task: str, key: str) -> str:
    """lm-eval's `<metric>,<filter>` as hpcft names it: `<task>/<metric>`, with `:<filter>`
    for a filter other than `none`."""
    metric, _, filt = key.partition(",")
    return f"{task}/{metric}" + ("" if filt == "none" else f":{filt}")


def task_values(task: str, results: dict[str, Any]) -> dict[str, float]:
    """A task's scores as lm-eval reported them (`acc,none`: 0..1); standard errors left out."""
    values = results.get("results", {}).get(task) or results.get("groups", {}).get(task) or {}
    return {
        key: float(value)
        for key, value in values.items()
        if "," in key and not key.partition(",")[0].endswith("_stderr")
        and isinstance(value, int | float) and not isinstance(value, bool)
    }  # fmt: skip


def task_scores(task: str, results: dict[str, Any]) -> dict[str, float]:
    """A task's scores in points, named by `score_name`."""
    return {score_name(task, key): 100.0 * value for key, value in task_values(task, results).items()}


Rows = dict[str, dict[str, float]]
"""One model's per-row scores of one task: lm-eval's `<metric>,<filter>` -> row -> score."""


def task_rows(out: Path) -> Rows:
    """The per-row scores lm-eval logged for a task (`--log_samples`; a group's rows are its
    subtasks'), the newest file of each subtask winning."""
    rows: Rows = {}
    for path in sorted(out.glob("**/samples_*.jsonl"), key=lambda p: p.stat().st_mtime):
        subtask = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            for metric in sample.get("metrics", []):
                if isinstance(value := sample.get(metric), int | float):
                    rows.setdefault(f"{metric},{sample['filter']}", {})[f"{subtask}:{sample['doc_id']}"] = float(value)
    return rows


def suite_rows(layout: RunLayout, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Rows]]:
    """Each model's per-row scores per task, from the runs' sample files."""
    return {
        label: {task: task_rows(layout.eval / "suites" / label / task) for task in tasks}
        for label, tasks in results.items()
    }


def suite_confidence(results: dict[str, dict[str, Any]], rows: dict[str, dict[str, Rows]]) -> dict[str, Any]:
    """`ci95` (and `mcnemar_p` for right-or-wrong metrics) of fine-tuned − base per suite
    metric, as for the eval set (hpcft.paired), where both were scored on the same rows and
    the metric is the mean of its rows (lm-eval's score reproduced from them)."""
    ci: dict[str, list[float]] = {}
    p: dict[str, float] = {}
    for task, result in results.get(FINE_TUNED, {}).items():
        for key, score in task_values(task, result).items():
            tuned = rows.get(FINE_TUNED, {}).get(task, {}).get(key, {})
            base = rows.get(BASE, {}).get(task, {}).get(key, {})
            if not tuned or sorted(tuned) != sorted(base) or abs(fmean(tuned.values()) - score) > 1e-9:
                continue
            ids, name = sorted(tuned), score_name(task, key)
            (d,) = deltas({name: [100 * base[i] for i in ids]}, {name: [100 * tuned[i] for i in ids]})
            ci[name] = [d.low, d.high]
            if d.mcnemar_p is not None:
                p[name] = d.mcnemar_p
    return {"ci95": ci, "mcnemar_p": p}


def joined(
    record: dict[str, Any], results: dict[str, dict[str, Any]], job: SuiteJob, rows: dict[str, dict[str, Rows]]
) -> dict[str, Any]:
    """`record` (metrics.json) with the suites' scores: the fine-tuned model's at the top level,
    the base's under `base`, their difference under `gain` with its 95 % interval in `ci95`
    (McNemar's p in `mcnemar_p`), and the settings under `suites`."""
    tuned = {k: v for task, r in results.get(FINE_TUNED, {}).items() for k, v in task_scores(task, r).items()}
    out = {**record, **tuned}
    if BASE in results:
        base = {k: v for task, r in results[BASE].items() for k, v in task_scores(task, r).items()}
        out["base"] = {**record.get("base", {}), **base}
        out["gain"] = {**record.get("gain", {}), **{k: tuned[k] - base[k] for k in tuned if k in base}}
        for key, found in suite_confidence(results, rows).items():
            out[key] = {**record.get(key, {}), **found}
    settings = {"tasks": list(job.tasks), "num_fewshot": job.num_fewshot, "limit": job.limit, "model": MODEL}
    return {**out, "suites": settings}


def write_suites(layout: RunLayout, results: dict[str, dict[str, Any]]) -> None:
    """`eval/suites.json`: each model's lm-eval results per task, as lm-eval reported them."""
    write_json_atomic(layout.eval / "suites.json", {side: tasks for side, tasks in results.items()})
