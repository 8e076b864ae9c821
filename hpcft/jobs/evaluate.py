"""The eval stage: send every eval row through the deployed endpoint, score the answers.

Waits for `<run>/deploy/endpoint.json`. Rows go out `eval.concurrency` at a time (a batching
engine answers many at once), each retried on transient failures; every answer is appended
to `<run>/eval/predictions.jsonl` as it arrives, so an eval that is requeued, timed out or
rerun resumes where it stopped and sends no answered row again. Then `<run>/eval/metrics.json`
(LLaMA-Factory's `predict_*` metrics, and the generation settings; beside the base model's:
the gain, its 95 % paired bootstrap interval `ci95`, McNemar's `mcnemar_p` for exact match)
and `<run>/eval/row_scores.json` (each row's scores, whose means the metrics are:
`hpcft.rowscores`, read by `compare`). With `eval.checkpoints`, each saved checkpoint the
server publishes is asked and scored too, and the best step picked (hpcft.jobs.checkpoint_eval).

Scoring needs no server: once every answer is in (both models, and the suites), the eval
records it (`eval/answered.json`) and writes `<run>/deploy/stop`, so the deploy job's GPUs
are released before the scoring, which spreads over the job's CPUs (hpcft.jobs.metrics); a
requeued eval that finds the record scores without a server. The eval also releases the
server when it has really ended otherwise (failed, its requeues spent); never when it stops
to be requeued (time limit, preemption: see
`hpcft.jobs.requeue`), so the requeued eval finds its server still up and goes on. On a requeue
the rows in flight are let finish and kept, the rows not sent yet are dropped: none is asked
twice. An eval that cannot say stop (cancelled, killed, its disk full) is noticed by the
deploy job, which watches it leave the queue (`hpcft.jobs.evalwatch`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcft.checkpoints import best_summary
from hpcft.client import EndpointClient, HTTPStatusError
from hpcft.data import read_rows
from hpcft.jobs.answers import REFUSED_ROW, Answers, answered, final_answers
from hpcft.jobs.checkpoint_eval import checkpoint_predictions, scored_checkpoints, served_points
from hpcft.jobs.conversation import Message, chat_request
from hpcft.jobs.evalwatch import DeployWatch
from hpcft.jobs.metrics import mean_scores, row_scores_of
from hpcft.jobs.requeue import is_requeue
from hpcft.jobs.spec import EvalJob, SuiteJob
from hpcft.jobs.suites import Suites, joined, suite_rows, write_suites
from hpcft.keyguard import HEALTH_PATH
from hpcft.paired import gain_confidence
from hpcft.rowscores import BASE, FINE_TUNED, ModelScores, digest, row_scores_path, write_row_scores
from hpcft.rundir import RunLayout, read_json, write_atomic, write_json_atomic


def published(layout: RunLayout) -> dict[str, Any] | None:
    """The endpoint a server serves now: None before one is published, after it stopped (an
    earlier attempt's, before the deploy job's next attempt replaces it), and while its server
    does not answer its health route (a server that died with a full disk could not mark its
    endpoint stopped: a requeued eval would otherwise ask a dead address)."""
    try:
        endpoint: dict[str, Any] = read_json(layout.endpoint)
    except (FileNotFoundError, ValueError):
        return None
    return None if endpoint.get("stopped") or not healthy(endpoint) else endpoint


def healthy(endpoint: dict[str, Any]) -> bool:
    root = str(endpoint.get("base_url", "")).rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(root + HEALTH_PATH, timeout=10) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError):
        return False


def wait_endpoint(layout: RunLayout, timeout_s: int) -> dict[str, Any]:
    """The endpoint once published; an error as soon as the deploy job failed (in this eval's
    attempt: a marker older than it is a requeued deploy's earlier attempt, which the deploy
    clears when it starts again) or left the queue."""
    deadline, deploy, started = time.monotonic() + timeout_s, DeployWatch(layout), time.time()
    while (endpoint := published(layout)) is None:
        if failed_since(layout.deploy_failed, started):
            raise RuntimeError(f"the deploy job failed: {layout.deploy_failed.read_text().strip()}")
        if job_id := deploy.left():
            raise RuntimeError(f"the deploy job {job_id} left the queue without publishing an endpoint")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no endpoint in {layout.endpoint} after {timeout_s} s")
        time.sleep(2)
    return endpoint


def failed_since(marker: Path, started: float) -> bool:
    try:
        return marker.stat().st_mtime >= started - 2  # a clock tick's slack
    except OSError:
        return False


def answer_all(
    job: EvalJob, rows: list[dict[str, Any]], client: EndpointClient, answers: Answers
) -> list[dict[str, Any]]:
    """Every eval row not answered yet through the client's model, `job.concurrency` at a time."""
    todo = [(i, *chat_request(row, job.conversation)) for i, row in enumerate(rows) if i not in answers.done]
    done, flight = len(rows) - len(todo), job.concurrency
    print(f"eval: {client.model}: {len(rows)} rows, {done} already answered, {flight} in flight", flush=True)
    pool = ThreadPoolExecutor(max_workers=job.concurrency)
    try:  # each answer is kept by the thread that got it, so an interruption loses none in flight
        for _ in pool.map(lambda item: answers.add(ask(client, item, job.max_new_tokens)), todo):
            pass
    finally:  # a failure or a requeue (SystemExit): the rows in flight finish, the rest are not sent
        pool.shutdown(wait=True, cancel_futures=True)
    return answers.finish()


