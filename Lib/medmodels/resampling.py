"""One grid for all inputs: the reference modality, resampling by physical
position (one volume, or a stack of them), and grids of a new spacing over the
same field of view.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk

from medmodels.errors import InputError
from medmodels.image import Grid, Image
from medmodels.modalities import BY_KEY, MODALITY_KEYS

#: Interpolations of ``resample_stack``: linear for intensities and probabilities, nearest to
#: keep values (label maps going forward; label maps going back take ``grid_chain.labels_onto``).
INTERPOLATIONS = ("linear", "nearest")


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


def resample_onto(source: sitk.Image, grid: Image | Grid, transform, interpolator, default: float = 0.0) -> Image:
    """SimpleITK's resampling of ``source`` onto ``grid``, read from its geometry alone (no
    reference volume is built), in ``source``'s pixel type.

    Args:
        source: the SimpleITK image to sample.
        grid: the target geometry (an ``Image``'s voxels are not used).
        transform: SimpleITK transform from ``grid``'s space to ``source``'s.
        interpolator: a SimpleITK interpolator constant.
        default: value where ``grid`` leaves ``source``.
    """
    out = sitk.Resample(
        source,
        [int(n) for n in grid.size_xyz],
        transform,
        interpolator,
        grid.origin,
        grid.spacing,
        grid.direction,
        default,
        source.GetPixelID(),
    )
    return Image.from_sitk(out)


def resample_like(image: Image, reference: Image | Grid, interpolation: str = "linear", default: float = 0.0) -> Image:
    """Resample ``image`` onto ``reference``'s grid (physical positions are kept)."""
    interpolator = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}[
        interpolation
    ]
    src = image.to_sitk()
    if interpolation != "nearest" and src.GetPixelID() != sitk.sitkFloat32:
        src = sitk.Cast(src, sitk.sitkFloat32)
    return resample_onto(src, reference, sitk.Transform(), interpolator, default)


def resample_stack(
    array: np.ndarray, source: Image | Grid, target: Image | Grid, interpolation: str, fill: float = 0.0
) -> np.ndarray:
    """``(..., Z, Y, X)`` on ``source``'s grid -> ``(..., z, y, x)`` on ``target``'s,
    each leading index resampled on its own.

    Args:
        array: the data, its last three axes on ``source``.
        source: the grid ``array`` is on (only its geometry is used).
        target: the grid to bring it onto (only its geometry is used).
        interpolation: "linear" (gives float32) or "nearest" (keeps the dtype, bool included).
        fill: value where ``target`` leaves ``source``.
    """
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
        out[i] = resample_like(
            Image(channel, source.spacing, source.origin, source.direction), target, interpolation, fill
        ).array
    out = out.reshape(array.shape[:-3] + target.shape)
    return out.astype(bool) if is_bool else out


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
