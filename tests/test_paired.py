"""The statistics behind `compare` and metrics.json's `ci95`, proven against references:
the paired bootstrap interval against scipy.stats.bootstrap (paired, percentile) and the
normal-theory interval on 10,000-row eval sets, both of hpcft's paths (numpy, standard
library); its coverage on eval sets drawn with a known gain; McNemar's exact test against
scipy's exact binomial test."""

from __future__ import annotations

import random
import time
from statistics import fmean, stdev

import pytest

from hpcft import paired
from hpcft.paired import bootstrap_intervals, deltas, mcnemar_exact, quantile

np = pytest.importorskip("numpy")
stats = pytest.importorskip("scipy.stats")

ROWS = 10_000


def eval_scores(rows: int, seed: int, gain: float = 1.5) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-row scores shaped like an LLM eval's: ROUGE/BLEU-like scores in [0, 100] rounded to 4
    decimals (a spike at 0 and at 100, B a little better and correlated with A), and exact match
    (0 or 100)."""
    rng = np.random.default_rng(seed)
    skill = rng.beta(2, 2, rows)
    a, b = {}, {}
    for i, name in enumerate(("rouge-1", "rouge-2", "rouge-l", "bleu-4")):
        base = np.clip(100 * skill + rng.normal(0, 15, rows) - 5 * i, 0, 100)
        tuned = np.clip(base + gain + rng.normal(0, 12, rows), 0, 100)
        a[name], b[name] = np.round(base, 4).tolist(), np.round(tuned, 4).tolist()
    right = rng.random(rows) < skill
    flipped = rng.random(rows) < 0.12
    a["exact_match"] = (100.0 * right).tolist()
    b["exact_match"] = (100.0 * (right ^ (flipped & (rng.random(rows) < 0.6)))).tolist()
    return a, b


def scipy_interval(a: list[float], b: list[float], resamples: int) -> tuple[float, float]:
    result = stats.bootstrap(
        (np.asarray(a), np.asarray(b)),
        lambda x, y, axis: np.mean(y, axis=axis) - np.mean(x, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=0.95,
        method="percentile",
        batch=500,
        random_state=np.random.default_rng(12345),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@pytest.fixture(scope="module")
def ten_thousand_rows() -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    return eval_scores(ROWS, seed=7)


CHECKED = ("rouge-l", "bleu-4", "exact_match")


@pytest.fixture(scope="module")
def scipys(ten_thousand_rows) -> dict[str, tuple[float, float]]:
    """scipy's intervals (5,000 resamples) of a continuous, a skewed and a hit-or-miss metric."""
    a, b = ten_thousand_rows
    return {metric: scipy_interval(a[metric], b[metric], 5_000) for metric in CHECKED}


@pytest.mark.parametrize("numpy_path", [True, False], ids=["numpy", "standard-library"])
def test_the_interval_is_scipys_paired_percentile_bootstrap_on_10k_rows(
    ten_thousand_rows, scipys, numpy_path, monkeypatch
):
    """Both paths against scipy's bootstrap with 5,000 resamples: each bound within 0.25
    standard errors of the mean difference (about 3 sigma of the two bootstraps' Monte Carlo
    noise together), and within that of the normal-theory interval too."""
    monkeypatch.setattr(paired, "has_numpy", lambda: numpy_path)
    a, b = ten_thousand_rows
    ours = bootstrap_intervals(a, b)
    assert list(ours) == list(a)
    for metric in CHECKED:
        diffs = [y - x for x, y in zip(a[metric], b[metric], strict=True)]
        se = stdev(diffs) / len(diffs) ** 0.5
        low, high = scipys[metric]
        assert ours[metric][0] == pytest.approx(low, abs=0.25 * se), metric
        assert ours[metric][1] == pytest.approx(high, abs=0.25 * se), metric
        normal = (fmean(diffs) - 1.959964 * se, fmean(diffs) + 1.959964 * se)
        assert ours[metric] == pytest.approx(normal, abs=0.25 * se), metric
        assert 3.5 * se < ours[metric][1] - ours[metric][0] < 4.3 * se  # 2 x 1.96 standard errors


def test_the_interval_is_seeded_and_is_of_the_difference():
    a, b = eval_scores(2_000, seed=5)
    assert bootstrap_intervals(a, b, seed=3) == bootstrap_intervals(a, b, seed=3)
    assert bootstrap_intervals(a, b, seed=3) != bootstrap_intervals(a, b, seed=4)
    swapped = bootstrap_intervals(b, a, seed=3)
    for metric, (low, high) in bootstrap_intervals(a, b, seed=3).items():
        assert swapped[metric] == pytest.approx((-high, -low), abs=1e-9)
    same = bootstrap_intervals(a, a)
    assert all(interval == (0.0, 0.0) for interval in same.values())


