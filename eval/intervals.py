"""95% intervals for test accuracy and for the difference of two accuracies: how much a number can be trusted.

- One accuracy, k right of n: the Wilson score interval (Wilson 1927; recommended over the
  normal "Wald" interval by Brown, Cai & DasGupta 2001, "Interval Estimation for a Binomial
  Proportion"), which stays inside [0, 1] and keeps its coverage near 0 % and 100 %.
- Two models on the same test texts: a paired bootstrap of the difference (Efron & Tibshirani
  1993; Koehn 2004, "Statistical Significance Tests for Machine Translation Evaluation"). Each
  text contributes d = right_a - right_b in {-1, 0, +1}; resampling n texts with replacement
  is drawing the counts of the three values from a multinomial, so `RESAMPLES` resamples cost
  one call, not n x RESAMPLES draws. The 2.5th and 97.5th percentiles of the resampled mean
  difference are the interval; an interval holding zero is a difference within noise. McNemar's
  exact test (McNemar 1947) on the discordant texts gives a p-value beside it.
- Two models on different test sets (rows of runs with other data): Newcombe's hybrid score
  interval (Newcombe 1998, method 10), built from the two Wilson intervals.

numpy and the standard library only: the report (which must not import torch) uses it too.
"""

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
RESAMPLES = 10_000  # paired bootstrap resamples
SEED = 0  # the bootstrap's seed: the same predictions give the same interval
EXACT_LIMIT = 2000  # McNemar's test is exact up to this many discordant texts, then normal with continuity correction


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion k / n (default 95 %); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n], got k={k}, n={n}")
    p, z2 = k / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Interval of k1/n1 - k2/n2 for two independent samples (Newcombe's hybrid score method)."""
    k1, n1, k2, n2 = int(k1), int(n1), int(k2), int(n2)
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(k1, n1, z), wilson_interval(k2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def paired_bootstrap(right_a: np.ndarray, right_b: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
                     level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(right_a) - mean(right_b) over `resamples` resamples of the same n texts.

    `right_a`, `right_b`: (N,) bool, whether each model got each text right."""
    a, b = np.asarray(right_a, dtype=bool), np.asarray(right_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two (N,) arrays of the same N > 0, got {a.shape} and {b.shape}")
    n = len(a)
    wins, losses = int(np.sum(a & ~b)), int(np.sum(~a & b))  # d = +1, d = -1; the rest d = 0
    counts = np.random.default_rng(seed).multinomial(n, [wins / n, losses / n, (n - wins - losses) / n], size=resamples)  # (R, 3)
    means = (counts[:, 0] - counts[:, 1]) / n  # (R,)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def mcnemar_p(right_a: np.ndarray, right_b: np.ndarray) -> float:
    """Two-sided p-value of McNemar's test: are the texts only a gets right as many as those only b does?"""
    a, b = np.asarray(right_a, dtype=bool), np.asarray(right_b, dtype=bool)
    wins, losses = int(np.sum(a & ~b)), int(np.sum(~a & b))
    m = wins + losses
    if m == 0:
        return 1.0
    if m <= EXACT_LIMIT:  # binomial(m, 1/2): twice the smaller tail
        tail = sum(math.comb(m, i) for i in range(min(wins, losses) + 1)) / 2**m
        return min(1.0, 2 * tail)
    z = (abs(wins - losses) - 1) / math.sqrt(m)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def contains_zero(interval: tuple[float, float] | list[float]) -> bool:
    """The difference is within noise: its interval holds zero."""
    return interval[0] <= 0 <= interval[1]


def accuracy_fields(predictions: np.ndarray, labels: np.ndarray) -> dict:
    """`accuracy_ci`: the Wilson 95 % interval of the accuracy of `predictions` (N,) against `labels` (N,)."""
    right = np.asarray(predictions) == np.asarray(labels)
    lo, hi = wilson_interval(int(right.sum()), len(right))
    return {"accuracy_ci": [lo, hi]}


def delta_fields(predictions: np.ndarray, reference: np.ndarray, labels: np.ndarray, baseline: str) -> dict:
    """`accuracy_delta`: this model's accuracy minus the `baseline` stage's (predictions `reference`) on the same
    texts, with its paired bootstrap interval and McNemar's p-value."""
    labels = np.asarray(labels)
    right, right_base = np.asarray(predictions) == labels, np.asarray(reference) == labels
    ci = paired_bootstrap(right, right_base)
    return {"accuracy_delta": {
        "baseline": baseline, "delta": float(right.mean() - right_base.mean()), "ci": list(ci),
        "contains_zero": contains_zero(ci), "mcnemar_p": mcnemar_p(right, right_base), "n": int(len(labels)),
        "method": f"paired bootstrap over the test texts, {RESAMPLES} resamples, seed {SEED}, 95% percentile interval",
    }}
