"""Importing this module registers every pipeline step (one file per method).

Only the recipe schema (`compress/config.py`, which builds the `steps:` union from the full
registry) and the CLI import it; steps never import each other.
"""

from compress import baseline, distill, export, measure, pretrain, prune, prune_vocab, prune_width, quantize, swap, train  # noqa: F401
from compress.registry import STEPS

__all__ = ["STEPS"]
