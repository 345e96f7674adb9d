"""Importing this module registers every pipeline step (one file per method)."""

from compress import export, measure, train  # noqa: F401

from compress.pipeline import STEPS

__all__ = ["STEPS"]
