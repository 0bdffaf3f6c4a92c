"""``GridChain``: the grids of one case, from the input a user gave to a model's
working crop, and the one way back.

    input grid       the reference input's grid: what the user sees the outputs on
      | rigid registration of every other series onto the reference input, and
      | resampling (preparation.prepare_case; none when the inputs are BraTS-style)
    preparation grid where the models' inputs lie, and where outputs are post-processed
      | resampling to a model's spacing, crop to the brain (WorkingGrid.fit)
    working crop     where a model runs (one per model: each has its own spacing)

Going back, ``GridChain.inverse`` is the only map: from the stage an array is
on (``start``) to the stage a caller asks for (``to``), by the rule of its kind
(``KINDS``): intensities and probabilities linearly, label maps by the one
label rule (``labels_onto``). The rigid step needs no inverse: it moved the
other series onto the reference input, whose grid is the chain's input grid.

Thresholding and clean-up need the preparation grid: a thick-slice study's
probabilities taken straight to its 5 mm input grid and thresholded there
lost whole-tumour Dice (0.780 -> 0.725 on the scanned phantom study), so
models stop at "preparation" and the pipeline takes their outputs on to "input".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmodels.errors import InputError
from medmodels.image import Grid, Image
from medmodels.resampling import resample_stack
from medmodels.working_grid import WorkingGrid, check_on_grid

#: What goes back, and how: intensities (synthesised volumes, their spread, z-scores) and
#: probabilities are resampled linearly (0 outside the grid they come from); label maps by
#: ``labels_onto``. The one place where a kind picks its interpolation.
KINDS = {"intensity": "linear", "probability": "linear", "label": "label"}
#: The chain's grids from the model back to the user: where an inverse starts and stops.
STAGES = ("working", "preparation", "input")


def labels_onto(array: np.ndarray, source: Image | Grid, target: Image | Grid) -> np.ndarray:
    """The one rule that brings a label map onto another grid (``GridChain.inverse``'s "label").

    Each label's indicator is resampled linearly and the label with the largest
    share wins, so a coarse voxel takes the label most of the fine voxels it
    covers carry, not that of whichever one lies nearest; voxels outside
    ``source`` are 0 (background comes first, so it wins ties with nothing).

    Args:
        array: ``(..., Z, Y, X)`` integer labels on ``source``'s grid.
        source: the grid ``array`` is on (only its geometry is used).
        target: the grid to bring it onto (only its geometry is used).

    Returns:
        ``(..., z, y, x)`` labels on ``target``'s grid, in ``array``'s dtype.
    """
    array = np.asarray(array)
    values = np.union1d(np.unique(array), [0])  # 0 first: outside ``source`` is background
    shares = [resample_stack((array == v).astype(np.float32), source, target, "linear") for v in values]
    return values[np.argmax(np.stack(shares), axis=0)].astype(array.dtype)


def _index(value: str, allowed, what: str) -> int:
    """Position of ``value`` in ``allowed``, or an InputError naming what ``what`` may be."""
    if value not in allowed:
        raise InputError(f"Unknown {what} {value!r}: use one of {', '.join(repr(a) for a in allowed)}.")
    return list(allowed).index(value)


@dataclass(frozen=True, eq=False)
class GridChain:
    """The grids of one case and the way back from each (see the module's description).

    Build it with :meth:`on` (inputs already on one grid: input and
    preparation grid are that grid) or from ``preparation.prepare_case``
    (``Prepared.chain``); a model adds its working crop with :meth:`with_working`.

    Attributes:
        input: the reference input's grid.
        preparation: the grid the models are given (``input`` when nothing was resampled).
        working: a model's working crop on ``preparation`` (None until a model adds it).
    """

    input: Grid
    preparation: Grid
    working: WorkingGrid | None = None

    @classmethod
    def on(cls, grid: Image | Grid) -> GridChain:
        """The chain of inputs that need no preparation: ``grid`` is both input and preparation grid.

        Args:
            grid: the grid the inputs are on (an ``Image``'s voxels are not kept).
        """
        grid = grid.grid if isinstance(grid, Image) else grid
        return cls(grid, grid)

    def with_working(self, working: WorkingGrid) -> GridChain:
        """This chain with a model's working crop added.

        Args:
            working: the model's ``WorkingGrid``, fitted on images of the preparation grid.

        Raises:
            InputError: the working grid was fitted on another grid than the preparation grid.
        """
        if not working.reference.same_grid(self.preparation):
            raise InputError(
                f"The model's inputs ({working.reference.describe_grid()}) are not on the preparation grid "
                f"({self.preparation.describe_grid()}): give the model the prepared images."
            )
        return GridChain(self.input, self.preparation, working)

    def _grid(self, stage: str) -> Grid:
        if stage == "working":
            if self.working is None:
                raise InputError("This chain has no working crop: add the model's with GridChain.with_working.")
            return self.working.working.grid
        return self.input if stage == "input" else self.preparation

    def inverse(self, array: np.ndarray, kind: str, to: str, start: str = "working") -> np.ndarray:
        """``array`` from stage ``start`` back to stage ``to``, by the rule of its ``kind``.

        Each step between two grids that are one is skipped (the array comes
        back as it was); a step onto another grid resamples in physical space
        and gives 0 (background) where the grid it leaves does not reach.

        Args:
            array: ``(..., z, y, x)`` on the ``start`` grid (leading axes, e.g.
                channels, are resampled one by one).
            kind: "intensity" or "probability" (linear; float32) or "label"
                (``labels_onto``; the array's integer dtype kept).
            to: the stage to stop at: "preparation" (where outputs are
                thresholded and cleaned up) or "input" (the user's grid).
            start: the stage ``array`` is on: "working" (a model's crop) or "preparation".

        Returns:
            ``(..., Z, Y, X)`` on the ``to`` grid.

        Raises:
            InputError: an unknown kind or stage, a ``to`` that does not come
                after ``start`` in ``STAGES``, or an array not on the ``start`` grid.
        """
        _index(kind, KINDS, "kind")
        interpolation = KINDS[kind]
        first, last = _index(start, STAGES, "stage"), _index(to, STAGES, "stage")
        if last <= first:
            raise InputError(
                f"An inverse goes from the model to the user ({' -> '.join(STAGES)}): to={to!r} does not "
                f"come after start={start!r}."
            )
        source = self._grid(start)
        array = check_on_grid(array, source, "working crop" if start == "working" else f"{start} grid")
        for stage in STAGES[first + 1 : last + 1]:
            target = self._grid(stage)
            if not source.same_grid(target):
                if interpolation == "label":
                    array = labels_onto(array, source, target)
                else:
                    array = resample_stack(array, source, target, interpolation)
            source = target
        return array
