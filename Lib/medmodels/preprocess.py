"""Preprocessing shared by segmentation and synthesis.

- one grid for all inputs (checked; resampled onto a reference where needed),
- a brain mask,
- intensity normalisation that can be undone,
- array cropping and pasting (for metrics),
- ``WorkingGrid``: the one map between the input grid and a model's working
  grid (working spacing along the input's axes, cropped to the brain), and
  back, used by segmentation and synthesis for training and inference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
    interpolator = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}[
        interpolation
    ]
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


def _checked_spacing(spacing) -> tuple[float, float, float]:
    """``spacing`` as three positive floats ``(x, y, z)`` in mm, or an InputError."""
    try:
        out = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(np.isfinite(out)) or min(out) <= 0:
        raise InputError(f"A working spacing must be three positive numbers (x, y, z) in mm, got {spacing!r}.")
    return out  # type: ignore[return-value]


def working_geometry(image: Image, spacing) -> Image:
    """The grid of ``image``'s field of view sampled at ``spacing`` along
    ``image``'s own axes (same direction), centre of the field of view kept.

    Args:
        image: any ``Image``; only its geometry is used.
        spacing: ``(x, y, z)`` voxel size of the new grid in mm.

    Returns:
        an ``Image`` of uint8 zeros carrying the new geometry.
    """
    spacing = _checked_spacing(spacing)
    new_size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.size_xyz, image.spacing, spacing)]
    # Keep the centre of the field of view fixed.
    d = np.asarray(image.direction).reshape(3, 3)
    old_extent = (np.asarray(image.size_xyz) - 1) * np.asarray(image.spacing)
    new_extent = (np.asarray(new_size) - 1) * np.asarray(spacing)
    origin = np.asarray(image.origin) + d @ ((old_extent - new_extent) / 2.0)
    return Image(np.zeros(new_size[::-1], dtype=np.uint8), spacing, tuple(origin), image.direction)


def resample_to_spacing(image: Image, spacing: tuple[float, float, float], interpolation: str = "linear") -> Image:
    """Resample to a new voxel spacing over the same field of view and direction."""
    return resample_like(image, working_geometry(image, spacing), interpolation)


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
        what = (
            "every voxel of the inputs is zero"
            if not nonzero.any()
            else "no brain stands out from the background (the inputs are constant or nearly so)"
        )
        raise InputError(f"The brain mask is empty: {what}. Check that the right volumes were chosen.")
    return mask


#: A modality with fewer non-zero voxels than this fraction is refused as blank.
MIN_NONZERO_FRACTION = 1e-3


def check_informative(images: Mapping[str, Image]) -> None:
    """Refuse a blank or constant volume, naming its modality.

    A volume of zeros (or one value everywhere) given as acquired would be
    taken as that modality's image: the models would synthesise and segment
    from nothing. It is better left out (then it is synthesised).

    Args:
        images: ``{key: Image}``; keys are modality keys (others are named as they are).

    Raises:
        InputError: naming the first such modality, its one value, and the fix.
    """
    for key, image in images.items():
        name = BY_KEY[key].display if key in BY_KEY else key
        array = np.asarray(image.array)
        low, high = float(array.min()), float(array.max())
        if low == high:
            what = "every voxel is 0" if low == 0 else f"every voxel is {low:g}"
            raise InputError(
                f"The {name} volume is blank ({what}): choose the {name} series that holds image data, or "
                f"leave {name} out (it is then synthesised)."
            )
        if np.count_nonzero(array) < MIN_NONZERO_FRACTION * array.size:
            raise InputError(
                f"The {name} volume is nearly blank ({np.count_nonzero(array)} of {array.size} voxels are "
                f"non-zero): choose the {name} series that holds image data, or leave {name} out."
            )


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
    def fit(cls, array: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> Normalizer:
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


def _grow(first: int, last: int, n: int, margin: int, multiple_of: int, beyond: bool) -> tuple[int, int]:
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
        lo, hi = _grow(int(idx[0]), int(idx[-1]), n, margin, multiple_of, beyond=False)
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


# ---------------------------------------------------------------------------
# The working grid: one invertible map between the input grid and a model's grid
# ---------------------------------------------------------------------------

#: Interpolations the working grid offers: linear for intensities and
#: probabilities; nearest (forward, and plain resampling); "label" for label
#: maps going back (``labels_onto``, the one rule both inverses use).
INTERPOLATIONS = ("linear", "nearest")


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
                "(medmodels.preprocess.to_common_grid)."
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
        lo_i, hi_i = _grow(first, last, n, 0, multiple_of[a], beyond=True)
        start.append(lo_i)
        size.append(hi_i - lo_i)
    origin = np.asarray(full.origin) + d @ (np.asarray(start) * np.asarray(full.spacing))
    return Image(np.zeros(size[::-1], dtype=np.uint8), full.spacing, tuple(origin), full.direction)


def _resample_stack(
    array: np.ndarray, source: Image, target: Image, interpolation: str, fill: float = 0.0
) -> np.ndarray:
    """``(..., Z, Y, X)`` on ``source``'s grid -> ``(..., z, y, x)`` on ``target``'s,
    each leading index resampled on its own; ``fill`` where ``target`` leaves
    ``source``. Linear gives float32; nearest keeps the dtype (bool included)."""
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"Unknown interpolation '{interpolation}': use one of {', '.join(INTERPOLATIONS)}.")
    array = np.asarray(array)
    is_bool = array.dtype == bool
    if interpolation == "linear":
        array = array.astype(np.float32, copy=False)
    elif is_bool:
        array = array.astype(np.uint8)  # SimpleITK has no boolean pixel type
    flat = array.reshape((-1,) + array.shape[-3:])
    out = np.empty((len(flat),) + target.shape, dtype=array.dtype)
    for i, channel in enumerate(flat):
        moved = resample_like(
            Image(channel, source.spacing, source.origin, source.direction), target, interpolation, fill
        )
        out[i] = moved.array
    out = out.reshape(array.shape[:-3] + target.shape)
    return out.astype(bool) if is_bool else out


def labels_onto(array: np.ndarray, source: Image, target: Image) -> np.ndarray:
    """The one rule that brings a label map onto another grid (``WorkingGrid.inverse``
    and ``preparation.Prepared.restore`` with "label" both use it).

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
    shares = [_resample_stack((array == v).astype(np.float32), source, target, "linear") for v in values]
    return values[np.argmax(np.stack(shares), axis=0)].astype(array.dtype)


