"""The LLM eval metrics are LLaMA-Factory's: on the same predictions, hpcft's numbers equal
those of LLaMA-Factory's own `ComputeSimilarity` (what `do_predict` reports as `predict_*`)."""

from __future__ import annotations

import importlib.util

import pytest

from hpcft.jobs.metrics import Words, bleu4, exact_match, lcs_length, rouge_scores, row_scores, row_scores_of, score

needs_llamafactory = pytest.mark.skipif(
    importlib.util.find_spec("llamafactory") is None, reason="the training extra is not installed"
)

# (prediction, reference): English and Chinese, exact, partial, empty and unrelated answers.
FIXED = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("The cat sat on a mat", "The cat is sitting on the mat."),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("", "Something was expected here."),
    ("dogs bark loudly", "quantum chromodynamics"),
    ("我爱北京天安门", "我爱北京天安门"),
    ("今天天气很好，我们去公园散步吧。", "今天天气不错，我们去公园走走。"),
    ("机器学习是人工智能的一个分支", "深度学习属于机器学习的范畴"),
    ("It costs 42 元 in total.", "总共是 42 元。"),
]


@needs_llamafactory
def test_metrics_equal_llamafactorys_on_the_same_predictions():
    import numpy as np
    from llamafactory.train.sft.metric import ComputeSimilarity
    from transformers import EvalPrediction

    class Texts:  # a tokenizer whose token i decodes to the i-th text
        pad_token_id = 0

        def __init__(self, texts: list[str]) -> None:
            self.texts = texts

        def batch_decode(self, ids, skip_special_tokens=True):  # type: ignore[no-untyped-def]
            return [self.texts[row[0] - 1] for row in ids]

    predictions, references = [p for p, _ in FIXED], [r for _, r in FIXED]
    ids = np.arange(1, len(FIXED) + 1).reshape(-1, 1)
    decoded = Texts(predictions + references)
    theirs = ComputeSimilarity(tokenizer=decoded)(EvalPrediction(predictions=ids, label_ids=ids + len(FIXED)))
    mine = score(predictions, references)
    assert set(theirs) == {"rouge-1", "rouge-2", "rouge-l", "bleu-4"}
    for key, value in theirs.items():
        assert mine[key] == pytest.approx(value, abs=1e-9), key


def test_identical_text_scores_100_and_unrelated_0():
    assert bleu4("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
    assert rouge_scores("the cat sat", "the cat sat")["rouge-l"] == pytest.approx(100.0)
    assert rouge_scores("dog", "the cat sat") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    assert exact_match(" the  cat ", "the cat") == 100.0


def test_chinese_is_scored_by_words():
    partial = rouge_scores("今天天气很好", "今天天气不错")
    assert 0 < partial["rouge-1"] < 100


def test_score_averages_rows():
    m = score(["a b", "x"], ["a b", "y"])
    assert m["exact_match"] == 50.0 and m["rows"] == 2.0
    with pytest.raises(ValueError):
        score([], [])


def test_scoring_in_worker_processes_gives_the_same_numbers_in_the_same_order():
    references = [f"the answer number {i} is {'blue' if i % 3 else 'green'} 回答 {i}" for i in range(120)]
    predictions = [r if i % 4 else f"something else {i}" for i, r in enumerate(references)]
    serial = row_scores(predictions, references, workers=1)
    parallel = row_scores(predictions, references, workers=2, parallel_from=1)
    assert parallel == serial and len(serial["rouge-l"]) == 120
    assert serial["exact_match"][0] == 0.0 and serial["exact_match"][1] == 100.0  # rows stay in order


def test_models_scored_together_score_as_each_alone():
    """One pool for every model, rows regrouped by reference: each model's rows come back in its order."""
    references = [f"reference {i % 7} 回答 {i % 3}" for i in range(60)]
    tuned = [r if i % 2 else f"other {i}" for i, r in enumerate(references)]
    base = [f"base {i} 回答" for i in range(40)]
    together = row_scores_of([(tuned, references), (base, references[:40])], workers=2, parallel_from=1)
    assert together == [row_scores(tuned, references, workers=1), row_scores(base, references[:40], workers=1)]


def test_bleu4_equals_nltks_sentence_bleu_to_the_last_digit():
    import random

    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    rng = random.Random(7)
    alphabet = "ab cde的是了。,"
    pairs = [("", ""), ("", "abc"), ("abc", ""), ("a", "a"), ("ab", "ab"), ("abc", "abd"), ("aaaa", "aa")]

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))

    pairs += [(text(), text()) for _ in range(2000)]
    smooth = SmoothingFunction().method3
    for prediction, reference in pairs:
        expected = round(float(sentence_bleu([list(reference)], list(prediction), smoothing_function=smooth)) * 100, 4)
        assert bleu4(prediction, reference) == expected, (prediction, reference)


def mixed_texts(seed: int, count: int) -> list[str]:
    """Chinese, English, digits, jieba's block characters (+#&._%-), sentence ends, whitespace."""
    import random

    rng = random.Random(seed)
    pieces = [
        "今天",
        "天气",
        "很好",
        "我们",
        "机器学习",
        "的",
        "是",
        "。",
        "！",
        "？",
        "?",
        "……",
        "......",
        "”",
        "the",
        "cat",
        "sat",
        "on",
        "mat",
        "C++",
        "C#",
        "3.14",
        "50%",
        "well-known",
        "a&b",
        " ",
        "  ",
        "\n",
        "，",
    ]

    def text() -> str:
        return "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(0, 40)))

    return [text() for _ in range(count)]


def test_words_are_jiebas_cut_of_the_whole_text():
    import jieba

    words = Words()
    for text in mixed_texts(3, 1500) + [p for pair in FIXED for p in pair]:
        assert words.of(text) == list(jieba.cut(text)), text


def test_rouge_equals_rouge_chineses_get_scores_on_jieba_words():
    """The scores LLaMA-Factory's ComputeSimilarity computes per row, by the libraries themselves."""
    import jieba
    from rouge_chinese import Rouge

    texts = mixed_texts(5, 3000)
    for prediction, reference in zip(texts[::2], texts[1::2], strict=True):
        hypothesis, ref = " ".join(jieba.cut(prediction)), " ".join(jieba.cut(reference))
        mine = rouge_scores(prediction, reference)
        if not hypothesis.split() or not ref.split():
            assert mine == dict.fromkeys(mine, 0.0)
            continue
        theirs = Rouge().get_scores(hypothesis, ref)[0]
        assert mine == {key: round(theirs[key]["f"] * 100, 4) for key in mine}, (prediction, reference)


def test_lcs_length_equals_rouge_chineses_table():
    import random

    from rouge_chinese.rouge_score import _len_lcs

    rng = random.Random(11)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == _len_lcs(a, b)
