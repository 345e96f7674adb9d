"""Swap recovery (issue 15): every kind at 4096 tokens with heavy padding, one-layer swaps, Linformer's
shared E and k from the length, BigBird's global first block, Performer's redraw schedule in the one
training loop, attention-output distillation, and extending learned positions."""

import copy

import pytest
import torch
from pydantic import ValidationError

from compress.models import ATTENTION, SlimformerConfig, SlimformerForSequenceClassification
from compress.models.attention_linformer import default_k
from compress.steps.swap import SwapAttentionConfig, swap_attention_
from compress.training.loop import OptimConfig, train
from compress.training.recover import AttentionOutputs, attention_output_loss, distillation_loss
from tests.helpers import logits, padded_batch

LONG = 4096


def model_of(attention, dim=32, n_layers=2, n_heads=4, max_len=40, seed=0) -> SlimformerForSequenceClassification:
    config = SlimformerConfig(vocab_size=60, max_len=max_len, dim=dim, n_layers=n_layers, n_heads=n_heads,
                              head_dim=dim // n_heads, ffn_dim=2 * dim, num_labels=3, attention=attention, dropout=0.0)
    torch.manual_seed(seed)
    return SlimformerForSequenceClassification(config).eval()


# --------------------------------------------------------------------------- 4096 tokens, heavy padding

LONG_ARGS = {"full": {}, "bigbird": {"block": 64}, "linformer": {"k": 256, "max_len": LONG}, "performer": {"n_features": 32}}


@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_every_kind_is_finite_and_ignores_padding_at_4096_tokens(kind):
    """dim 16, 1 layer, 4096 positions: example 0 has 97 real tokens, example 1 a 1500-token hole; the
    padded positions' ids are then replaced by other tokens, and the real positions' outputs must not move."""
    model = model_of({"kind": kind, **LONG_ARGS.get(kind, {})}, dim=16, n_layers=1, n_heads=2, max_len=LONG)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (2, LONG), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 97:] = 0  # 98% padding
    mask[1, 1000:2500] = 0  # a hole in the middle
    other = torch.where(mask.bool(), ids, torch.randint(5, 60, ids.shape, generator=g))  # different tokens under the padding
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        a = out.hidden_states[-1]  # (2, 4096, 16): the layer's output
        b = model.encode(other, mask)  # after the final norm: a per-position map, so real positions compare alike
    a = model.norm(a)
    real = mask.bool()
    assert torch.isfinite(a).all() and torch.isfinite(out.logits).all()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)


def test_bigbird_first_block_is_global():
    """n_global = 1: position 0 ([CLS]) reads a far key, and a far query reads position 0; keys outside the
    window, the global block and the (here absent) random blocks are not read at all."""
    torch.manual_seed(0)
    attn = ATTENTION["bigbird"](dim=16, n_heads=2, head_dim=8, block=8, window=3, n_global=1, n_random=0).eval()
    x = torch.randn(1, 256, 16, requires_grad=True)
    y = attn(x)
    first_from_far = torch.autograd.grad(y[0, 0].sum(), x, retain_graph=True)[0][0]  # (256, 16)
    far_from_all = torch.autograd.grad(y[0, 200].sum(), x)[0][0]
    assert first_from_far[200].abs().sum() > 0  # the global query attends every key
    assert far_from_all[0].abs().sum() > 0  # every query attends the global block
    assert far_from_all[100].abs().sum() == 0  # block 12 is neither global, in block 25's window, nor random


# --------------------------------------------------------------------------- one layer at a time

def test_layer_indices_in_a_recipe_are_globs():
    assert SwapAttentionConfig(to="performer", layers=[1]).layers == ["1"]
    assert SwapAttentionConfig(to="performer", layers=0).layers == ["0"]


