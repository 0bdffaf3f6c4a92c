"""The one type of a checkpoint as a command or a config names it: 'bundled', 'baseline', 'ensemble' or a path.

Every command that takes a checkpoint (``--checkpoint``, ``--init``,
``--baseline``, ``run``'s ``--seg-checkpoint`` / ``--syn-checkpoint``) parses it
with ``checkpoint_argument`` and means the same by the words: "bundled" is the
model family's bundled model, "baseline" the family's bundled baseline,
"ensemble" the family's bundled ensemble of the two (the default of ``run`` and
the Slicer module: for segmentation the mean of the two networks' probabilities,
for synthesis the blend of M2DN and the regression), any other text a ``.pt`` file. ``medmodels.weights.resolve_checkpoint`` is the one
place that turns a reference into a file.

``CheckpointRef`` is a ``str``, so configs that hold one stay JSON-able
(``history.json``) and compare equal to the text they were given. Torch-free:
the command line's parsers and the Slicer module import it.
"""

from __future__ import annotations

import argparse
import os

from medmodels.errors import InputError

BUNDLED, BASELINE, ENSEMBLE, PATH = "bundled", "baseline", "ensemble", "path"


class CheckpointRef(str):
    """A checkpoint reference: ``"bundled"``, ``"baseline"``, ``"ensemble"`` or the path of a ``.pt`` file.

    Args:
        value: the text (or path) given; empty text raises ``InputError``.
    """

    __slots__ = ()

    def __new__(cls, value: str | os.PathLike) -> CheckpointRef:
        text = os.fspath(value)
        if not str(text).strip():
            raise InputError(
                "An empty checkpoint was given: give 'bundled', 'baseline', 'ensemble' or the path of a .pt file."
            )
        return super().__new__(cls, text)

    @property
    def kind(self) -> str:
        """``BUNDLED``, ``BASELINE``, ``ENSEMBLE`` or ``PATH`` (a file named 'bundled' is given as ``./bundled``)."""
        return str(self) if self in (BUNDLED, BASELINE, ENSEMBLE) else PATH


def checkpoint_argument(text: str) -> CheckpointRef:
    """argparse ``type`` of every checkpoint flag: the reference, or the flag's error."""
    try:
        return CheckpointRef(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
