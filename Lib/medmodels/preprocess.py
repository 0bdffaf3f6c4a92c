"""Preprocessing shared by segmentation and synthesis.

- one grid for all inputs (checked; resampled onto a reference where needed),
- a brain mask,
- intensity normalisation that can be undone,
- resampling to and from a model's working spacing,
- cropping to the brain and pasting back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import SimpleITK as sitk

from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.modalities import BY_KEY, MODALITY_KEYS

# ---------------------------------------------------------------------------
# One grid
# ---------------------------------------------------------------------------


def reference_key(images: Mapping[str, Image], preferred: str | None = None) -> str:
    """The key whose grid all others are brought onto: the caller's choice, or
    the first available modality in canonical order."""
    if not images:
        raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
    if preferred is not None:
        if preferred not in images:
            raise InputError(
                f"The reference modality '{preferred}' is not among the inputs ({', '.join(images)}): "
                "name one of the given modalities."
            )
        return preferred
    return next(k for k in MODALITY_KEYS if k in images)


def resample_like(image: Image, reference: Image, interpolation: str = "linear", default: float = 0.0) -> Image:
    """Resample ``image`` onto ``reference``'s grid (physical positions are kept)."""
    interpolator = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}[interpolation]
    src = image.to_sitk()
    if interpolation != "nearest" and src.GetPixelID() != sitk.sitkFloat32:
        src = sitk.Cast(src, sitk.sitkFloat32)
    out = sitk.Resample(src, reference.to_sitk(), sitk.Transform(), interpolator, default, src.GetPixelID())
    return Image.from_sitk(out)


def to_common_grid(images: Mapping[str, Image], preferred: str | None = None) -> tuple[dict[str, Image], list[str]]:
    """Bring every image onto the reference grid.

    Returns the images (those already on the grid unchanged) and one note per
    resampled image, so callers can say what was done. Images that do not
    overlap the reference at all are refused: resampling would give zeros.
    """
    ref_key = reference_key(images, preferred)
    ref = images[ref_key]
    out: dict[str, Image] = {}
    notes: list[str] = []
    for key, img in images.items():
        if img.same_grid(ref):
            out[key] = img
            continue
        resampled = resample_like(img, ref)
        if not np.any(resampled.array) and np.any(img.array):
            raise InputError(
                f"{BY_KEY[key].display} does not overlap {BY_KEY[ref_key].display} in space "
                f"({img.describe_grid()} vs {ref.describe_grid()}): the volumes are not of the same patient "
                "position. Register them first."
            )
        out[key] = resampled
        notes.append(
            f"{BY_KEY[key].display} ({img.describe_grid()}) was resampled onto the grid of "
            f"{BY_KEY[ref_key].display} ({ref.describe_grid()})."
        )
    return out, notes


def resample_to_spacing(image: Image, spacing: tuple[float, float, float], interpolation: str = "linear") -> Image:
    """Resample to a new voxel spacing over the same field of view and direction."""
    new_size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.size_xyz, image.spacing, spacing)]
    # Keep the centre of the field of view fixed.
    d = np.asarray(image.direction).reshape(3, 3)
    old_extent = (np.asarray(image.size_xyz) - 1) * np.asarray(image.spacing)
    new_extent = (np.asarray(new_size) - 1) * np.asarray(spacing)
    origin = np.asarray(image.origin) + d @ ((old_extent - new_extent) / 2.0)
    target = Image(np.zeros(new_size[::-1], dtype=np.uint8), spacing, tuple(origin), image.direction)
    return resample_like(image, target, interpolation)


# ---------------------------------------------------------------------------
# Brain mask
# ---------------------------------------------------------------------------

#: Above this fraction of non-zero voxels, the input is taken as not skull-stripped.
SKULL_STRIPPED_MAX_FRACTION = 0.6


