"""Linformer attention (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity").

Keys and values are projected along the sequence to `k` rows by learned matrices `E` and `F`
of shape (k, max_len): K' = E[:, :T] K, V' = F[:, :T] V, then softmax(Q K'^T / sqrt(d)) V'
costs T * k instead of T^2. Inputs shorter than `max_len` use the leading columns, as in the
paper's fixed-length setting. `share_kv` uses E for values too (the paper's key-value sharing);
`per_head` gives every head its own E (and F), shape (n_heads, k, max_len), instead of one
shared by the heads of the layer (the paper's headwise sharing, our default).

`share_layers` ties E (and F) across every layer that sets it (the paper's layerwise sharing:
one projection for the whole encoder); the model ties them on build (`tie_shared_projections_`
in `modeling_slimformer.py`), so a saved model reloads shared. The layers must agree on `k`,
`max_len`, `per_head` and `share_kv`.

`k` from the length: a swap that does not give `k` takes `default_k(max_len)` =
min(max_len, max(64, max_len // 4)): a quarter of the positions, at least 64 (the paper's
smallest k, which already matched full attention at n = 512), never more than max_len.

Padding: padded keys and values are zeroed before projecting, so they cannot reach the output;
a projected row that sums no real position at all (possible when E has zeros, as at
initialisation) is masked out, so it does not dilute the attention either.

Initialisation starts close to full attention: row r of E and F averages the `ceil(max_len/k)`
consecutive positions of segment r, so the layer starts as attention over segment means of the
full model's keys and values; with k >= max_len that is the identity and the layer equals full
attention exactly.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention_common import MASKED, add_projections, key_mask, merge_heads, project_qkv
from .attention_registry import register_attention


def segment_means(k: int, max_len: int) -> torch.Tensor:
    """(k, max_len): row r averages positions [r * s, (r + 1) * s), s = ceil(max_len / k)."""
    s = math.ceil(max_len / k)
    rows = torch.arange(max_len) // s  # (max_len,) the row each position falls in
    weights = torch.zeros(k, max_len)
    weights[rows, torch.arange(max_len)] = 1.0 / s
    return weights


def default_k(max_len: int) -> int:
    """The projected length a swap uses when `k` is not given: a quarter of max_len, at least 64, at most max_len."""
    return min(max_len, max(64, max_len // 4))


@register_attention("linformer")
class LinformerAttention(nn.Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        head_dim: int,
        dropout: float = 0.0,
        k: int = 64,
        max_len: int = 512,
        share_kv: bool = False,
        per_head: bool = False,
        share_layers: bool = False,
    ):
        super().__init__()
        if k < 1 or max_len < 1:
            raise ValueError(f"linformer needs k >= 1 and max_len >= 1 (the longest input), got {k=}, {max_len=}")
        add_projections(self, dim, n_heads, head_dim)
        self.dropout, self.k, self.max_len, self.share_kv, self.per_head = dropout, k, max_len, share_kv, per_head
        self.share_layers = share_layers
        init = segment_means(k, max_len)
        init = init.expand(n_heads, k, max_len).clone() if per_head else init  # (n_heads, k, max_len) or (k, max_len)
        self.E = nn.Parameter(init)
        self.F = None if share_kv else nn.Parameter(init.clone())

    @property
    def n_heads(self) -> int:
        return self.q_proj.out_features // self.head_dim

    @classmethod
    def length_defaults(cls, max_len: int) -> dict:
        """Arguments a swap fills from the model's length when the recipe leaves them out."""
        return {"k": default_k(max_len), "max_len": max_len}

    def share_from_(self, owner: "LinformerAttention") -> None:
        """Use `owner`'s E (and F) Parameters in place of this layer's own (layerwise sharing)."""
        mine, theirs = (self.k, self.max_len, self.per_head, self.share_kv), (owner.k, owner.max_len, owner.per_head, owner.share_kv)
        if mine != theirs:
            raise ValueError(f"linformer layers sharing E need equal (k, max_len, per_head, share_kv); got {mine} and {theirs}")
        if self.per_head and self.E.shape != owner.E.shape:
            raise ValueError(f"linformer layers sharing per-head E need equal head counts; got {self.E.shape[0]} and {owner.E.shape[0]}")
        self.E, self.F = owner.E, owner.F
        # transformers' save_pretrained drops these duplicate names (the owner's copy is saved once); on load
        # the model ties them again on build, so the owner's loaded values fill every layer
        self._tied_weights_keys = {name: name for name in ("E", "F") if getattr(self, name) is not None}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        T = x.shape[1]
        if T > self.max_len and not torch.compiler.is_exporting():
            raise ValueError(f"linformer got {T} tokens but its projections cover max_len={self.max_len}; swap with a larger max_len")
        q, k, v = project_qkv(self, x)  # (B, H, T, d)
        real = key_mask(mask, x)[:, None, :, None].to(x.dtype)  # (B, 1, T, 1)
        E = self.E[..., :T]  # (k, T) or (H, k, T)
        Fv = E if self.F is None else self.F[..., :T]
        kp = E @ (k * real)  # (B, H, k, d)
        vp = Fv @ (v * real)  # (B, H, k, d)
        counts = (E.abs() @ real).transpose(-1, -2) > 0  # (B, 1 or H, 1, k): the row sums some real position
        scores = (q @ kp.transpose(-1, -2)) * self.head_dim**-0.5  # (B, H, T, k)
        p = F.dropout(scores.masked_fill(~counts, MASKED).softmax(dim=-1), self.dropout, self.training)
        return self.out_proj(merge_heads(p @ vp))
