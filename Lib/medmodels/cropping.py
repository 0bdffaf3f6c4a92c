"""Array cropping and pasting (for metrics), and the growing of a span of voxels to a
multiple of what a network needs (which the working grid's crop uses too). numpy only.
"""

from __future__ import annotations

import numpy as np

from medmodels.errors import InputError

BoundingBox = tuple[slice, slice, slice]


def grow_span(first: int, last: int, n: int, margin: int, multiple_of: int, beyond: bool) -> tuple[int, int]:
    """``[lo, hi)`` around voxels ``first..last`` of an axis of ``n`` voxels:
    ``margin`` voxels each side (within the axis), then grown about its centre
    to a multiple of ``multiple_of``, kept inside the axis where it is long
    enough; where it is not, past both ends if ``beyond`` (a grid defined in
    space can be sampled anywhere), else clipped to the axis (an array cannot)."""
    lo, hi = max(0, first - margin), min(n, last + 1 + margin)
    length = -(-(hi - lo) // multiple_of) * multiple_of
    if length > n and not beyond:
        length = n
    lo -= (length - (hi - lo)) // 2
    lo = max(0, min(lo, n - length)) if length <= n else -((length - n) // 2)
    return int(lo), int(lo + length)


def bounding_box(mask: np.ndarray, margin: int = 0, multiple_of: int = 1) -> BoundingBox:
    """The smallest box around ``mask`` grown by ``margin`` voxels, each side
    then grown (within the array) to a multiple of ``multiple_of`` where the
    array allows, as networks with several down-samplings need."""
    if not mask.any():
        raise InputError("Cannot crop to an empty mask: the brain mask has no voxel.")
    box = []
    for axis, n in enumerate(mask.shape):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        lo, hi = grow_span(int(idx[0]), int(idx[-1]), n, margin, multiple_of, beyond=False)
        box.append(slice(lo, hi))
    return tuple(box)  # type: ignore[return-value]


def crop(array: np.ndarray, box: BoundingBox) -> np.ndarray:
    """``array[..., box]``: leading axes (channels) are kept."""
    return array[(Ellipsis, *box)]


def paste(cropped: np.ndarray, box: BoundingBox, shape: tuple[int, ...], fill: float = 0.0) -> np.ndarray:
    """Put a cropped array back into a full array of ``shape`` (leading axes kept)."""
    out = np.full(cropped.shape[: cropped.ndim - 3] + tuple(shape[-3:]), fill, dtype=cropped.dtype)
    out[(Ellipsis, *box)] = cropped
    return out