def brain_mask(images: Mapping[str, Image]) -> np.ndarray:
    """Boolean ``(Z, Y, X)`` brain mask from images on one grid.

    Skull-stripped input (BraTS): the union of non-zero voxels. Otherwise
    (more than 60 % of voxels non-zero, i.e. the background is not zero): an
    Otsu threshold of the mean of the max-scaled images, the largest
    connected component, holes filled. That fallback finds the head, not the
    brain; skull-strip the input for best results.
    """
    arrays = [np.asarray(img.array, dtype=np.float32) for img in images.values()]
    if not arrays:
        raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
    nonzero = np.zeros(arrays[0].shape, dtype=bool)
    for a in arrays:
        nonzero |= a != 0
    if nonzero.mean() <= SKULL_STRIPPED_MAX_FRACTION:
        mask = nonzero
    else:
        mean = sum(a / max(float(np.percentile(a, 99.5)), 1e-6) for a in arrays) / len(arrays)
        otsu = sitk.OtsuThreshold(sitk.GetImageFromArray(mean.astype(np.float32)), 0, 1)
        largest = sitk.RelabelComponent(sitk.ConnectedComponent(otsu)) == 1
        mask = sitk.GetArrayFromImage(sitk.BinaryFillhole(largest)).astype(bool)
    if not mask.any():
        raise InputError(
            "The brain mask is empty: every voxel of the inputs is zero. Check that the right volumes were chosen."
        )
    return mask


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalizer:
    """Percentile clip, then z-score inside the brain; ``invert`` undoes it.

    Fitted per image. ``invert`` maps network output back to the input's
    intensity scale, so a synthesised volume looks like the inputs.

    Attributes:
        low, high: intensity percentiles (inside the brain) used as clip bounds.
        mean, std: mean and standard deviation of the clipped brain voxels.
    """

    low: float
    high: float
    mean: float
    std: float

    @classmethod
    def fit(cls, array: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> "Normalizer":
        values = np.asarray(array, dtype=np.float64)[mask]
        if values.size == 0:
            raise InputError("Cannot normalise: the brain mask is empty.")
        low, high = np.percentile(values, percentiles)
        clipped = np.clip(values, low, high)
        std = float(clipped.std())
        return cls(float(low), float(high), float(clipped.mean()), std if std > 1e-6 else 1.0)

    def apply(self, array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """float32 z-scores; 0 outside ``mask`` when given."""
        z = ((np.clip(array.astype(np.float32), self.low, self.high) - self.mean) / self.std).astype(np.float32)
        if mask is not None:
            z = np.where(mask, z, 0.0).astype(np.float32)
        return z

    def invert(self, z: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Back to the input's intensity scale, clipped to the fitted range;
        0 outside ``mask`` when given (as in skull-stripped input)."""
        x = np.clip(z.astype(np.float32) * self.std + self.mean, self.low, self.high).astype(np.float32)
        if mask is not None:
            x = np.where(mask, x, 0.0).astype(np.float32)
        return x


# ---------------------------------------------------------------------------
# Cropping
# ---------------------------------------------------------------------------

BoundingBox = tuple[slice, slice, slice]


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
        lo, hi = max(0, idx[0] - margin), min(n, idx[-1] + 1 + margin)
        length = min(n, -(-(hi - lo) // multiple_of) * multiple_of)
        lo = max(0, min(lo - (length - (hi - lo)) // 2, n - length))
        hi = lo + length
        box.append(slice(int(lo), int(hi)))
    return tuple(box)  # type: ignore[return-value]


def crop(array: np.ndarray, box: BoundingBox) -> np.ndarray:
    """``array[..., box]``: leading axes (channels) are kept."""
    return array[(Ellipsis, *box)]


def paste(cropped: np.ndarray, box: BoundingBox, shape: tuple[int, ...], fill: float = 0.0) -> np.ndarray:
    """Put a cropped array back into a full array of ``shape`` (leading axes kept)."""
    out = np.full(cropped.shape[: cropped.ndim - 3] + tuple(shape[-3:]), fill, dtype=cropped.dtype)
    out[(Ellipsis, *box)] = cropped
    return out
