"""prune_width: torch-pruning narrows the residual stream and every tensor coupled to it at the same channels.

What is exact, and tested: every kept weight is the original's at the kept channels; the pruned model
computes what the original computes when the removed channels are zeroed wherever the stream is
written AND every LayerNorm takes its mean and variance over the kept channels only; it saves,
reloads with `from_pretrained` to identical logits and exports to ONNX within the parity gate.
What is not: zeroing the removed channels alone does not reproduce the pruned model, because a
LayerNorm over more channels has other statistics (asserted below, so nobody "fixes" a test to it).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from compress.errors import RecipeError
from compress.models import ATTENTION, SlimformerConfig, SlimformerForSequenceClassification
from compress.models.attention_full import FullAttention
from compress.steps.prune_width import (
    PruneWidthConfig,
    channel_scores,
    check_reload,
    expected_cuts,
    kept_width,
    prune_width_,
    residual_group,
)
from tests.helpers import logits, padded_batch

SHAPES = {  # pre-LN (self-built), post-LN with a dense head (imported BERT-like), narrow embeddings + projection (ELECTRA-like)
    "pre": {},
    "post_head": {"norm": "post", "head_activation": "tanh"},
    "proj": {"embed_dim": 16, "norm": "post", "head_activation": "gelu"},
}
KIND_ARGS = {"linformer": {"k": 4, "max_len": 16}, "performer": {"n_features": 8}, "bigbird": {"block": 4}}
DROP = [1, 2, 5, 11, 17, 20, 26, 31]  # 8 of 32 channels


def tiny(**overrides) -> SlimformerForSequenceClassification:
    """A dim-32 model with every parameter perturbed (LayerNorms off 1/0), so a misplaced cut shows in the numbers."""
    torch.manual_seed(0)
    config = {"vocab_size": 60, "max_len": 16, "dim": 32, "n_layers": 2, "n_heads": 2, "ffn_dim": 48, "num_labels": 3,
              "dropout": 0.0} | overrides
    model = SlimformerForSequenceClassification(SlimformerConfig(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    return model


def example(ids, mask):
    return {"input_ids": ids[:2], "attention_mask": mask[:2]}


def sliced(name: str, tensor: torch.Tensor, cuts: dict, keep: list[int]) -> torch.Tensor:
    """The original tensor `name` at the kept channels of whichever side carries the stream."""
    module, _, param = name.rpartition(".")
    side = cuts.get(module)
    if side is None:
        return tensor
    if module in ("embeddings.tok", "embeddings.pos"):
        return tensor[:, keep]  # (rows, dim): the width is the second axis
    if side == "out":
        return tensor[keep]  # Linear rows and bias, LayerNorm weight and bias
    return tensor[:, keep] if param == "weight" else tensor  # Linear input columns; the bias is per output


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_coupled_tensor_is_cut_at_the_same_channels(shape):
    model = tiny(**SHAPES[shape])
    original = {k: v.clone() for k, v in model.state_dict().items()}
    cuts = expected_cuts(model)
    ids, mask = padded_batch(4, 12)
    prune_width_(model, DROP, example(ids, mask))
    keep = [c for c in range(32) if c not in DROP]
    assert model.config.dim == 24 and model.config.head_dim == 16
    assert model.config.n_heads == [2, 2] and model.config.ffn_dim == [48, 48]
    for layer in model.layers:  # only the residual side shrank
        assert layer.attn.q_proj.weight.shape == (32, 24) and layer.attn.out_proj.weight.shape == (24, 32)
        assert layer.mlp.up_proj.weight.shape == (48, 24) and layer.mlp.down_proj.weight.shape == (24, 48)
    assert model.classifier.out_features == 3
    if model.classifier_dense is not None:  # the head keeps its own width
        assert model.classifier_dense.weight.shape == (32, 24) and model.config.classifier_dim == 32
    if shape == "proj":
        assert model.embeddings.tok.weight.shape == (60, 16) and model.embeddings.proj.weight.shape == (24, 16)
    pruned = model.state_dict()
    assert pruned.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(pruned[name], sliced(name, tensor, cuts, keep)), name


def masked_reference(original: nn.Module, keep: list[int], ids, mask) -> torch.Tensor:
    """The original model with the removed channels zeroed at every writer of the stream and every
    LayerNorm on the stream normalising over the kept channels only (zeros elsewhere)."""
    ref = copy.deepcopy(original)
    drop = [c for c in range(ref.config.dim) if c not in keep]
    modules = dict(ref.named_modules())

    def kept_only(module, args, out):
        y = torch.zeros_like(out)
        x = args[0][..., keep]
        y[..., keep] = F.layer_norm(x, (len(keep),), module.weight[keep], module.bias[keep], module.eps)
        return y

    with torch.no_grad():
        for name, side in expected_cuts(ref).items():
            module = modules[name]
            if isinstance(module, nn.LayerNorm):
                module.register_forward_hook(kept_only)
            elif side == "out" and isinstance(module, nn.Linear):
                module.weight[drop] = 0.0
                module.bias[drop] = 0.0
    return logits(ref, ids, mask)


def zeroed_only(original: nn.Module, keep: list[int], ids, mask) -> torch.Tensor:
    """The original with the removed channels zeroed everywhere they are written or scaled, LayerNorms unchanged."""
    ref = copy.deepcopy(original)
    drop = [c for c in range(ref.config.dim) if c not in keep]
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for name, side in expected_cuts(ref).items():
            module = modules[name]
            if isinstance(module, nn.Embedding):
                module.weight[:, drop] = 0.0
            elif side == "out":
                module.weight[drop] = 0.0
                module.bias[drop] = 0.0
    return logits(ref, ids, mask)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_pruned_model_equals_the_original_with_layernorm_over_the_kept_channels(shape):
    model = tiny(**SHAPES[shape])
    original = copy.deepcopy(model)
    ids, mask = padded_batch(4, 12)
    prune_width_(model, DROP, example(ids, mask))
    keep = [c for c in range(32) if c not in DROP]
    got = logits(model, ids, mask)
    diff = float((got - masked_reference(original, keep, ids, mask)).abs().max())
    assert diff <= 1e-5, f"{shape}: pruned vs masked reference differ by {diff:.2e}"
    # what does NOT hold: zeroing the channels leaves LayerNorm's statistics over all 32 channels
    assert float((got - zeroed_only(original, keep, ids, mask)).abs().max()) > 1e-3


def test_pruned_model_reloads_and_exports_with_parity(tmp_path):
    from compress.onnx.export import check_parity, export_onnx

    model = tiny(**SHAPES["post_head"])
    ids, mask = padded_batch(4, 12)
    group = residual_group(model, example(ids, mask))
    scores = channel_scores(model, group, "taylor",
                            [{"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 0])}])
    assert scores.shape == (32,) and torch.isfinite(scores).all() and all(p.grad is None for p in model.parameters())
    drop = sorted(torch.argsort(scores)[:8].tolist())
    prune_width_(model, drop, example(ids, mask))
    assert check_reload(model, ids, mask) == 0.0
    again = SlimformerForSequenceClassification.from_pretrained(_saved(model, tmp_path / "model"))
    assert again.config.dim == 24 and again.config.classifier_dim == 32
    export_onnx(model, tmp_path / "model.onnx", (ids, mask))
    assert check_parity(model, tmp_path / "model.onnx", ids, mask, atol=1e-4)["max_abs_diff"] <= 1e-4


def _saved(model, folder):
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_every_attention_kind_and_pruned_away_branches(kind):
    spec = {"kind": kind, **KIND_ARGS.get(kind, {})}
    model = tiny(attention=spec, n_heads=[2, 0], ffn_dim=[0, 48])  # layer 0 lost its MLP, layer 1 its attention
    ids, mask = padded_batch(4, 16)
    scores = channel_scores(model, residual_group(model, example(ids, mask)), "magnitude", [])
    prune_width_(model, sorted(torch.argsort(scores)[:16].tolist()), example(ids, mask))
    assert model.config.dim == 16 and model.layers[1].norm1.weight.shape == (16,), "the unused LayerNorms are cut too"
    assert logits(model, ids, mask).shape == (4, 3)
    assert check_reload(model, ids, mask) == 0.0


class Gained(FullAttention):
    """Full attention with a per-channel gain on its input: a tensor coupled to the stream that must not be cut."""

    kind = "gained"

    def __init__(self, *args):
        super().__init__(*args)
        self.gain = nn.Parameter(torch.ones(32))

    def forward(self, x, mask=None):
        return super().forward(x * self.gain, mask)


class Opaque(FullAttention):
    """Full attention computed on a detached input: torch-pruning's trace cannot follow the stream into it."""

    kind = "opaque"

    def forward(self, x, mask=None):
        return super().forward(x.detach(), mask)


