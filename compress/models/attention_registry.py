"""The attention registry and the contract every attention kind obeys.

Contract (STYLE.md, "The model and the attention seam"):
    module = ATTENTION[kind](dim=dim, n_heads=n_heads, head_dim=head_dim, dropout=p, **args)
    y = module(x, mask)        # x: (B, T, dim), mask: (B, T) with 1/True for real tokens, or None
    y.shape == (B, T, dim)
Every kind owns `q_proj`, `k_proj`, `v_proj` (dim -> n_heads * head_dim) and `out_proj`
(n_heads * head_dim -> dim) under these names, so weights move between kinds with
`load_state_dict(strict=False)` and pruning/quantization find the same Linears everywhere.
`n_heads` is read from the weight shapes, never stored beside them.

This file sits beside the model file (not under compress/attention/) because transformers'
remote-code loader copies only same-folder modules into a saved model folder: a folder saved
by slimformer then loads with `trust_remote_code=True` on a machine without slimformer.
"""

from torch import nn

ATTENTION: dict[str, type[nn.Module]] = {}


def register_attention(kind: str):
    """Class decorator: make an attention module available under `kind` (the name users write)."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if kind in ATTENTION and ATTENTION[kind] is not cls:
            raise ValueError(f"attention kind {kind!r} is registered twice")
        ATTENTION[kind] = cls
        cls.kind = kind
        return cls

    return decorator


def build_attention(spec: dict, dim: int, n_heads: int, head_dim: int, dropout: float) -> nn.Module:
    """Build one layer's attention from its config entry `{"kind": ..., **args}`."""
    args = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if kind not in ATTENTION:
        raise ValueError(f"unknown attention kind {kind!r}; choose one of {sorted(ATTENTION)}")
    return ATTENTION[kind](dim=dim, n_heads=n_heads, head_dim=head_dim, dropout=dropout, **args)
