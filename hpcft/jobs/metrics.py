"""Text-generation metrics as LLaMA-Factory computes them for `predict_*` results. The same
libraries and steps as `llamafactory.train.sft.metric.ComputeSimilarity`: ROUGE-1/2/L (F1) of
jieba-segmented words as `rouge_chinese` computes them, and character BLEU-4 with NLTK's
smoothing method 3; each row rounded to 4 decimals (x 100), then averaged: the metric is the
mean of the per-row scores (`row_scores`), which the eval keeps for `compare`. Exact match is
extra.

Their computations are restated here, each text analysed once (`Text`): jieba's words, ROUGE's
n-gram sets and LCS, BLEU's character n-grams; ~10x faster than the libraries' generic code
(10k rows of 100-word answers: ~10 s on one thread instead of ~100 s). Tests check every
number against `rouge_chinese`, NLTK, jieba and LLaMA-Factory's own class. The libraries are
imported when scoring, so this module stays importable on the login node.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import operator
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import pairwise, repeat
from statistics import fmean

ROUGE = ("rouge-1", "rouge-2", "rouge-l")


class Words:
    """jieba's words of texts, as `jieba.cut` gives them, each block segmented once.

    `jieba.cut` splits a text at its own `re_han_default` pattern and segments each block on
    its own, so a block's words never depend on its neighbours: segmenting each distinct block
    once per scoring chunk (answers repeat words) gives the same words ~3x faster. A test
    checks them against `jieba.cut` on whole texts."""

    def __init__(self) -> None:
        import jieba

        jieba.setLogLevel(logging.WARNING)  # it prints its dictionary loading otherwise
        self.jieba, self.blocks = jieba, dict[str, list[str]]()

    def of(self, text: str) -> list[str]:
        words: list[str] = []
        for block in self.jieba.re_han_default.split(text):
            if block:
                if (known := self.blocks.get(block)) is None:
                    known = self.blocks[block] = list(self.jieba.cut(block))
                words += known
        return words


@dataclass(frozen=True)
class Text:
    """What scoring needs of one text, computed once (a reference is scored against every
    model's answer)."""

    text: str
    tokens: list[str]
    """ROUGE's words: jieba's words through `rouge_chinese`'s sentence cut; [] when blank."""
    unigrams: set[str]
    bigrams: set[tuple[str, str]]
    """ROUGE-1's and ROUGE-2's word n-gram sets (`rouge_score._get_word_ngrams`)."""
    chars: list[Counter[str]]
    """BLEU's character 1- to 4-gram counts."""

    @staticmethod
    def of(text: str, words: Words) -> Text:
        from rouge_chinese import Rouge

        joined = " ".join(words.of(text))
        tokens: list[str] = []
        if joined.split():  # `Rouge.get_scores` as LLaMA-Factory calls it, per sentence
            for sentence in Rouge().cut_sent(joined):
                if len(sentence) > 0:
                    tokens += " ".join(sentence.split()).split(" ")
        return Text(text, tokens, set(tokens), set(pairwise(tokens)), char_ngrams(text))

    @staticmethod
    def of_chars(text: str) -> Text:
        """What BLEU needs only."""
        return Text(text, [], set(), set(), char_ngrams(text))


def char_ngrams(text: str) -> list[Counter[str]]:
    """The counts of `text`'s character 1- to 4-grams, each order built from the one below by
    C-level string concatenation (`map`), not by Python-level slicing."""
    grams: list[str] = list(text)
    counts = [Counter(grams)]
    for n in range(1, 4):
        grams = list(map(operator.add, grams, text[n:]))
        counts.append(Counter(grams))
    return counts


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """The longest common subsequence's length, bit-parallel (Hyyro 2004): one big-integer
    step per word of `a` instead of rouge_chinese's len(a) x len(b) dictionary table (~40x
    faster on 100-word answers). A test checks it against rouge_chinese's `_len_lcs`."""
    where: dict[str, int] = {}
    for i, word in enumerate(b):
        where[word] = where.get(word, 0) | 1 << i
    full = (1 << len(b)) - 1
    row = full
    for word in a:
        matched = row & where.get(word, 0)
        row = ((row + matched) | (row - matched)) & full
    return len(b) - row.bit_count()


def f1(overlap: int, evaluated: int, reference: int) -> float:
    """`rouge_score.f_r_p_rouge_n`'s F1, its float operations in its order."""
    precision = overlap / evaluated if evaluated else 0.0
    recall = overlap / reference if reference else 0.0
    return 2.0 * ((precision * recall) / (precision + recall + 1e-8))


def rouge(prediction: Text, reference: Text) -> dict[str, float]:
    """ROUGE-1/2/L F1 (x 100, rounded to 4 decimals), 0 when either text is blank: ROUGE-N
    as `rouge_score.rouge_n`, ROUGE-L as `rouge_l_summary_level` (the LCS of all the words)."""
    hyp, ref = prediction.tokens, reference.tokens
    if not hyp or not ref:
        return dict.fromkeys(ROUGE, 0.0)
    one, two = prediction.unigrams, prediction.bigrams
    scores = [f1(len(one & reference.unigrams), len(one), len(reference.unigrams))]
    scores.append(f1(len(two & reference.bigrams), len(two), len(reference.bigrams)))
    scores.append(f1(lcs_length(ref, hyp), len(hyp), len(ref)))
    return {key: round(value * 100, 4) for key, value in zip(ROUGE, scores, strict=True)}


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L of two texts (see `rouge`)."""
    words = Words()
    return rouge(Text.of(prediction, words), Text.of(reference, words))


def bleu(prediction: Text, reference: Text) -> float:
    """Sentence BLEU-4 over characters with NLTK's smoothing method 3 (x 100, 4 decimals):
    NLTK's `sentence_bleu` step for step (clipped n-gram counts, method 3's halving of empty
    orders, the brevity penalty, the same float operations). A test checks equality with
    NLTK's own function."""
    precisions: list[float] = []
    halvings = 1  # method 3's `incvnt`
    for n, (counts, reference_counts) in enumerate(zip(prediction.chars, reference.chars, strict=True), 1):
        matched = sum(map(min, counts.values(), map(reference_counts.get, counts, repeat(0))))
        total = max(1, len(prediction.text) - n + 1)  # NLTK's max(1, sum(counts.values()))
        if n == 1 and matched == 0:
            return 0.0  # NLTK returns 0 before any smoothing
        if matched == 0:
            precisions.append(1 / (2**halvings * total))
            halvings += 1
        else:
            precisions.append(matched / total)
    hyp, ref = len(prediction.text), len(reference.text)
    penalty = 1.0 if hyp > ref else math.exp(1 - ref / hyp)
    score = penalty * math.exp(math.fsum(0.25 * math.log(p) for p in precisions))
    return round(score * 100, 4)


