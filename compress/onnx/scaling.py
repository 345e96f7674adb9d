"""The models the attention scaling benchmark times (`slimformer bench --scaling`, `eval/scaling.py`).

One small untrained classifier per attention kind: the same shape and seed for every kind
(timing does not depend on the weights), `max_len` = the longest length measured, exported to
ONNX once with a dynamic sequence axis and checked against torch on a short padded batch.
"""

from pathlib import Path

import torch

from compress.errors import RecipeError
from compress.models import ATTENTION, SlimformerConfig, SlimformerForSequenceClassification
from compress.onnx.export import check_parity, export_onnx


def check_kinds(kinds: list[str]) -> None:
    """RecipeError naming the kinds that are not registered."""
    unknown = [k for k in kinds if k not in ATTENTION]
    if unknown:
        raise RecipeError(f"unknown attention kind(s) {unknown}; choose from {sorted(ATTENTION)}")


def build_model(cfg, kind: str) -> SlimformerForSequenceClassification:
    """The benchmark classifier for `kind` (cfg: `eval.scaling.ScalingConfig`), seed 0, in eval mode."""
    config = SlimformerConfig(vocab_size=cfg.vocab_size, max_len=cfg.longest(), dim=cfg.dim, n_layers=cfg.n_layers,
                              n_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim, attention=cfg.attention(kind), num_labels=2, dropout=0.0)
    torch.manual_seed(0)
    return SlimformerForSequenceClassification(config).eval()


def export_model(model, path: Path) -> dict:
    """Export with a dynamic sequence axis and check parity on a short padded batch."""
    g = torch.Generator().manual_seed(0)
    n = min(200, model.config.max_len)
    ids = torch.randint(5, model.config.vocab_size, (2, n), generator=g)
    mask = torch.ones_like(ids)
    mask[1, (3 * n) // 4 :] = 0
    export_onnx(model, path, (ids, mask))
    return check_parity(model, path, ids, mask, atol=1e-4)