def ask(client: EndpointClient, item: tuple[int, list[Message], str], max_tokens: int) -> dict[str, Any]:
    """One row's record (`prompt`: the last user message): the model's answer, or why the
    server refused the row."""
    index, messages, label = item
    record: dict[str, Any] = {"index": index, "prompt": messages[-1]["content"], "label": label}
    try:
        return {**record, "predict": client.complete(messages, max_tokens=max_tokens)}
    except HTTPStatusError as e:
        if e.status not in REFUSED_ROW:
            raise
        return {**record, "refused": str(e)}


def scored(kept: dict[str, tuple[list[dict[str, Any]], int]], models: dict[str, str]) -> dict[str, ModelScores]:
    """Each model's per-row scores of its kept records (`kept`: records, rows refused), all
    scored in one pool of the job's CPUs; `models`: the served names."""
    answers = [([r["predict"] for r in records], [r["label"] for r in records]) for records, _ in kept.values()]
    per_model = row_scores_of(answers)
    return {
        name: ModelScores(models[name], [int(r["index"]) for r in records], per_row)
        for (name, (records, _)), per_row in zip(kept.items(), per_model, strict=True)
    }


def metrics_of(scores: ModelScores, refused: int) -> dict[str, float]:
    """The means of a model's row scores, and how many rows the server refused (where any)."""
    metrics = mean_scores(scores.scores)
    return {**metrics, "refused": float(refused)} if refused else metrics


def kept_answers(path: Path, total: int, max_refused_fraction: float) -> tuple[list[dict[str, Any]], int]:
    """The records the server answered, and how many rows it refused."""
    records = final_answers(path, total)
    kept = answered(records, max_refused_fraction)
    return kept, len(records) - len(kept)


@dataclass(frozen=True, kw_only=True)
class Answered:
    """What the server was needed for, all in (`eval/answered.json`): the scoring that follows
    needs no server, so the deploy job's GPUs are released before it starts, and a requeued
    eval that finds this record scores without waiting for a server that is gone."""

    model: str
    """The fine-tuned model's served name (answers in `predictions.jsonl`)."""
    base_model: str | None
    """The base model's served name (answers in `predictions_base.jsonl`); None: not served."""
    suites: bool
    """Whether the suites ran too (their results in `eval/suites.json`)."""
    checkpoints: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The saved checkpoints asked too (`eval.checkpoints`): `{step, model, path}` each."""

    @staticmethod
    def read(layout: RunLayout) -> Answered | None:
        try:
            return Answered(**read_json(layout.eval / "answered.json"))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def write(self, layout: RunLayout) -> None:
        write_json_atomic(layout.eval / "answered.json", dataclasses.asdict(self))


def client_settings(job: EvalJob) -> tuple[float, int, float]:
    """A client's timeout, retries and first pause between retries."""
    return job.request_timeout_s, job.retries, job.retry_backoff_s


