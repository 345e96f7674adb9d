"""Carving validation and test splits out of one labelled set, stratified by class and seeded.

Each class's examples are shuffled with a `numpy.random.Generator` seeded by the data seed;
validation, then test, take about `n_c * fraction` of each class from the front (rounded by
largest remainder so the split size is `round(N * fraction)`), the rest stay in train.
Stratifying keeps classes' shares equal across splits (cf. scikit-learn's
`StratifiedShuffleSplit`); a class's last example always stays in train, so every evaluated
class was also trained on.
"""

from __future__ import annotations

import numpy as np


def check_fractions(validation_fraction: float | None, test_fraction: float | None) -> None:
    """Raise ValueError (shown by pydantic) unless the carved fractions leave a train split."""
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}; e.g. 0.1 for 10%")
    total = (validation_fraction or 0.0) + (test_fraction or 0.0)
    if total >= 0.9:
        raise ValueError(
            f"validation_fraction + test_fraction = {total:g} leaves under 10% for training; "
            "lower them (0.1 each is usual)"
        )


def stratified_split(
    labels: list[int], fractions: dict[str, float], seed: int
) -> dict[str, list[int]]:
    """Split example indices by class into "train" plus one part per entry of `fractions`.

    `fractions` maps split name to its share, in carving order, e.g.
    `{"validation": 0.1, "test": 0.1}`. A split gets `round(N * share)` examples (at least one
    when the share is positive), spread over classes in proportion to their sizes by largest
    remainder, never taking a class's last example from train. Returns index lists per split,
    each in a seeded random order, so a source sorted by class is not sorted by class here.
    """
    if not labels:
        return {"train": [], **{name: [] for name in fractions}}
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels, dtype=np.int64)  # (N,)
    classes = np.unique(labels_arr)
    # each class's examples in a seeded random order; splits take from the front
    pools: dict[int, list[int]] = {}
    for c in classes:
        idx = np.flatnonzero(labels_arr == c)
        pools[int(c)] = [int(i) for i in idx[rng.permutation(len(idx))]]
    sizes = {c: len(p) for c, p in pools.items()}
    out: dict[str, list[int]] = {}
    for name, frac in fractions.items():
        target = max(int(round(len(labels_arr) * frac)), 1 if frac > 0 else 0)
        spare = {c: len(p) - 1 for c, p in pools.items()}  # one example per class stays in train
        ideal = {c: sizes[c] * frac for c in pools}
        take = {c: min(int(np.floor(ideal[c])), spare[c]) for c in pools}
        # hand out the rest by largest remainder; ties go to the larger class, then by lot
        lot = dict(zip(pools, rng.permutation(len(pools))))
        order = sorted(pools, key=lambda c: (-(ideal[c] - np.floor(ideal[c])), -sizes[c], lot[c]))
        left = target - sum(take.values())
        while left > 0 and any(take[c] < spare[c] for c in order):
            for c in order:
                if left > 0 and take[c] < spare[c]:
                    take[c] += 1
                    left -= 1
        picked = [i for c in pools for i in pools[c][: take[c]]]
        for c in pools:
            pools[c] = pools[c][take[c] :]
        out[name] = [int(picked[i]) for i in rng.permutation(len(picked))]
    rest = np.sort(np.concatenate([np.asarray(p, dtype=np.int64) for p in pools.values()]))
    out["train"] = [int(i) for i in rest[rng.permutation(len(rest))]]
    return {"train": out["train"], **{name: out[name] for name in fractions}}
