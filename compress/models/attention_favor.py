"""FAVOR+ positive orthogonal random features (Choromanski et al. 2021, "Rethinking Attention with Performers").

The kernel, kept apart from the layer (as in lucidrains' performer-pytorch):
    softmax kernel exp(q . k / sqrt(d)) ~= phi(q) . phi(k),
    phi(x) = exp(w_i . x' - |x'|^2 / 2) / sqrt(m) for the m rows w_i,  x' = x / d^(1/4),
an unbiased positive estimate when the w_i are Gaussian; drawing them as blocks of orthogonal
rows (with Gaussian norms) lowers its variance. A stabiliser is subtracted before `exp`: for a
query the max over its own features, for keys the max over every real key and feature; each is
a constant factor that cancels between the numerator and denominator of attention.
"""

import math

import torch

from .attention_common import MASKED

EPS = 1e-4  # added to every feature (as performer-pytorch): keeps the denominator away from 0


def orthogonal_features(n_features: int, head_dim: int, generator: torch.Generator) -> torch.Tensor:
    """(n_features, head_dim) rows: stacked blocks of orthonormal rows, each scaled to a Gaussian vector's norm."""
    blocks = []
    for _ in range(math.ceil(n_features / head_dim)):
        q, r = torch.linalg.qr(torch.randn(head_dim, head_dim, generator=generator))
        q = q * torch.sign(torch.diagonal(r))[None, :]  # sign fix: uniformly random (Haar) rotation, else directions are biased
        blocks.append(q.T)  # (head_dim, head_dim), orthonormal rows
    rows = torch.cat(blocks)[:n_features]
    norms = torch.randn(n_features, head_dim, generator=generator).norm(dim=1)  # chi(head_dim) lengths
    return rows * norms[:, None]


def positive_features(x: torch.Tensor, features: torch.Tensor, is_query: bool, real: torch.Tensor | None = None) -> torch.Tensor:
    """phi(x): (B, H, T, head_dim) -> (B, H, T, n_features), positive.

    `real` (B, T), for keys: only real keys set the stabiliser (padded ones are zeroed by the caller).
    """
    d, m = x.shape[-1], features.shape[0]
    x = x * d**-0.25
    logits = x @ features.T - (x * x).sum(dim=-1, keepdim=True) / 2  # (B, H, T, m)
    if is_query:
        stabiliser = logits.amax(dim=-1, keepdim=True)  # (B, H, T, 1)
    else:
        if real is not None:  # padded keys: exp underflows to 0 and cannot overflow whatever their values
            logits = logits.masked_fill(~real[:, None, :, None], MASKED)
        stabiliser = logits.amax(dim=(-2, -1), keepdim=True)  # (B, H, 1, 1)
    return (torch.exp(logits - stabiliser.detach()) + EPS) * m**-0.5