def ask_everything(job: EvalJob, layout: RunLayout, endpoint: dict[str, Any]) -> Answered:
    """Every eval row through the fine-tuned model and, when the deploy job serves it too, the
    base model (each resuming past answers), and each saved checkpoint it publishes
    (`eval.checkpoints`); then the suites; recorded once all are in."""
    rows = [r.row for r in read_rows(job.evalset)]
    client = EndpointClient.from_endpoint(endpoint, *client_settings(job))
    answer_all(job, rows, client, Answers(layout.predictions, len(rows), layout.eval / "progress.json"))
    if baseline := endpoint.get("baseline"):
        base_client = EndpointClient.from_endpoint(baseline, *client_settings(job))
        base_answers = Answers(layout.eval / "predictions_base.jsonl", len(rows), layout.eval / "progress.json")
        answer_all(job, rows, base_client, base_answers)
    points = served_points(job, endpoint)
    for point in points:  # each checkpoint's adapter, on the same server
        point_client = EndpointClient.from_endpoint({**endpoint, "model": point["model"]}, *client_settings(job))
        progress = layout.eval / "progress.json"
        answer_all(job, rows, point_client, Answers(checkpoint_predictions(layout, point["step"]), len(rows), progress))
    if job.suites:  # after the in-domain answers (hpcft.jobs.suites says why not beside them)
        write_suites(layout, Suites(job.suites, layout, endpoint).run())
    answered = Answered(
        model=endpoint["model"],
        base_model=baseline["model"] if baseline else None,
        suites=bool(job.suites),
        checkpoints=points,
    )
    answered.write(layout)
    return answered


def score_generation(job: EvalJob, layout: RunLayout, answered: Answered) -> dict[str, float]:
    """The metrics of the kept answers, the gain over the base and its 95 % interval; each
    row's scores in `eval/row_scores.json`. Both models scored together in the job's CPUs
    (hpcft.jobs.metrics: each reference analysed once)."""
    rows = [r.row for r in read_rows(job.evalset)]
    print(f"eval: scoring {len(rows)} rows per model", flush=True)
    served = {FINE_TUNED: (layout.predictions, answered.model)}
    if answered.base_model:
        served[BASE] = (layout.eval / "predictions_base.jsonl", answered.base_model)
    kept = {name: kept_answers(path, len(rows), job.max_refused_fraction) for name, (path, _) in served.items()}
    models = scored(kept, {name: model for name, (_, model) in served.items()})
    metrics = metrics_of(models[FINE_TUNED], kept[FINE_TUNED][1])
    settings = {"temperature": 0.0, "max_tokens": job.max_new_tokens, "chat_template": job.chat_template}
    record: dict[str, Any] = {**metrics, "model": answered.model, "evalset": job.evalset, "generation": settings}
    if answered.base_model:
        base = metrics_of(models[BASE], kept[BASE][1])
        record.update(base=base, gain={k: metrics[k] - base[k] for k in metrics if k in base})
        record.update(gain_confidence(models[BASE], models[FINE_TUNED]))
    record.update(scored_checkpoints(job, layout, answered.checkpoints, answered.model, metrics, len(rows)))
    write_row_scores(row_scores_path(layout.root), job.evalset, digest(rows), len(rows), models)
    write_json_atomic(layout.metrics, record)
    return metrics


def log_to_wandb(metrics: dict[str, float], env: dict[str, str]) -> None:
    """Log the eval metrics as the pipeline's `eval` run, when W&B is enabled."""
    if env.get("WANDB_MODE", "disabled") == "disabled":
        return
    os.environ.update(env)
    import wandb  # only inside the job, and only when enabled

    run = wandb.init()
    run.summary.update({f"eval/{key}": value for key, value in metrics.items()})
    run.finish()


