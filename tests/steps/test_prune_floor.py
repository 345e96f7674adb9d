"""A global ranking keeps at least one head (neuron) in every layer unless the recipe allows empty layers."""

import torch

from compress.steps.prune import floored_layers, plan_removal


def test_the_global_ranking_keeps_one_unit_per_layer_and_says_where():
    scores = {0: torch.tensor([0.1, 0.2, 0.3]), 1: torch.tensor([0.9, 0.8, 0.7])}  # layer 0 holds the three lowest
    plan = plan_removal(scores, 3, keep=1)
    assert plan == {0: [0, 1], 1: [2]}, "layer 0's last head is passed over for the next lowest"
    assert floored_layers(scores, 3, plan, keep=1) == [0]
    assert plan_removal(scores, 3) == {0: [0, 1, 2]}, "allow_empty_layers: the plain ranking"
    assert floored_layers(scores, 2, plan_removal(scores, 2, keep=1), keep=1) == []
    assert sum(map(len, plan_removal(scores, 6, keep=1).values())) == 4, "never more than all but one per layer"
