"""Text-generation metrics as LLaMA-Factory computes them for `predict_*` results. The same
libraries and steps as `llamafactory.train.sft.metric.ComputeSimilarity`: ROUGE-1/2/L (F1) with
`rouge_chinese` over jieba-segmented words, and character BLEU-4 with NLTK's smoothing method 3
(NLTK's computation, restated for character strings: `bleu4`); each row rounded to 4 decimals
(x 100), then averaged: the metric is the mean of the per-row scores (`row_scores`), which the
eval keeps for `compare`. A test checks the numbers against LLaMA-Factory's own class on the
same predictions. Exact match is extra. The libraries are imported when scoring, so this module
stays importable on the login node.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from statistics import fmean
from typing import Any

ROUGE = ("rouge-1", "rouge-2", "rouge-l")


def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it prints its dictionary loading otherwise
    return jieba


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F1 (x 100, rounded to 4 decimals) of jieba words, 0 when either is empty."""
    from rouge_chinese import Rouge

    jieba = _jieba()
    hypothesis, ref = list(jieba.cut(prediction)), list(jieba.cut(reference))
    if not " ".join(hypothesis).split() or not " ".join(ref).split():
        return dict.fromkeys(ROUGE, 0.0)
    scores = Rouge().get_scores(" ".join(hypothesis), " ".join(ref))[0]
    return {key: round(scores[key]["f"] * 100, 4) for key in ROUGE}


def bleu4(prediction: str, reference: str) -> float:
    """Sentence BLEU-4 over characters with NLTK's smoothing method 3 (x 100, 4 decimals):
    NLTK's `sentence_bleu` step for step (clipped n-gram counts, method 3's halving of empty
    orders, the brevity penalty, the same float operations), with character n-grams as string
    slices, ~20x faster than NLTK's generic n-gram tuples and Fractions. A test checks equality
    with NLTK's own function."""
    precisions: list[float] = []
    halvings = 1  # method 3's `incvnt`
    for n in range(1, 5):
        counts = Counter(prediction[i : i + n] for i in range(len(prediction) - n + 1))
        reference_counts = Counter(reference[i : i + n] for i in range(len(reference) - n + 1))
        matched = sum(min(count, reference_counts[gram]) for gram, count in counts.items())
        total = max(1, sum(counts.values()))
        if n == 1 and matched == 0:
            return 0.0  # NLTK returns 0 before any smoothing
        if matched == 0:
            precisions.append(1 / (2**halvings * total))
            halvings += 1
        else:
            precisions.append(matched / total)
    hyp, ref = len(prediction), len(reference)
    penalty = 1.0 if hyp > ref else math.exp(1 - ref / hyp)
    score = penalty * math.exp(math.fsum(0.25 * math.log(p) for p in precisions))
    return round(score * 100, 4)


def exact_match(prediction: str, reference: str) -> float:
    return 100.0 if " ".join(prediction.split()) == " ".join(reference.split()) else 0.0


PARALLEL_FROM = 1000
"""Rows from which scoring is spread over the job's CPUs: ~10 ms a row of 100-word answers on
one thread (10k rows: ~100 s), against ~1-2 s for each worker process to start and load
jieba's dictionary."""


def row_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    workers: int | None = None,
    parallel_from: int = PARALLEL_FROM,
) -> dict[str, list[float]]:
    """Each row's ROUGE-1/2/L, BLEU-4 and exact match, in row order: what `score` averages
    (and what `compare` resamples, from `eval/row_scores.json`). From `parallel_from` rows,
    in `workers` processes (default: the CPUs the job was given), same numbers in the same order."""
    if len(predictions) != len(references) or not references:
        raise ValueError("need as many predictions as references, and at least one")
    pairs = list(zip(predictions, references, strict=True))
    workers = workers or len(os.sched_getaffinity(0))
    if workers < 2 or len(pairs) < parallel_from:
        return _scored(pairs)
    chunk = -(-len(pairs) // (workers * 4))  # a few chunks a worker: the slow ones even out
    # spawn, not fork: the eval job has threads (request pools, lm-eval's suites) a fork would copy mid-state.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_scored, [pairs[i : i + chunk] for i in range(0, len(pairs), chunk)]))
    return {key: [value for part in parts for value in part[key]] for key in parts[0]}


def _scored(pairs: Sequence[tuple[str, str]]) -> dict[str, list[float]]:
    rouge = [rouge_scores(p, r) for p, r in pairs]
    return {
        **{key: [row[key] for row in rouge] for key in ROUGE},
        "bleu-4": [bleu4(p, r) for p, r in pairs],
        "exact_match": [exact_match(p, r) for p, r in pairs],
    }


def mean_scores(per_row: dict[str, list[float]]) -> dict[str, float]:
    """Each metric's mean over the rows, plus the row count."""
    means = {key: fmean(values) for key, values in per_row.items()}
    return {**means, "rows": float(len(next(iter(per_row.values()))))}


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L, BLEU-4 and exact match over rows, plus the row count."""
    return mean_scores(row_scores(predictions, references))
