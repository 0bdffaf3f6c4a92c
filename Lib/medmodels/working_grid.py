"""``WorkingGrid``: the one map from the grid a model is given to its working grid
(working spacing along the input's axes, cropped to the brain), used by
segmentation and synthesis for training and inference; ``working_zscores``,
every model's input. The way back is ``grid_chain.GridChain.inverse``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from medmodels.brain_mask import brain_mask
from medmodels.cropping import grow_span
from medmodels.errors import InputError
from medmodels.image import Grid, Image
from medmodels.modalities import MODALITY_KEYS
from medmodels.normalisation import Normalizer
from medmodels.resampling import resample_stack, working_geometry


def _per_axis(multiple_of) -> tuple[int, int, int]:
    """``multiple_of`` as ``(x, y, z)`` positive ints (one int = the same on all axes)."""
    values = (multiple_of,) * 3 if np.isscalar(multiple_of) else tuple(multiple_of)
    if len(values) != 3 or any(int(v) != v or v < 1 for v in values):
        raise InputError(f"multiple_of must be a positive integer or three of them (x, y, z), got {multiple_of!r}.")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _one_grid(images: Mapping[str, Image]) -> Image:
    """The grid all ``images`` share (an InputError if there is none or they differ)."""
    if not images:
        raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
    keys = list(images)
    ref = images[keys[0]]
    for key in keys[1:]:
        if not images[key].same_grid(ref):
            raise InputError(
                f"{key} ({images[key].describe_grid()}) is not on the grid of {keys[0]} "
                f"({ref.describe_grid()}): bring all inputs onto one grid first "
                "(medmodels.resampling.to_common_grid)."
            )
    return ref


def _brain_crop(brain: np.ndarray, reference: Image, full: Image, margin_mm: float, multiple_of) -> Image:
    """The part of ``full`` (a grid along ``reference``'s axes) that covers the
    brain's bounding box plus ``margin_mm``, grown to ``multiple_of``.

    The box is set in space: the brain's extent (input voxels are boxes of
    ``reference.spacing``) plus the margin, clipped to the field of view, is
    matched by the nearest run of working voxels, so the crop does not depend
    on how input and working voxels happen to line up.
    """
    d = np.asarray(reference.direction).reshape(3, 3)
    # Position of input voxel 0 in the full grid's axes, in mm (same axes, so per axis).
    offset = np.linalg.solve(d, np.asarray(reference.origin) - np.asarray(full.origin))
    start, size = [], []
    for a in range(3):  # x, y, z; array axis 2 - a
        idx = np.flatnonzero(brain.any(axis=tuple(i for i in range(3) if i != 2 - a)))
        extent = np.array([idx[0] - 0.5, idx[-1] + 0.5]) * reference.spacing[a] + offset[a]
        extent += np.array([-margin_mm, margin_mm])
        n, s = full.size_xyz[a], full.spacing[a]
        lo, hi = np.clip(extent / s, -0.5, n - 0.5)  # working voxel k spans [k - 0.5, k + 0.5]
        first = min(max(int(np.floor(lo + 1.0)), 0), n - 1)  # round(lo + 0.5)
        last = max(min(int(np.floor(hi)), n - 1), first)  # round(hi - 0.5)
        lo_i, hi_i = grow_span(first, last, n, 0, multiple_of[a], beyond=True)
        start.append(lo_i)
        size.append(hi_i - lo_i)
    origin = np.asarray(full.origin) + d @ (np.asarray(start) * np.asarray(full.spacing))
    return Image(np.zeros(size[::-1], dtype=np.uint8), full.spacing, tuple(origin), full.direction)


def check_on_grid(array: np.ndarray, grid: Image | Grid, name: str) -> np.ndarray:
    """``array`` as a numpy array, or an InputError if its last three axes are not ``grid``'s shape.

    Args:
        array: ``(..., Z, Y, X)`` data said to lie on ``grid``.
        grid: the grid it should lie on.
        name: what to call ``grid`` in the message (e.g. "working crop").
    """
    array = np.asarray(array)
    if array.ndim < 3 or tuple(array.shape[-3:]) != grid.shape:
        raise InputError(
            f"An array of shape {array.shape} is not on the {name} (its last three axes must "
            f"be {grid.shape}, i.e. (Z, Y, X)): pass data of that grid, or an Image."
        )
    return array


@dataclass(frozen=True, eq=False)
class WorkingGrid:
    """A model's working grid and the way there, for training and inference alike
    (the way back: ``grid_chain.GridChain.inverse``).

    The working grid is the input grid's field of view resampled to a
    working spacing along the input's own axes (``working_geometry``), then
    cropped to the brain's bounding box plus a margin (mm), grown to a multiple
    of what the network needs. Both grids keep their full geometry (origin,
    spacing, direction), so results go back to the input grid exactly where
    they belong, whatever the input's orientation (``GridChain``). Resampling is SimpleITK's
    (linear or nearest neighbour), in physical space.

    Build it with :meth:`fit`. Arrays are ``(Z, Y, X)``, optionally with
    leading channel axes ``(C, Z, Y, X)`` that are resampled one by one.

    Attributes:
        reference: the input grid; its array is the input brain mask (uint8).
        working: the working crop; its array is the brain mask on it (uint8:
            the input mask resampled linearly, above 0.5).
    """

    reference: Image
    working: Image

    @classmethod
    def fit(cls, images: Mapping[str, Image], spacing, margin_mm: float = 0.0, multiple_of=1) -> WorkingGrid:
        """The working grid of a case.

        Args:
            images: ``{key: Image}`` on one grid (the input grid), raw
                intensities; the brain mask comes from all of them
                (``brain_mask``), so pass only the modalities in use.
            spacing: ``(x, y, z)`` working voxel size in mm.
            margin_mm: kept around the brain on each side, in mm (within the
                field of view; the nearest whole number of working voxels). In
                mm, not voxels, so a model sees the same context whatever the
                input's or its own spacing.
            multiple_of: an int, or ``(x, y, z)`` ints: each crop size is grown
                (about its centre, past the field of view if need be, where
                resampling gives 0) to a multiple of it.
        """
        if not np.isfinite(margin_mm) or margin_mm < 0:
            raise InputError(f"margin_mm must be a non-negative number of millimetres, got {margin_mm!r}.")
        multiple = _per_axis(multiple_of)
        reference = _one_grid(images)
        brain = brain_mask(images)
        full = working_geometry(reference, spacing)
        crop_grid = _brain_crop(brain, reference, full, float(margin_mm), multiple)
        inside = resample_stack(brain.astype(np.float32), reference, crop_grid, "linear") > 0.5
        return cls(reference.with_array(brain.astype(np.uint8)), crop_grid.with_array(inside.astype(np.uint8)))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` size of the working crop."""
        return self.working.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        """``(x, y, z)`` working spacing in mm."""
        return self.working.spacing

    @property
    def brain(self) -> np.ndarray:
        """``(z, y, x)`` bool brain mask on the working crop."""
        return self.working.array.astype(bool)

    @property
    def input_brain(self) -> np.ndarray:
        """``(Z, Y, X)`` bool brain mask on the input grid."""
        return self.reference.array.astype(bool)

    def forward(self, data: Image | np.ndarray, interpolation: str = "linear") -> np.ndarray:
        """Input -> working crop.

        Args:
            data: a ``(..., Z, Y, X)`` array on the input grid, or an ``Image``
                on any grid (resampled by physical position).
            interpolation: "linear" (intensities, probabilities; gives float32)
                or "nearest" (labels; keeps the dtype).

        Returns:
            ``(..., z, y, x)`` on the working crop; 0 where it leaves the input.
        """
        if isinstance(data, Image):
            return resample_stack(data.array, data, self.working, interpolation)
        return resample_stack(
            check_on_grid(data, self.reference, "input grid"), self.reference, self.working, interpolation
        )


def working_zscores(
    grid: WorkingGrid, images: Mapping[str, Image], keys=MODALITY_KEYS
) -> tuple[np.ndarray, dict[str, Normalizer]]:
    """Every model's input: per-modality ``Normalizer`` z-scores (fitted and
    applied inside the input brain, 0 outside) moved to the working crop.

    Args:
        grid: the case's ``WorkingGrid``.
        images: ``{key: Image}`` on ``grid``'s input grid, raw intensities.
        keys: channel order; a key not in ``images`` gets a channel of zeros.

    Returns:
        ``(len(keys), z, y, x)`` float32 z-scores (linear resampling) and the
        fitted ``Normalizer`` of each given modality.
    """
    brain = grid.input_brain
    out = np.zeros((len(keys),) + grid.shape, dtype=np.float32)
    normalizers: dict[str, Normalizer] = {}
    for c, key in enumerate(keys):
        if key in images:
            normalizers[key] = Normalizer.fit(images[key].array, brain)
            out[c] = grid.forward(normalizers[key].apply(images[key].array, brain), "linear")
    return out, normalizers