def test_swapping_one_layer_keeps_the_others_full_and_untouched():
    model = model_of("full")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swap_attention_(model, "performer", {"n_features": 16}, SwapAttentionConfig(to="performer", layers=[1]).layers)
    assert type(model.layers[0].attn) is ATTENTION["full"] and type(model.layers[1].attn) is ATTENTION["performer"]
    assert model.config.attention[0] == {"kind": "full"} and model.config.attention[1]["kind"] == "performer"
    after = model.state_dict()
    for name, value in before.items():
        if not name.startswith("layers.1.attn."):
            assert torch.equal(after[name], value), name
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):  # the swapped layer keeps its projections too
        assert torch.equal(after[f"layers.1.attn.{proj}.weight"], before[f"layers.1.attn.{proj}.weight"])


# --------------------------------------------------------------------------- Linformer: k from the length, shared E

def test_linformer_k_from_the_length():
    assert [default_k(n) for n in (40, 100, 512, 1024, 4096)] == [40, 64, 128, 256, 1024]
    model = swap_attention_(model_of("full", max_len=512), "linformer")
    assert [model.layers[i].attn.k for i in (0, 1)] == [128, 128]
    assert model.config.attention[0] == {"kind": "linformer", "k": 128, "max_len": 512}
    assert swap_attention_(model_of("full", max_len=512), "linformer", {"k": 32}).layers[0].attn.k == 32  # given k wins


def test_linformer_shared_e_is_one_parameter_set_and_reloads_shared(tmp_path):
    unshared = swap_attention_(model_of("full", n_layers=3), "linformer", {"k": 8})
    shared = swap_attention_(model_of("full", n_layers=3), "linformer", {"k": 8, "share_layers": True})
    names = [n for n, _ in shared.named_parameters(remove_duplicate=False) if n.endswith((".E", ".F"))]
    assert len(names) == 6 and len({id(p) for n, p in shared.named_parameters(remove_duplicate=False) if n in names}) == 2
    assert len([n for n, _ in shared.named_parameters() if n.endswith(".E")]) == 1  # one E (and one F) for all layers
    e_size = unshared.layers[0].attn.E.numel()
    assert sum(p.numel() for p in unshared.parameters()) - sum(p.numel() for p in shared.parameters()) == 2 * 2 * e_size
    with torch.no_grad():
        shared.layers[0].attn.E.mul_(0.5)  # trained: no longer the initial segment means
    assert torch.equal(shared.layers[2].attn.E, shared.layers[0].attn.E)
    shared.save_pretrained(tmp_path)
    loaded = SlimformerForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.layers[1].attn.E is loaded.layers[0].attn.E and loaded.layers[2].attn.F is loaded.layers[0].attn.F
    ids, mask = padded_batch(3, 21)
    torch.testing.assert_close(logits(loaded, ids, mask), logits(shared, ids, mask), atol=0, rtol=0)


# --------------------------------------------------------------------------- attention-output distillation

def test_attention_output_loss_is_zero_for_the_teacher_itself_and_positive_after_a_swap():
    teacher = model_of("full")
    with torch.no_grad():  # peaked attention (at init q.k ~ 0: every kind computes a near-uniform average alike)
        for layer in teacher.layers:
            layer.attn.q_proj.weight.mul_(100)
            layer.attn.k_proj.weight.mul_(100)
    ids, mask = padded_batch(4, 21)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(4, dtype=torch.long)}
    student = copy.deepcopy(teacher)
    loss_fn = distillation_loss(teacher, temperature=2.0, alpha=1.0, attention_output=1.0, student=student)
    loss, _ = loss_fn(student, batch)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss_fn.remove()

    swap_attention_(student, "performer", {"n_features": 8}, ["1"])
    loss_fn = distillation_loss(teacher, temperature=2.0, alpha=1.0, attention_output=1.0, student=student)
    loss, _ = loss_fn(student, batch)
    logits_only, _ = distillation_loss(teacher, temperature=2.0, alpha=1.0)(student, batch)
    assert loss.item() - logits_only.item() > 1e-5  # the attention term adds to the logits term (outputs are small at init)
    loss.backward()
    assert student.layers[1].attn.q_proj.weight.grad.abs().sum() > 0
    loss_fn.remove()
    assert all(not layer.attn._forward_hooks for m in (student, teacher) for layer in m.layers)


