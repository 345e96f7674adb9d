"""The errors slimformer raises on bad input.

Every error a user can cause derives from `SlimformerError` (defined in `eval/errors.py`, the
lower package, so both packages share one root); the CLI prints its message and exits with
code 2. Messages name the field or file at fault and say how to fix it.
"""

from eval.errors import ReportError, SlimformerError

__all__ = ["SlimformerError", "ReportError", "RecipeError", "DataError", "ExportError", "TrainingError", "CheckpointError",
           "ArtifactError"]


class RecipeError(SlimformerError):
    """A recipe that does not validate: unknown key, wrong type, value out of range."""


class DataError(SlimformerError):
    """A data file that cannot be used: missing, unreadable, missing a column, empty split."""


class ExportError(SlimformerError):
    """An ONNX export that failed or whose outputs differ from the source model."""


class TrainingError(SlimformerError):
    """Training that cannot go on: non-finite loss, out of memory."""


class CheckpointError(SlimformerError):
    """A pretrained checkpoint folder that cannot be imported: missing files, unsupported architecture."""


class ArtifactError(SlimformerError):
    """An exported ONNX folder that cannot be served: missing or truncated model.onnx, broken config.json, no tokenizer."""
