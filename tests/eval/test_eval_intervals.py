"""eval.intervals: the 95% intervals on cases checkable by hand or against published tables."""

import numpy as np
import pytest

from eval.intervals import (
    accuracy_fields,
    contains_zero,
    delta_fields,
    mcnemar_p,
    newcombe_interval,
    paired_bootstrap,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (50, 100, 0.4038, 0.5962),  # p = 0.5: center 0.5, half-width 1.96 / (1 + 1.96²/100) x sqrt(0.0025 + 1.96²/40000)
        (81, 263, 0.2553, 0.3662),  # Newcombe 1998 (single proportion), Table I example
        (0, 10, 0.0, 0.2775),  # no success: the interval still has width, and stays in [0, 1]
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_interval(k, n, low, high):
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=5e-5)


def test_newcombe_interval_matches_the_published_examples():
    # Newcombe 1998 ("Interval estimation for the difference between independent proportions"), method 10
    assert newcombe_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert newcombe_interval(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=5e-5)


def test_paired_bootstrap_agreeing_models_give_zero_and_opposite_ones_give_one():
    right = np.arange(100) % 3 > 0  # 67 of 100 right
    assert paired_bootstrap(right, right) == (0.0, 0.0)  # the same answers everywhere: no difference in any resample
    assert paired_bootstrap(np.ones(50, bool), np.zeros(50, bool)) == (1.0, 1.0)
    assert mcnemar_p(right, right) == 1.0


def test_paired_bootstrap_matches_resampling_the_texts_themselves():
    """The multinomial shortcut and drawing n texts with replacement give the same interval (within resampling noise)."""
    rng = np.random.default_rng(1)
    a, b = rng.random(200) < 0.8, rng.random(200) < 0.7
    low, high = paired_bootstrap(a, b)
    picks = rng.integers(0, 200, size=(10_000, 200))  # (R, n) explicit resamples
    explicit = np.quantile(a[picks].mean(1) - b[picks].mean(1), [0.025, 0.975])
    assert (low, high) == pytest.approx(tuple(explicit), abs=0.01)
    assert paired_bootstrap(a, b) == (low, high)  # fixed seed: the same predictions, the same interval


def test_paired_interval_of_ten_more_right_excludes_zero_and_mcnemar_agrees():
    labels = np.zeros(100, int)
    a = np.r_[np.zeros(60, int), np.ones(40, int)]  # 60 right
    b = np.r_[np.zeros(50, int), np.ones(50, int)]  # 50 right, all of them also right for a
    delta = delta_fields(a, b, labels, "teacher")["accuracy_delta"]
    assert delta["delta"] == pytest.approx(0.10) and delta["baseline"] == "teacher" and delta["n"] == 100
    assert 0.04 <= delta["ci"][0] < 0.10 < delta["ci"][1] <= 0.17 and not delta["contains_zero"]
    assert delta["mcnemar_p"] == pytest.approx(2 / 2**10)  # 10 discordant texts, all one way: 2 x 0.5^10
    only_a, only_b = np.array([1, 1, 1, 0, 1], bool), np.array([0, 0, 0, 1, 1], bool)  # 3 texts one way, 1 the other
    assert mcnemar_p(only_a, only_b) == pytest.approx(2 * (1 + 4) / 16)  # 2 x P(X <= 1), X ~ Binomial(4, 1/2)
    assert contains_zero([-0.01, 0.02]) and not contains_zero([0.001, 0.02])
    assert accuracy_fields(a, labels)["accuracy_ci"] == pytest.approx(list(wilson_interval(60, 100)))
