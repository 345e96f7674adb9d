"""The model: exact save/load round trips, per-layer shapes, the attention contract, remote code."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from compress.models import ATTENTION, SlimformerConfig, SlimformerForSequenceClassification
from tests.helpers import logits, padded_batch, remote_code_logits


def inputs(batch=3, seq_len=10, vocab=60, seed=0):
    return padded_batch(batch, seq_len, seed, vocab)  # one padded example


def test_round_trip_is_exact(tmp_path, tiny_config):
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(tiny_config)
    ids, mask = inputs()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(loaded) is SlimformerForSequenceClassification
    assert torch.equal(logits(model, ids, mask), logits(loaded, ids, mask))
    assert (tmp_path / "model.safetensors").is_file()


def test_round_trip_with_uneven_layers(tmp_path):
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=3, n_heads=[4, 1, 0], head_dim=8, ffn_dim=[64, 7, 0], num_labels=2)
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(config)
    assert model.layers[2].attn is None and model.layers[2].mlp is None
    assert model.layers[1].attn.n_heads == 1 and model.layers[1].attn.q_proj.out_features == 8
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["n_heads"] == [4, 1, 0] and saved["ffn_dim"] == [64, 7, 0]
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    ids, mask = inputs()
    assert torch.equal(logits(model, ids, mask), logits(loaded, ids, mask))


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_variants_run_and_train(norm, pooling):
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=4, ffn_dim=64, num_labels=3, norm=norm, pooling=pooling)
    model = SlimformerForSequenceClassification(config)
    ids, mask = inputs()
    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 2]), output_hidden_states=True)
    assert out.logits.shape == (3, 3)
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape == (3, 10, 32)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "pos" not in n and "tok" not in n)


def test_padding_does_not_change_logits(tiny_config):
    """An example padded with more [PAD] columns gets the same logits (mean pooling, key masking)."""
    model = SlimformerForSequenceClassification(tiny_config).eval()
    ids = torch.randint(5, 60, (1, 7))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 5)], dim=1).long()
    torch.testing.assert_close(logits(model, ids, torch.ones_like(ids)), logits(model, padded, mask), atol=1e-5, rtol=1e-5)


def test_too_long_input_is_a_clear_error(tiny_config):
    model = SlimformerForSequenceClassification(tiny_config)
    with pytest.raises(ValueError, match="max_len=24"):
        model(input_ids=torch.ones(1, 25, dtype=torch.long))


def test_bad_config_values_are_errors():
    with pytest.raises(ValueError, match="one per layer"):
        SlimformerConfig(n_layers=2, n_heads=[4])
    with pytest.raises(ValueError, match="pooling"):
        SlimformerConfig(pooling="max")


@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_attention_contract(kind):
    """Every registered kind: (B, T, dim) in and out, shared projection names, masking, backward."""
    torch.manual_seed(0)
    attn = ATTENTION[kind](dim=32, n_heads=4, head_dim=8, dropout=0.0).eval()
    for name in ("q_proj", "k_proj", "v_proj"):
        assert getattr(attn, name).weight.shape == (32, 32)
    assert attn.out_proj.weight.shape == (32, 32)
    assert attn.n_heads == 4
    x = torch.randn(2, 12, 32, requires_grad=True)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    y = attn(x, mask)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None
    # masked keys do not influence the real positions
    x2 = x.detach().clone()
    x2[1, 8:] = torch.randn(4, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn(x.detach(), mask)[1, :8], attn(x2, mask)[1, :8], atol=1e-5, rtol=1e-5)


def test_full_attention_matches_a_reference():
    """Full attention equals a hand-written softmax(QK^T/sqrt(d))V with the key mask."""
    torch.manual_seed(0)
    attn = ATTENTION["full"](dim=16, n_heads=2, head_dim=8).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    q, k, v = (p(x).view(2, 5, 2, 8).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    scores = q @ k.transpose(-1, -2) / 8**0.5  # (B, n_heads, T, T)
    scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    ref = attn.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 16))
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask), ref, atol=1e-5, rtol=1e-5)


def test_loads_with_remote_code_without_slimformer(tmp_path):
    """A saved folder carries its code: a fresh process that cannot import slimformer loads it."""
    config = SlimformerConfig(vocab_size=60, max_len=24, dim=32, n_layers=2, n_heads=[4, 2], head_dim=8, ffn_dim=[64, 32], num_labels=3)
    torch.manual_seed(0)
    model = SlimformerForSequenceClassification(config)
    model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "modeling_slimformer.py").is_file()
    ids, mask = inputs()
    expected = logits(model, ids, mask)
    torch.testing.assert_close(remote_code_logits(tmp_path / "model", ids, mask, tmp_path), expected, atol=0, rtol=0)
