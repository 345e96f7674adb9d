"""Importing this module registers every pipeline step (one file per method)."""

from compress import distill, export, measure, prune, quantize, train  # noqa: F401

from compress.attention import swap  # noqa: F401
from compress.pipeline import STEPS

__all__ = ["STEPS"]
