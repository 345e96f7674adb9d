"""The root of every error a user can cause, and the one `eval` raises.

`SlimformerError` lives here, in the lower of the two packages, so that `eval` (measuring,
reports, checks) and `compress` (the library, which builds on `eval`) raise one family of
errors: the CLI prints the message of any of them and exits with code 2. Messages name the
file or field at fault and say how to fix it. `compress/errors.py` adds the library's kinds.
"""


class SlimformerError(Exception):
    """Base class: a mistake in the user's input, reported without a traceback."""


class ReportError(SlimformerError):
    """A run folder, results file or thresholds file that cannot be measured, reported or checked."""