@dataclass(frozen=True, eq=False)
class WorkingGrid:
    """A model's working grid and the way there and back, for training and inference alike.

    The working grid is the input grid's field of view resampled to a
    working spacing along the input's own axes (``working_geometry``), then
    cropped to the brain's bounding box plus a margin (mm), grown to a multiple
    of what the network needs. Both grids keep their full geometry (origin,
    spacing, direction), so results go back to the input grid exactly where
    they belong, whatever the input's orientation. Resampling is SimpleITK's
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
        inside = _resample_stack(brain.astype(np.float32), reference, crop_grid, "linear") > 0.5
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

    def _check(self, array: np.ndarray, grid: Image, name: str) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim < 3 or tuple(array.shape[-3:]) != grid.shape:
            raise InputError(
                f"An array of shape {array.shape} is not on the {name} (its last three axes must "
                f"be {grid.shape}, i.e. (Z, Y, X)): pass data of that grid, or an Image."
            )
        return array

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
            return _resample_stack(data.array, data, self.working, interpolation)
        return _resample_stack(
            self._check(data, self.reference, "input grid"), self.reference, self.working, interpolation
        )

    def inverse(self, array: np.ndarray, interpolation: str = "linear", fill: float = 0.0) -> np.ndarray:
        """Working crop -> input grid.

        Args:
            array: ``(..., z, y, x)`` on the working crop.
            interpolation: as in :meth:`forward`, or "label" for label maps
                (``labels_onto``; 0 outside the crop).
            fill: value of input voxels outside the working crop ("linear", "nearest").

        Returns:
            ``(..., Z, Y, X)`` on the input grid (``self.reference``'s geometry).
        """
        array = self._check(array, self.working, "working crop")
        if interpolation == "label":
            return labels_onto(array, self.working, self.reference)
        return _resample_stack(array, self.working, self.reference, interpolation, fill)


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
