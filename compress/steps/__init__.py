"""Importing this module registers every pipeline step (one file per method).

Only the recipe schema (`compress/run/config.py`, which builds the `steps:` union from the full
registry) and the CLI import it; steps never import each other.
"""

from compress.run.registry import STEPS
from compress.steps import (  # noqa: F401
    baseline,
    distill,
    export,
    measure,
    pretrain,
    prune,
    prune_vocab,
    prune_width,
    quantize,
    swap,
    train,
)

__all__ = ["STEPS"]
