"""The budget, the Pareto front and the choice: what `slimformer compress` keeps and which model it hands over.

A *budget* is an accuracy constraint (`max_drop` points below the teacher's validation accuracy,
or a percentage of it) and either an objective (`minimize: latency | size`) or a hard cap
(`max_latency_ms`, `max_mb`) under which accuracy is maximised; both caps and an objective may be
given together. The front is the set of full-fidelity candidates no other beats on accuracy and
on the cost (latency or size): cheap estimates never enter it. The choice is made on the
validation split only; the test split is scored afterwards, for the front alone.

When no candidate meets every budget, the choice is the *nearest* one: the smallest total
violation, each budget's miss measured relative to its limit (so a 2 % slower model beats one a
point of accuracy short of a 1-point budget), and the summary says which budget it misses and by
how much: a search never ends empty.
"""

from dataclasses import dataclass

import numpy as np

from compress.errors import RecipeError

MB = 1_000_000


@dataclass(frozen=True)
class Budget:
    max_drop: float | None  # accuracy points (or percent of the teacher's accuracy when relative) the model may lose
    relative: bool  # max_drop is a percentage of the teacher's accuracy ("1%")
    minimize: str | None  # "latency" | "size" | None (then a hard cap is given and accuracy is maximised)
    max_latency_ms: float | None
    max_mb: float | None

    def __post_init__(self):
        if self.minimize not in (None, "latency", "size"):
            raise RecipeError(f"--minimize {self.minimize!r}: choose latency or size")
        for name, value in (("--max-drop", self.max_drop), ("--max-latency-ms", self.max_latency_ms), ("--max-mb", self.max_mb)):
            if value is not None and not (value >= 0 and np.isfinite(value)):
                raise RecipeError(f"{name} {value}: a budget is a non-negative number")
        if self.max_latency_ms == 0 or self.max_mb == 0:
            raise RecipeError("--max-latency-ms and --max-mb must be above 0")
        if self.max_drop is None and self.max_latency_ms is None and self.max_mb is None:
            raise RecipeError("give an accuracy constraint (--max-drop 1.0, or --max-drop 1%) or a hard budget "
                              "(--max-latency-ms, --max-mb) under which accuracy is maximised")
        if self.minimize is None and self.max_latency_ms is None and self.max_mb is None:
            raise RecipeError("nothing to minimise: add --minimize latency (or size), "
                              "or a hard budget --max-latency-ms / --max-mb")

    @property
    def cost(self) -> str:
        """The cost the front trades against accuracy: the objective, else the capped quantity."""
        return self.minimize or ("latency" if self.max_latency_ms is not None else "size")

    def floor(self, teacher_accuracy: float) -> float | None:
        """The least validation accuracy allowed (a fraction), None without an accuracy constraint."""
        if self.max_drop is None:
            return None
        if self.relative:
            return teacher_accuracy * (1 - self.max_drop / 100)
        return teacher_accuracy - self.max_drop / 100

    def misses(self, point: dict, teacher_accuracy: float) -> list[dict]:
        """Each budget `point` ({"accuracy", "latency_ms", "bytes"}) misses: the limit, the value, by how much."""
        out = []
        floor = self.floor(teacher_accuracy)
        if floor is not None and point["accuracy"] < floor - 1e-12:
            out.append({"budget": "max_drop", "limit": floor, "value": point["accuracy"],
                        "by": f"{100 * (floor - point['accuracy']):.2f} points", "relative": (floor - point["accuracy"]) / floor})
        if self.max_latency_ms is not None and point["latency_ms"] > self.max_latency_ms:
            out.append({"budget": "max_latency_ms", "limit": self.max_latency_ms, "value": point["latency_ms"],
                        "by": f"{point['latency_ms'] - self.max_latency_ms:.3g} ms",
                        "relative": point["latency_ms"] / self.max_latency_ms - 1})
        if self.max_mb is not None and point["bytes"] > self.max_mb * MB:
            out.append({"budget": "max_mb", "limit": self.max_mb, "value": point["bytes"] / MB,
                        "by": f"{point['bytes'] / MB - self.max_mb:.3g} MB", "relative": point["bytes"] / (self.max_mb * MB) - 1})
        return out


def parse_drop(text: str | float | None) -> tuple[float | None, bool]:
    """`1.0` (points) or `1%` (percent of the teacher's accuracy) -> (value, relative)."""
    if text is None:
        return None, False
    raw = str(text).strip()
    relative = raw.endswith("%")
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        raise RecipeError(f"--max-drop {text!r}: give accuracy points (1.0) or a percentage of the teacher's (1%)") from None
    if not (value >= 0 and np.isfinite(value)):
        raise RecipeError(f"--max-drop {text!r}: a budget is a non-negative number")
    return value, relative


def cost_of(point: dict, cost: str) -> float:
    return point["latency_ms"] if cost == "latency" else point["bytes"]


def pareto_front(points: list[dict], cost: str) -> list[dict]:
    """The points no other point dominates (at least as accurate and as cheap, better in one), by cost then accuracy."""
    front = []
    for p in points:
        dominated = any(
            q is not p and q["accuracy"] >= p["accuracy"] and cost_of(q, cost) <= cost_of(p, cost)
            and (q["accuracy"] > p["accuracy"] or cost_of(q, cost) < cost_of(p, cost))
            for q in points)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (cost_of(p, cost), -p["accuracy"]))


