"""Text-generation metrics, dependency-free: BLEU-4, ROUGE-L (F1) and exact match.

Tokens are words, with each CJK character its own token (as jieba-less LLaMA-Factory users
would expect for Chinese). Scores are in [0, 100], averaged over rows.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_TOKEN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]|[^\s\u4e00-\u9fff\u3400-\u4dbf]+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu4(prediction: str, reference: str) -> float:
    """Sentence BLEU-4 with add-one smoothing of the higher orders (Lin & Och 2004)."""
    hyp, ref = tokenize(prediction), tokenize(reference)
    if not hyp or not ref:
        return 100.0 if hyp == ref else 0.0
    log_precision = 0.0
    for n in range(1, 5):
        overlap = sum((_ngrams(hyp, n) & _ngrams(ref, n)).values())
        total = max(len(hyp) - n + 1, 0)
        if n == 1:
            if overlap == 0:
                return 0.0
            p = overlap / total
        else:
            p = (overlap + 1) / (total + 1)
        log_precision += math.log(p) / 4
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return 100.0 * brevity * math.exp(log_precision)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    hyp, ref = tokenize(prediction), tokenize(reference)
    if not hyp or not ref:
        return 100.0 if hyp == ref else 0.0
    lcs = _lcs(hyp, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 100.0 * 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return 100.0 if " ".join(prediction.split()) == " ".join(reference.split()) else 0.0


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean BLEU-4, ROUGE-L and exact match over rows, plus the row count."""
    if len(predictions) != len(references) or not references:
        raise ValueError("need as many predictions as references, and at least one")
    n = len(references)
    pairs = list(zip(predictions, references, strict=True))
    return {
        "bleu-4": sum(bleu4(p, r) for p, r in pairs) / n,
        "rouge-l": sum(rouge_l(p, r) for p, r in pairs) / n,
        "exact_match": sum(exact_match(p, r) for p, r in pairs) / n,
        "rows": float(n),
    }
