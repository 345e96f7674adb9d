"""FLOP counts from the config: a hand count for a tiny config, and torch's own FLOP counter for every kind."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from compress.models import SlimformerConfig, SlimformerForSequenceClassification, SlimRNNConfig, SlimRNNForSequenceClassification
from eval.errors import SlimformerError
from eval.flops import count_flops, flops_grid

TINY = dict(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=4, ffn_dim=64, num_labels=3)


def test_full_attention_matches_the_hand_count():
    config = SlimformerConfig(**TINY).to_dict()  # head_dim = 32 / 4 = 8
    B, T = 2, 10  # 20 token rows
    qkv = 3 * 2 * 20 * 32 * 32  # three (20, 32) @ (32, 32) products, 2 FLOPs per multiply-add: 122880
    out = 2 * 20 * 32 * 32  # 40960
    scores = 2 * (B * 4) * T * T * 8  # Q K^T: 8 (batch x head) products (10, 8) @ (8, 10): 12800
    mix = 2 * (B * 4) * T * T * 8  # P V: (10, 10) @ (10, 8) each: 12800
    mlp = 2 * 20 * 32 * 64 + 2 * 20 * 64 * 32  # up and down: 163840
    layer = qkv + out + scores + mix + mlp  # 353280
    head = 2 * B * 32 * 3  # the classifier on the pooled (2, 32): 384
    assert layer == 353280
    assert count_flops(config, B, T) == 2 * layer + head == 706944


def test_grid_covers_every_setting_and_grows_with_length():
    grid = flops_grid(SlimformerConfig(**TINY).to_dict(), [1, 4], [8, 16])
    assert [(g["batch"], g["seq_len"]) for g in grid] == [(1, 8), (1, 16), (4, 8), (4, 16)]
    by = {(g["batch"], g["seq_len"]): g["flops"] for g in grid}
    assert by[4, 8] == 4 * by[1, 8]  # linear in batch
    assert 2 * by[1, 8] < by[1, 16]  # full attention: more than linear in length
    assert flops_grid({"model_type": "bert"}, [1], [8]) is None


def torch_count(model: torch.nn.Module, B: int, T: int) -> int:
    ids = torch.randint(5, 60, (B, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids))
    return counter.get_total_flops()


@pytest.mark.parametrize("attention", [
    {"kind": "bigbird", "block": 4},  # T = 10: 3 blocks, the last padded
    {"kind": "bigbird", "block": 4, "n_global": 0, "n_random": 1},
    {"kind": "linformer", "k": 8, "max_len": 24},
    {"kind": "linformer", "k": 8, "max_len": 24, "per_head": True, "share_kv": True},
    {"kind": "performer", "n_features": 16},
], ids=lambda a: "-".join(str(v) for v in a.values()))
def test_efficient_kinds_match_torchs_flop_counter(attention):
    """torch counts every matmul the forward runs; pruned shapes (per-layer heads, a removed MLP) included."""
    config = SlimformerConfig(**{**TINY, "n_heads": [4, 2], "head_dim": 8, "ffn_dim": [64, 0]}, attention=attention)
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(config)
    assert count_flops(config.to_dict(), 2, 10) == torch_count(model, 2, 10)


def test_full_attention_matches_torch_plus_sdpa():
    """torch's counter does not see CPU SDPA's fused kernel: add its two products by hand."""
    config = SlimformerConfig(**TINY, embed_dim=16, head_activation="tanh", classifier_dim=24)
    model = SlimformerForSequenceClassification(config)
    sdpa = 2 * 2 * (2 * (2 * 4) * 10 * 10 * 8)  # 2 layers x 2 products (Q K^T, P V) x 2 FLOPs x (B h = 8) x T T d
    assert count_flops(config.to_dict(), 2, 10) == torch_count(model, 2, 10) + sdpa


def test_rnn_students():
    gru = SlimRNNConfig(vocab_size=60, dim=16, hidden_dim=12, n_layers=2, cell="gru", num_labels=3)
    assert count_flops(gru.to_dict(), 2, 10) == torch_count(SlimRNNForSequenceClassification(gru), 2, 10)
    # LSTM (torch's counter skips the fused op): per token and direction 2 * 4 gates * 12 * (in + 12); in = 16, then 12
    lstm = SlimRNNConfig(vocab_size=60, dim=16, hidden_dim=12, n_layers=2, cell="lstm", num_labels=3)
    per_token = 2 * 4 * 12 * (16 + 12) + 2 * 4 * 12 * (12 + 12)
    assert count_flops(lstm.to_dict(), 2, 10) == 2 * 20 * per_token + 2 * 2 * 24 * 3
    boe = SlimRNNConfig(vocab_size=60, dim=16, cell="boe", num_labels=3)
    assert count_flops(boe.to_dict(), 2, 10) == 2 * 2 * 16 * 3


def test_unknown_kinds_are_named():
    with pytest.raises(SlimformerError, match="model_type 'bert'"):
        count_flops({"model_type": "bert"}, 1, 8)
    with pytest.raises(SlimformerError, match="attention kind 'nystrom'"):
        count_flops({**SlimformerConfig(**TINY).to_dict(), "attention": "nystrom"}, 1, 8)
