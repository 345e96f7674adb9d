"""Attention kinds: the registry every kind is looked up in.

The kinds themselves live beside the model file (`compress/models/attention_*.py`) so a saved
model folder carries their code for `trust_remote_code=True`; this package is where swapping
between kinds lives.
"""

from compress.models.attention_registry import ATTENTION, build_attention, register_attention

__all__ = ["ATTENTION", "build_attention", "register_attention"]