def bleu4(prediction: str, reference: str) -> float:
    """BLEU-4 of two texts (see `bleu`)."""
    return bleu(Text.of_chars(prediction), Text.of_chars(reference))


def exact_match(prediction: str, reference: str) -> float:
    return 100.0 if " ".join(prediction.split()) == " ".join(reference.split()) else 0.0


PARALLEL_FROM = 1000
"""Rows from which scoring is spread over the job's CPUs: ~0.5 ms a row of 100-word answers
on one thread, against ~1-2 s for each worker process to start and load jieba's dictionary."""

Pairs = Sequence[tuple[str, str]]


def row_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    workers: int | None = None,
    parallel_from: int = PARALLEL_FROM,
) -> dict[str, list[float]]:
    """Each row's ROUGE-1/2/L, BLEU-4 and exact match, in row order: what `score` averages
    (and what `compare` resamples, from `eval/row_scores.json`). From `parallel_from` rows,
    in `workers` processes (default: the CPUs the job was given), same numbers in the same order."""
    return row_scores_of([(predictions, references)], workers, parallel_from)[0]


def row_scores_of(
    models: Sequence[tuple[Sequence[str], Sequence[str]]],
    workers: int | None = None,
    parallel_from: int = PARALLEL_FROM,
) -> list[dict[str, list[float]]]:
    """`row_scores` of several models' (predictions, references) at once: one pool of workers,
    and each reference analysed once for all the models that answered it."""
    if any(len(p) != len(r) or not r for p, r in models):
        raise ValueError("need as many predictions as references, and at least one")
    pairs = [
        (p, r, m)
        for m, (predictions, references) in enumerate(models)
        for p, r in zip(predictions, references, strict=True)
    ]
    order = sorted(range(len(pairs)), key=lambda i: pairs[i][1])  # one reference's rows side by side
    scored = _scored_apart([pairs[i][:2] for i in order], workers or len(os.sched_getaffinity(0)), parallel_from)
    rows: list[dict[str, float]] = [{}] * len(pairs)
    for position, i in enumerate(order):
        rows[i] = scored[position]
    per_model: list[dict[str, list[float]]] = [{} for _ in models]
    for (_, _, m), row in zip(pairs, rows, strict=True):
        for key, value in row.items():
            per_model[m].setdefault(key, []).append(value)
    return per_model


def _scored_apart(pairs: Pairs, workers: int, parallel_from: int) -> list[dict[str, float]]:
    if workers < 2 or len(pairs) < parallel_from:
        return _scored(pairs)
    chunk = -(-len(pairs) // (workers * 4))  # a few chunks a worker: the slow ones even out
    # spawn, not fork: the eval job has threads (request pools, lm-eval's suites) a fork would copy mid-state.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = pool.map(_scored, [pairs[i : i + chunk] for i in range(0, len(pairs), chunk)])
        return [row for part in parts for row in part]


def _scored(pairs: Pairs) -> list[dict[str, float]]:
    words, reference, rows = Words(), None, []
    for prediction, reference_text in pairs:
        if reference is None or reference.text != reference_text:
            reference = Text.of(reference_text, words)
        answer = Text.of(prediction, words)
        rows.append({**rouge(answer, reference), "bleu-4": bleu(answer, reference)})
        rows[-1]["exact_match"] = exact_match(prediction, reference_text)
    return rows


def mean_scores(per_row: dict[str, list[float]]) -> dict[str, float]:
    """Each metric's mean over the rows, plus the row count."""
    means = {key: fmean(values) for key, values in per_row.items()}
    return {**means, "rows": float(len(next(iter(per_row.values()))))}


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L, BLEU-4 and exact match over rows, plus the row count."""
    return mean_scores(row_scores(predictions, references))
