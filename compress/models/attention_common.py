"""Pieces every attention kind shares: the four projections and the head reshapes.

Each kind owns `q_proj`, `k_proj`, `v_proj` (dim -> n_heads * head_dim) and `out_proj`
(n_heads * head_dim -> dim) under these names (the contract in `attention_registry.py`);
`add_projections` creates them so the kinds cannot drift apart. Like every file beside the
model, this imports only torch.
"""

import torch
from torch import nn

MASKED = -1e30  # score of a masked key: exp(MASKED - max) is exactly 0 in fp32, and a fully masked row stays finite


def add_projections(module: nn.Module, dim: int, n_heads: int, head_dim: int) -> None:
    """Give `module` the contract's `q_proj`, `k_proj`, `v_proj` and `out_proj` Linears."""
    module.head_dim = head_dim
    module.q_proj = nn.Linear(dim, n_heads * head_dim)
    module.k_proj = nn.Linear(dim, n_heads * head_dim)
    module.v_proj = nn.Linear(dim, n_heads * head_dim)
    module.out_proj = nn.Linear(n_heads * head_dim, dim)


def split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, T, n_heads * head_dim) -> (B, n_heads, T, head_dim)."""
    B, T, _ = x.shape
    return x.view(B, T, -1, head_dim).transpose(1, 2)


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(B, n_heads, T, head_dim) -> (B, T, n_heads * head_dim)."""
    B, _, T, _ = y.shape
    return y.transpose(1, 2).reshape(B, T, -1)


def project_qkv(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of `x` (B, T, dim), each (B, n_heads, T, head_dim)."""
    return tuple(split_heads(proj(x), module.head_dim) for proj in (module.q_proj, module.k_proj, module.v_proj))


def key_mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The padding mask as booleans (B, T), all True when there is none."""
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return mask.to(torch.bool)
