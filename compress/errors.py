"""The errors slimformer raises on bad input.

Every error a user can cause derives from `SlimformerError`; the CLI prints its message
and exits with code 2. Messages name the field or file at fault and say how to fix it.
"""


class SlimformerError(Exception):
    """Base class: a mistake in the user's input, reported without a traceback."""


class RecipeError(SlimformerError):
    """A recipe that does not validate: unknown key, wrong type, value out of range."""


class DataError(SlimformerError):
    """A data file that cannot be used: missing, unreadable, missing a column, empty split."""


class ExportError(SlimformerError):
    """An ONNX export that failed or whose outputs differ from the source model."""


class TrainingError(SlimformerError):
    """Training that cannot go on: non-finite loss, out of memory."""


class CheckpointError(SlimformerError):
    """A pretrained checkpoint folder that cannot be imported: missing files, unsupported architecture or weights."""
