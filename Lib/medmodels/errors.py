"""Exceptions that medmodels raises for problems a user can fix.

Every message names the problem and the fix, so the command line and the
Slicer module can show it as it is.
"""


class InputError(ValueError):
    """Bad input data or arguments: the message says what is wrong and how to fix it."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unrecorded, altered or does not fit the model."""
