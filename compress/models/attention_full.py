"""Full softmax attention (Vaswani et al. 2017), the reference every other kind is measured against.

Uses `torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel on each
device and exports to ONNX as plain MatMul/Softmax; the `export` step then fuses that into one
`com.microsoft.MultiHeadAttention` per layer for ONNX Runtime (`compress/onnx/fuse_graph.py`: the
sdpa rule matches this graph, the boolean mask included, so keep the call as it is).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .attention_common import add_projections, merge_heads, project_qkv
from .attention_registry import register_attention


@register_attention("full")
class FullAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        add_projections(self, dim, n_heads, head_dim)

    @property
    def n_heads(self) -> int:
        return self.q_proj.out_features // self.head_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = project_qkv(self, x)  # each (B, n_heads, T, head_dim)
        # (B, 1, 1, T): a query may attend to real keys only; padded queries still see real keys
        attn_mask = None if mask is None else mask[:, None, None, :].to(torch.bool)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, n_heads, T, head_dim)
        return self.out_proj(merge_heads(y))  # (B, T, dim)