def nondominated_ranks(points: list[dict], cost: str) -> list[int]:
    """Each point's front number (0: the Pareto front, 1: the front once it is removed, ...) (Deb et al. 2002)."""
    ranks, left, rank = [None] * len(points), list(range(len(points))), 0
    while left:
        front = {id(p) for p in pareto_front([points[i] for i in left], cost)}
        for i in [i for i in left if id(points[i]) in front]:
            ranks[i] = rank
        left = [i for i in left if ranks[i] is None]
        rank += 1
    return ranks


def choose(points: list[dict], budget: Budget, teacher_accuracy: float) -> tuple[dict | None, list[dict]]:
    """The chosen point and what it misses ([] when it meets every budget)."""
    if not points:
        return None, []
    meets = [p for p in points if not budget.misses(p, teacher_accuracy)]
    if meets:
        if budget.minimize is not None:  # cheapest first; accuracy breaks ties
            return min(meets, key=lambda p: (cost_of(p, budget.minimize), -p["accuracy"])), []
        return max(meets, key=lambda p: (p["accuracy"], -cost_of(p, budget.cost))), []

    def violation(p):
        return sum(m["relative"] for m in budget.misses(p, teacher_accuracy))

    nearest = min(points, key=lambda p: (violation(p), cost_of(p, budget.cost)))
    return nearest, budget.misses(nearest, teacher_accuracy)


def reach(budget: Budget, teacher_accuracy: float) -> float | None:
    """The least cheap estimate worth a full recovery: the floor, less twice what the budget lets the model drop (a 3%
    drop from 0.919: floor 0.891, reach 0.836). A cheap estimate (a quarter epoch) runs below its full one, and the more
    so the smaller the student (the first MiniLM search: +3.2 points for 2 layers, +0.1 to +0.75 for 4 and 5), so a
    small student under the floor at cheap fidelity may still pass after full recovery."""
    floor = budget.floor(teacher_accuracy)
    return None if floor is None else floor - 2 * (teacher_accuracy - floor)


FAMILY_TRIALS = 2  # cheap estimates of a student family before it may be judged out of reach
FAMILY_MARGIN = 0.05  # ... when the best of them is this far under the reach (cheap runs 0.1-3.2 points under full)


def family_out_of_reach(estimates: list[float], budget: Budget, teacher_accuracy: float) -> str | None:
    """Why a student family (bag of embeddings, GRU, LSTM) is no longer worth drawing, or None: its first
    `FAMILY_TRIALS` cheap estimates or more (`estimates`, validation accuracies) all fall more than `FAMILY_MARGIN`
    under the reach. The sampler's random start draws the family as often as Transformers (the second MiniLM search:
    5 bag-of-embeddings students at 56-72% against a reach of 83.6%, the quickstart's: 6 of 13 trials at 13-33%
    against 75.6%), and each costs a cheap training; a skipped draw costs nothing."""
    lowest = reach(budget, teacher_accuracy)
    if lowest is None or len(estimates) < FAMILY_TRIALS or max(estimates) >= lowest - FAMILY_MARGIN:
        return None
    return (f"its {len(estimates)} cheap estimates reach {100 * max(estimates):.1f}% at best, more than "
            f"{100 * FAMILY_MARGIN:.0f} points under the reach {100 * lowest:.1f}%")


def promote(points: list[dict], budget: Budget, teacher_accuracy: float, keep: int) -> list[int]:
    """Which cheap estimates (indices into `points`) go on to full recovery, in the order they train.

    With an accuracy floor and a cost to minimise, the answer is the cheapest model over the floor at full fidelity:
    the `keep` cheapest within reach of it, cheapest first (smaller students also train faster), except that the
    cheapest estimate already over the floor trains second, so that a search whose time runs out after two full
    recoveries still ends with a model that meets the budget whenever one was estimated. Otherwise, or when none is
    within reach, the `keep` best by non-dominated front, then accuracy."""
    lowest = reach(budget, teacher_accuracy)
    if lowest is not None and budget.minimize is not None:
        within = [i for i, p in enumerate(points) if p["accuracy"] >= lowest]
        order = sorted(within, key=lambda i: (cost_of(points[i], budget.minimize), -points[i]["accuracy"]))
        over = [i for i in order if points[i]["accuracy"] >= budget.floor(teacher_accuracy)]
        if over and over[0] not in order[:2]:
            order.remove(over[0])
            order.insert(1, over[0])
        if order:
            return order[:keep]
    ranks = nondominated_ranks(points, budget.cost)
    return sorted(range(len(points)), key=lambda i: (ranks[i], -points[i]["accuracy"]))[:keep]


def spearman(a: list[float], b: list[float]) -> dict:
    """Spearman's rank correlation of two paired lists (average ranks for ties), with its permutation-free p-value."""
    from scipy.stats import spearmanr

    if len(a) < 3:
        return {"rho": None, "n": len(a), "p_value": None}
    result = spearmanr(a, b)
    rho = float(result.statistic) if np.isfinite(result.statistic) else None
    p = float(result.pvalue) if np.isfinite(result.pvalue) else None
    return {"rho": rho, "n": len(a), "p_value": p}
