from __future__ import annotations

import math

import pytest

from hpcft.jobs.metrics import bleu4, exact_match, rouge_l, score, tokenize


def test_identical_text_scores_100():
    assert bleu4("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
    assert rouge_l("the cat sat", "the cat sat") == pytest.approx(100.0)
    assert exact_match(" the  cat ", "the cat") == 100.0


def test_unrelated_text_scores_0():
    assert bleu4("dog", "the cat sat") == 0.0
    assert rouge_l("dog", "the cat sat") == 0.0


def test_partial_overlap_is_between():
    b = bleu4("the cat sat on a mat", "the cat sat on the mat")
    r = rouge_l("the cat sat on a mat", "the cat sat on the mat")
    assert 0 < b < 100 and 0 < r < 100
    assert r == pytest.approx(100 * 5 / 6)


def test_cjk_characters_are_tokens():
    assert tokenize("我爱 cats") == ["我", "爱", "cats"]
    assert rouge_l("我爱你", "我爱他") == pytest.approx(100 * 2 / 3)


def test_score_averages_rows():
    m = score(["a b", "x"], ["a b", "y"])
    assert m["exact_match"] == 50.0 and m["rows"] == 2.0
    assert all(math.isfinite(v) for v in m.values())
    with pytest.raises(ValueError):
        score([], [])
