"""The search's budget, front and choice, and the rules that turn sensitivity into cuts: numbers checked by hand."""

import pytest

from compress.errors import RecipeError
from compress.search.front import (
    Budget,
    choose,
    family_out_of_reach,
    nondominated_ranks,
    pareto_front,
    parse_drop,
    promote,
    reach,
    spearman,
)
from compress.search.space import allocate, int8_order, kept_layers


def point(acc, ms, mb=1.0, trial=0):
    return {"accuracy": acc, "latency_ms": ms, "bytes": int(mb * 1e6), "trial": trial}


def test_max_drop_is_points_or_a_percentage_of_the_teacher():
    assert parse_drop("1.0") == (1.0, False) and parse_drop("3%") == (3.0, True)
    assert Budget(1.0, False, "latency", None, None).floor(0.90) == pytest.approx(0.89)
    assert Budget(3.0, True, "latency", None, None).floor(0.90) == pytest.approx(0.873)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_drop": -1.0, "relative": False, "minimize": "latency", "max_latency_ms": None, "max_mb": None}, "non-negative"),
    ({"max_drop": 1.0, "relative": False, "minimize": "speed", "max_latency_ms": None, "max_mb": None}, "choose latency or size"),
    ({"max_drop": None, "relative": False, "minimize": "latency", "max_latency_ms": None, "max_mb": None}, "accuracy constraint"),
    ({"max_drop": 1.0, "relative": False, "minimize": None, "max_latency_ms": None, "max_mb": None}, "nothing to minimise"),
    ({"max_drop": None, "relative": False, "minimize": None, "max_latency_ms": -5.0, "max_mb": None}, "non-negative"),
])
def test_bad_budgets_are_clean_errors(kwargs, message):
    with pytest.raises(RecipeError, match=message):
        Budget(**kwargs)
    with pytest.raises(RecipeError, match="percentage"):
        parse_drop("one point")


def test_the_front_keeps_what_nothing_beats_and_ranks_the_rest():
    a, b, c, d = point(0.90, 10, trial=1), point(0.88, 5, trial=2), point(0.87, 6, trial=3), point(0.85, 2, trial=4)
    assert [p["trial"] for p in pareto_front([a, b, c, d], "latency")] == [4, 2, 1]  # c is beaten by b on both
    assert nondominated_ranks([a, b, c, d], "latency") == [0, 0, 1, 0]


def test_choice_minimises_the_cost_within_the_accuracy_floor():
    budget = Budget(2.0, False, "latency", None, None)  # teacher 0.90 -> floor 0.88
    chosen, missed = choose([point(0.90, 10), point(0.88, 5), point(0.85, 2)], budget, 0.90)
    assert chosen["latency_ms"] == 5 and missed == []


def test_full_recovery_takes_the_cheapest_estimates_within_reach_of_the_floor_cheapest_first():
    budget = Budget(2.0, False, "latency", None, None)  # teacher 0.90 -> floor 0.88, reach 0.84
    assert reach(budget, 0.90) == pytest.approx(0.84)
    points = [point(0.90, 10), point(0.87, 3), point(0.83, 1), point(0.85, 2), point(0.89, 5)]
    assert promote(points, budget, 0.90, keep=3) == [3, 4, 1]  # 0.83 out of reach; the cheapest over the floor second
    assert promote(points[1:4], budget, 0.90, keep=3) == [2, 0]  # none over the floor: cheapest first
    assert promote([point(0.80, 1), point(0.82, 2)], budget, 0.90, keep=1) == [1]  # none within reach: the most accurate
    capped = Budget(None, False, None, 6.0, None)  # no floor: the non-dominated fronts, then accuracy
    assert promote(points, capped, 0.90, keep=2) == [0, 4]


def test_a_student_family_far_under_the_reach_is_no_longer_drawn():
    budget = Budget(2.0, False, "latency", None, None)  # teacher 0.90 -> reach 0.84: out of reach under 0.79
    assert family_out_of_reach([0.70], budget, 0.90) is None  # one estimate is not enough to judge a family
    assert family_out_of_reach([0.70, 0.80], budget, 0.90) is None  # its best is within 5 points of the reach
    why = family_out_of_reach([0.56, 0.72, 0.60], budget, 0.90)
    assert why == "its 3 cheap estimates reach 72.0% at best, more than 5 points under the reach 84.0%"
    assert family_out_of_reach([0.1, 0.2], Budget(None, False, None, 6.0, None), 0.90) is None  # no floor, no reach