def test_the_numpy_path_is_the_bootstrap_written_out_by_hand():
    """The same draws (numpy's generator, seeded), the mean difference of each resample, and
    numpy's percentile: equal to the last digit."""
    a, b = eval_scores(500, seed=1)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, 500, size=(200, 500))
    diffs = np.asarray(b["rouge-l"]) - np.asarray(a["rouge-l"])
    means = diffs[draws].mean(axis=1)
    expected = np.percentile(means, [2.5, 97.5])
    assert bootstrap_intervals(a, b, resamples=200, seed=0)["rouge-l"] == pytest.approx(tuple(expected), rel=1e-12)


def test_quantile_is_numpys_linear_percentile():
    rng = random.Random(0)
    for size in (1, 2, 7, 2000):
        values = sorted(rng.gauss(0, 1) for _ in range(size))
        for q in (0.0, 0.025, 0.5, 0.975, 1.0):
            assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)), rel=1e-12, abs=1e-15)


def test_95_percent_of_intervals_hold_the_true_gain():
    """Coverage: 400 eval sets of 400 rows drawn with a known gain of 2 points; the share of
    intervals holding it is 95 % within binomial noise (0.92 to 0.98: about 3 sigma)."""
    rng = np.random.default_rng(11)
    covered = 0
    for i in range(400):
        base = rng.uniform(0, 100, 400)
        tuned = base + 2.0 + rng.normal(0, 20, 400)  # the true mean gain is 2.0
        low, high = bootstrap_intervals({"m": base.tolist()}, {"m": tuned.tolist()}, resamples=1000, seed=i)["m"]
        covered += low <= 2.0 <= high
    assert 0.92 <= covered / 400 <= 0.98


@pytest.mark.parametrize(
    "only_a,only_b,both,neither",
    [(0, 0, 5, 5), (3, 3, 10, 0), (1, 9, 40, 50), (12, 30, 500, 458), (240, 300, 6000, 3460), (0, 25, 1, 1)],
)
def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_rows(only_a, only_b, both, neither):
    a = [100.0] * only_a + [0.0] * only_b + [100.0] * both + [0.0] * neither
    b = [0.0] * only_a + [100.0] * only_b + [100.0] * both + [0.0] * neither
    order = list(range(len(a)))
    random.Random(len(a)).shuffle(order)  # rows in any order: only the counts matter
    a, b = [a[i] for i in order], [b[i] for i in order]
    expected = 1.0 if only_a + only_b == 0 else stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_on_10k_rows_and_only_for_hit_or_miss_metrics(ten_thousand_rows):
    a, b = ten_thousand_rows
    found = {d.metric: d for d in deltas(a, b)}
    em_a, em_b = a["exact_match"], b["exact_match"]
    discordant = [(x, y) for x, y in zip(em_a, em_b, strict=True) if x != y]
    only_a = sum(1 for x, _ in discordant if x)
    assert found["exact_match"].mcnemar_p == pytest.approx(
        stats.binomtest(only_a, len(discordant), 0.5).pvalue, rel=1e-9
    )
    assert all(found[m].mcnemar_p is None for m in ("rouge-1", "rouge-2", "rouge-l", "bleu-4"))
    assert found["rouge-l"].delta == fmean(b["rouge-l"]) - fmean(a["rouge-l"])


@pytest.mark.parametrize("numpy_path", [True, False], ids=["numpy", "standard-library"])
def test_10k_rows_5_metrics_2000_resamples_on_either_path(ten_thousand_rows, numpy_path, monkeypatch):
    """Both paths give every metric its means and an interval around B−A. The time is printed
    (pytest -s), not bounded: a unit test on a loaded machine is no measure of speed."""
    monkeypatch.setattr(paired, "has_numpy", lambda: numpy_path)
    a, b = ten_thousand_rows
    started = time.perf_counter()
    found = {d.metric: d for d in deltas(a, b)}
    took = time.perf_counter() - started
    print(f"\n{'numpy' if numpy_path else 'standard library'}: {took:.2f} s for 10,000 rows x 5 metrics x 2,000")
    assert sorted(found) == sorted(a)
    for metric, d in found.items():
        assert (d.a, d.b) == (fmean(a[metric]), fmean(b[metric]))
        assert d.low <= d.delta <= d.high and d.low < d.high, d
