"""Performer attention with FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with Performers").

softmax(Q K^T / sqrt(d)) V is approximated by phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1), with
the positive orthogonal random features of `attention_favor.py`: time and memory are linear
in T (the (T, T) matrix is never formed). The `n_features` random rows are a buffer saved in
the state dict, so `from_pretrained` reproduces the outputs exactly and ONNX export freezes
them. In training mode they are redrawn every `redraw_interval` forward calls (0: never), from
a generator seeded by `seed` and the redraw count, so training is reproducible too.

Padded keys get zero features, so they are in neither the numerator nor the denominator.
There is no attention matrix to drop out: `dropout` is accepted for the contract and unused.
"""

import torch
from torch import nn

from .attention_common import add_projections, key_mask, merge_heads, project_qkv
from .attention_favor import orthogonal_features, positive_features
from .attention_registry import register_attention


@register_attention("performer")
class PerformerAttention(nn.Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        head_dim: int,
        dropout: float = 0.0,
        n_features: int = 128,
        redraw_interval: int = 1000,
        seed: int = 0,
    ):
        super().__init__()
        if n_features < 1 or redraw_interval < 0:
            raise ValueError(f"performer needs n_features >= 1 and redraw_interval >= 0 (0 = never), got {n_features=}, {redraw_interval=}")
        add_projections(self, dim, n_heads, head_dim)
        self.dropout, self.n_features, self.redraw_interval, self.seed = dropout, n_features, redraw_interval, seed
        self.redraws, self.calls = 0, 0  # how many times the features were redrawn; training forwards seen
        self.register_buffer("features", self.draw(0))  # (n_features, head_dim)

    @property
    def n_heads(self) -> int:
        return self.q_proj.out_features // self.head_dim

    def draw(self, redraw: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + redraw)
        return orthogonal_features(self.n_features, self.head_dim, generator)

    @torch.no_grad()
    def redraw_features_(self) -> None:
        """Draw new random features in place (training does this every `redraw_interval` calls)."""
        self.redraws += 1
        self.features.copy_(self.draw(self.redraws))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training and self.redraw_interval and not torch.compiler.is_exporting():
            if self.calls and self.calls % self.redraw_interval == 0:
                self.redraw_features_()
            self.calls += 1
        q, k, v = project_qkv(self, x)  # (B, H, T, d)
        real = key_mask(mask, x)  # (B, T)
        qf = positive_features(q, self.features, is_query=True)  # (B, H, T, m)
        kf = positive_features(k, self.features, is_query=False, real=real) * real[:, None, :, None].to(x.dtype)
        kv = kf.transpose(-1, -2) @ v  # (B, H, m, d)
        normaliser = qf @ kf.sum(dim=2).unsqueeze(-1)  # (B, H, T, 1)
        y = (qf @ kv) / normaliser.clamp(min=1e-30)  # (B, H, T, d)
        return self.out_proj(merge_heads(y))