def test_a_hard_cap_maximises_accuracy_under_it():
    budget = Budget(None, False, None, 6.0, None)
    chosen, missed = choose([point(0.90, 10), point(0.88, 5), point(0.85, 2)], budget, 0.90)
    assert chosen["accuracy"] == 0.88 and missed == []


def test_an_impossible_budget_gives_the_nearest_candidate_and_says_by_how_much():
    budget = Budget(0.5, False, "latency", 1.0, None)  # floor 0.895, at most 1 ms: nothing meets both
    chosen, missed = choose([point(0.89, 1.1), point(0.80, 0.5)], budget, 0.90)
    assert chosen["latency_ms"] == 1.1  # 0.05 points and 10% slower beats 9.5 points short
    assert {m["budget"] for m in missed} == {"max_drop", "max_latency_ms"}
    assert next(m for m in missed if m["budget"] == "max_drop")["by"] == "0.50 points"


def test_spearman_of_hand_made_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40])["rho"] == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10])["rho"] == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2])["rho"] is None  # too few points to rank


def test_sensitivity_decides_which_layers_and_groups():
    assert kept_layers(2, [0.5, 3.0, 0.1, 2.0]) == [1, 3]  # the two whose removal costs most, in order
    assert int8_order({"attn_in": 0.3, "attn_out": 0.0, "ffn_up": 0.1, "ffn_down": 2.0, "embeddings": 0.0}) == [
        "attn_out", "embeddings", "ffn_up", "attn_in", "ffn_down"]


def test_allocate_cuts_more_where_it_costs_less_and_keeps_a_unit_per_layer():
    fractions = allocate(0.5, [4, 4], [0.0, 9.9])  # layer 0 costs nothing to cut, layer 1 a lot
    assert fractions[0] > fractions[1]
    assert sum(f * 4 for f in fractions) == pytest.approx(4.0)  # half of the 8 heads in all
    capped = allocate(0.7, [4, 4], [0.0, 9.9])  # layer 0 may lose at most 3 of 4: the rest goes to layer 1
    assert capped[0] == pytest.approx(0.75) and sum(f * 4 for f in capped) == pytest.approx(5.6)
    assert allocate(1.0, [2, 2], [0.0, 0.0]) == [0.5, 0.5]  # never a layer with no unit


def test_anchors_are_points_of_the_space_one_per_region():
    """The enqueued first candidates: every value one the sampler could draw, the halving anchor builds the common
    distilled shape, a one-layer teacher's anchors do not repeat, and a single family leaves `family` out."""
    import optuna

    from compress.search.space import TeacherShape, anchors, build_candidate, suggest

    teacher = TeacherShape(6, 384, (12,) * 6, 32, (1536,) * 6, 30522, 15000)
    sens = {"layers": [5, 1, 4, 1, 3, 1], "heads": {"fractions": [0.5], "drops": [[1.0]] * 6},
            "ffn": {"fractions": [0.5], "drops": [[1.0]] * 6},
            "int8": {"groups": ["attn_in", "attn_out", "ffn_up", "ffn_down", "embeddings"], "drops": [0.0] * 5}}
    found = anchors(teacher, ("transformer", "boe"))
    assert [a["family"] for a in found] == ["transformer"] * 3 + ["boe"]
    for params in found:  # each one the define-by-run space accepts as it is
        study = optuna.create_study(directions=["maximize", "minimize"])
        study.enqueue_trial(params)
        trial = study.ask()
        c = suggest(trial, teacher, sens, ("transformer", "boe"))
        assert trial.params == params and c.family == params["family"]
    halving = build_candidate({**found[1], "family": "transformer"}, teacher, sens)
    assert halving.layers == [0, 2, 4] and halving.shape.dim == 192 and sum(halving.shape.n_heads) == 18
    assert halving.shape.vocab_size == 15000 and halving.shape.int8 == "dynamic" and len(halving.int8_groups) == 5
    one = TeacherShape(1, 64, (4,), 16, (256,), 100, 80)
    assert len(anchors(one, ("transformer",))) == 2 and all("family" not in a for a in anchors(one, ("transformer",)))