def test_attention_output_loss_counts_real_tokens_only():
    model = model_of("full")
    ids, mask = padded_batch(2, 21)
    hooks = AttentionOutputs(model)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    student = {i: t.clone() for i, t in hooks.out.items()}
    student[0][mask == 0] += 5.0  # differences under the padding do not count
    assert attention_output_loss(student, hooks.out, mask).item() == 0.0
    student[0][0, 0] += 1.0
    assert attention_output_loss(student, hooks.out, mask).item() > 0
    hooks.remove()


def test_attention_output_needs_distillation_from_the_teacher():
    with pytest.raises(ValidationError, match="distill_from: teacher"):
        SwapAttentionConfig(to="linformer", recover={"attention_output": 1.0, "distill_from": "none"})


# --------------------------------------------------------------------------- Performer redraws in the one loop

def test_recovery_redraws_performer_features_every_n_steps_and_distils_attention_outputs():
    teacher = model_of("full")
    student = swap_attention_(copy.deepcopy(teacher), "performer", {"n_features": 16, "redraw_interval": 2}, ["*"])
    ids, mask = padded_batch(40, 12, seed=1)
    split = {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(40) % 3}
    loss_fn = distillation_loss(teacher, alpha=0.5, attention_output=1.0, student=student)
    cfg = OptimConfig(epochs=1, batch_size=8, lr=1e-3, max_steps=5, patience=None)
    try:
        student, curve = train(student, split, split, cfg, loss_fn, seed=0, device="cpu")
    finally:
        loss_fn.remove()
    # 5 optimiser steps = 5 training forwards: features redrawn before steps 3 and 5 (every 2), not in validation
    assert [student.layers[i].attn.redraws for i in (0, 1)] == [2, 2]
    assert curve[0]["step"] == 5 and curve[0]["train_loss"] > 0


# --------------------------------------------------------------------------- positions beyond the teacher's

def test_extend_positions_copy_keeps_short_inputs_and_accepts_long_ones(tmp_path):
    model = model_of("full", max_len=40)
    ids, mask = padded_batch(3, 40)
    before = logits(model, ids, mask)
    long_ids, long_mask = padded_batch(2, 100)
    with pytest.raises(ValueError, match="at most max_len=40"):
        logits(model, long_ids, long_mask)
    model.extend_positions_(100, "copy")
    assert model.config.max_len == 100 and model.embeddings.pos.weight.shape[0] == 100
    torch.testing.assert_close(logits(model, ids, mask), before, atol=0, rtol=0)
    assert torch.equal(model.embeddings.pos.weight[40:80], model.embeddings.pos.weight[:40])  # rows repeat the table
    assert torch.isfinite(logits(model, long_ids, long_mask)).all()
    model.save_pretrained(tmp_path)
    loaded = SlimformerForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(logits(loaded, long_ids, long_mask), logits(model, long_ids, long_mask), atol=0, rtol=0)


def test_extend_positions_interpolate_stretches_the_table():
    model = model_of("full", max_len=40)
    old = model.embeddings.pos.weight.detach().clone()  # (40, 32)
    model.extend_positions_(79, "interpolate")  # new row 2j sits exactly on old row j
    new = model.embeddings.pos.weight.detach()
    torch.testing.assert_close(new[::2], old, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(new[1], (old[0] + old[1]) / 2, atol=1e-6, rtol=1e-6)


def test_extend_positions_refuses_what_it_cannot_do():
    model = model_of("full", max_len=40)
    with pytest.raises(ValueError, match="must exceed"):
        model.extend_positions_(40)
    swapped = swap_attention_(model_of("full", max_len=40), "linformer", {"k": 8}, ["0"])
    with pytest.raises(ValueError, match="extend positions before swapping"):
        swapped.extend_positions_(80)
    # in the recipe order (extend, then swap) Linformer's E covers the new length
    model.extend_positions_(80)
    assert swap_attention_(model, "linformer", {}, ["0"]).layers[0].attn.E.shape == (64, 80)