def swapped(model, i: int, cls) -> nn.Module:
    attn = cls(32, 2, 16)
    attn.load_state_dict(model.layers[i].attn.state_dict(), strict=False)
    model.layers[i].attn = attn
    return model


def test_untraceable_or_coupled_attention_is_a_clear_error():
    ids, mask = padded_batch(4, 12)
    model = swapped(tiny(), 0, Gained)
    with pytest.raises(RecipeError, match=r"gained.*also cut \{'layers\.0\.attn\.gain'"):
        prune_width_(model, DROP, example(ids, mask))
    assert model.config.dim == 32 and model.layers[0].attn.q_proj.in_features == 32, "nothing was cut"
    with pytest.raises(RecipeError, match=r"opaque.*did not reach \['layers\.1\.attn\.k_proj'"):
        residual_group(swapped(tiny(), 1, Opaque), example(ids, mask))


def test_config_and_width_rules():
    assert kept_width(384, PruneWidthConfig(amount=0.3)) == 272  # 268.8 -> nearest multiple of 8
    assert kept_width(32, PruneWidthConfig(amount=0.9)) == 8  # never below round_to
    assert kept_width(384, PruneWidthConfig(dim=256)) == 256
    with pytest.raises(ValidationError, match="exactly one of `amount`"):
        PruneWidthConfig(amount=0.25, dim=256)
    with pytest.raises(ValidationError, match="not a multiple of round_to 8; use 96 or 104"):
        PruneWidthConfig(dim=100)
    with pytest.raises(ValidationError):
        PruneWidthConfig(amount=0.25, importance="random")
    model = tiny(embed_dim=24)
    ids, mask = padded_batch(4, 12)
    with pytest.raises(ValueError, match="equals embed_dim"):
        prune_width_(model, DROP, example(ids, mask))
