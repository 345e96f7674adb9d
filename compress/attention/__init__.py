"""Attention kinds: the registry every kind is looked up in, and swapping between kinds.

The kinds themselves live beside the model file (`compress/models/attention_*.py`) so a saved
model folder carries their code for `trust_remote_code=True`; this package is where swapping
between kinds lives (`swap.py`: `swap_attention_` and the `swap_attention` step).
"""

from compress.attention.swap import SwapAttentionConfig, distillation_loss, swap_attention_
from compress.models.attention_registry import ATTENTION, build_attention, register_attention

__all__ = ["ATTENTION", "SwapAttentionConfig", "build_attention", "distillation_loss", "register_attention", "swap_attention_"]