def evaluate(job: EvalJob, layout: RunLayout) -> str:
    """The eval against the published endpoint; its one-line summary. A generation eval
    releases the server once every answer is in, before it scores them."""
    return evaluate_generation(job, layout) if job.task == "generation" else evaluate_ranking(job, layout)


def evaluate_ranking(job: EvalJob, layout: RunLayout) -> str:
    """Embedders and rerankers: the eval set and the general sets through the served models,
    or the models loaded here (`eval.encode=local`: no server is waited for)."""
    from hpcft.jobs.general import with_general
    from hpcft.jobs.local_encode import local_models
    from hpcft.jobs.retrieval import evaluate_retrieval, served_models

    if job.local is not None:
        models = local_models(job.local, job.task)
    else:
        models = served_models(wait_endpoint(layout, job.endpoint_timeout_s), job)
    results = with_general(evaluate_retrieval(models, job, row_scores_path(layout.root)), models, job)
    write_json_atomic(layout.metrics, {**results, "model": models[FINE_TUNED][0], "evalset": job.evalset})
    log_to_wandb({f"{k}": v for k, v in results["fine_tuned"].items()}, job.env)
    regressed = f"; regressed on {results['regressed']}" if results.get("regressed") else ""
    return f"eval: {json.dumps(results['fine_tuned'])}{regressed}"


def evaluate_generation(job: EvalJob, layout: RunLayout) -> str:
    """Ask (resuming), release the server, then score. A server up (a rerun after a longer
    deploy.max_model_len) is asked for what is missing; once every answer is in and the
    server has gone (a requeue during scoring), the answers on disk are scored."""
    answered, endpoint = Answered.read(layout), published(layout)
    if answered is None or endpoint is not None:
        answered = ask_everything(job, layout, endpoint or wait_endpoint(layout, job.endpoint_timeout_s))
    release_server(layout, "every answer is in")  # scoring needs no server: its GPUs go back now
    metrics = score_generation(job, layout, answered)
    if job.suites:
        metrics = with_suites(read_json(layout.eval / "suites.json"), job.suites, layout, metrics)
    log_to_wandb(metrics, job.env)
    best = best_summary(read_json(layout.metrics)) if job.checkpoints else ""
    return f"eval: {json.dumps(metrics)}" + (f"; {best}" if best else "")


def with_suites(
    results: dict[str, dict[str, Any]], job: SuiteJob, layout: RunLayout, metrics: dict[str, float]
) -> dict[str, float]:
    """The suites' results in `eval/suites.json` and joined to `metrics.json`; the fine-tuned
    model's metrics with its suite scores."""
    write_suites(layout, results)
    record = joined(read_json(layout.metrics), results, job, suite_rows(layout, results))
    write_json_atomic(layout.metrics, record)
    return {**metrics, **{k: v for k, v in record.items() if "/" in k and isinstance(v, float)}}


def release_server(layout: RunLayout, why: str) -> None:
    """Tell the deploy job to stop serving. A marker that cannot be written (a full disk) is
    said, not raised: it would hide why the eval ended, and the deploy job sees the eval
    leave the queue anyway."""
    try:
        write_atomic(layout.stop_serving, why + "\n")
    except OSError as e:
        why = f"could not write {layout.stop_serving} ({e.strerror})"
        print(f"eval: {why}; the deploy job stops its server when it sees this job leave the queue", flush=True)


def run_eval(job: EvalJob) -> str:
    layout = RunLayout(Path(job.run_dir))
    if job.local is not None:  # no server to release: a kept one (deploy.keep_serving) serves on
        return evaluate(job, layout)
    try:
        summary = evaluate(job, layout)
    except BaseException as e:
        if is_requeue(e):
            print("eval: requeued; the server keeps serving for the next attempt", flush=True)
        else:
            release_server(layout, f"eval ended: {type(e).__name__}")
        raise
    release_server(layout, "eval done")
    return summary
