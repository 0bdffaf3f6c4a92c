"""``Image``: a 3D array with the geometry that places it in the patient.

The array is indexed ``[z, y, x]`` (SimpleITK's ``GetArrayFromImage`` order);
``spacing`` and ``origin`` are ``(x, y, z)`` in millimetres and ``direction``
is the row-major 3x3 direction cosine matrix, all in LPS as on disk. Every
step of medmodels passes images as this type so geometry is never lost.

``Grid``: the same geometry without the voxels, for what only says where
voxels lie (the input grid of a case, the preparation grid, a resampling target).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from medmodels.errors import InputError

#: Geometry comparisons allow this much difference (mm, or cosine units):
#: the round-off of NIfTI's float32 header fields, far below any real mismatch.
GEOMETRY_TOLERANCE = 1e-4


def _same_geometry(a, b, tolerance: float) -> bool:
    """True if ``a`` and ``b`` (each an ``Image`` or a ``Grid``) sample the same voxel positions."""
    return (
        a.shape == b.shape
        and np.allclose(a.spacing, b.spacing, atol=tolerance)
        and np.allclose(a.origin, b.origin, atol=tolerance * max(1.0, *np.abs(a.origin)))
        and np.allclose(a.direction, b.direction, atol=tolerance)
    )


def _describe(size_xyz, spacing, origin) -> str:
    sx, sy, sz = spacing
    return (
        f"{'x'.join(str(s) for s in size_xyz)} voxels of {sx:g}x{sy:g}x{sz:g} mm, "
        f"origin ({', '.join(f'{o:g}' for o in origin)})"
    )


@dataclass(frozen=True)
class Grid:
    """Where the voxels of a 3D image lie, without the voxels.

    It answers the geometry questions an ``Image`` answers (``shape``,
    ``size_xyz``, ``same_grid``, ``describe_grid``), so code that only reads
    geometry takes either, and a grid kept for its geometry holds no copy of a
    volume.

    Args:
        size_xyz: ``(x, y, z)`` voxel counts, all positive.
        spacing: ``(sx, sy, sz)`` voxel size in mm, all positive.
        origin: ``(ox, oy, oz)`` LPS position of voxel ``[0, 0, 0]`` in mm.
        direction: 9 numbers, the 3x3 direction matrix in row-major order (as ``Image``'s).
    """

    size_xyz: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size_xyz", tuple(int(n) for n in self.size_xyz))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(float(d) for d in self.direction))
        if len(self.size_xyz) != 3 or len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise InputError("A grid needs 3 sizes, 3 spacings, 3 origin coordinates and 9 direction values.")
        if min(self.size_xyz) < 1 or min(self.spacing) <= 0:
            raise InputError(f"A grid needs positive sizes and spacings, got {self.size_xyz} and {self.spacing}.")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)``: the shape of an array on this grid."""
        return self.size_xyz[::-1]  # type: ignore[return-value]

    def with_array(self, array: np.ndarray) -> Image:
        """``array`` (of shape ``shape``) placed on this grid."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"with_array needs shape {self.shape}, got {array.shape}")
        return Image(array, self.spacing, self.origin, self.direction)

    def same_grid(self, other: Grid | Image, tolerance: float = GEOMETRY_TOLERANCE) -> bool:
        """True if ``other`` samples the same voxel positions."""
        return _same_geometry(self, other, tolerance)

    def describe_grid(self) -> str:
        return _describe(self.size_xyz, self.spacing, self.origin)


@dataclass(frozen=True, eq=False)
class Image:
    """A 3D image with geometry.

    Args:
        array: ``(Z, Y, X)`` voxel values, any numeric dtype.
        spacing: ``(sx, sy, sz)`` voxel size in mm, all positive.
        origin: ``(ox, oy, oz)`` LPS position of voxel ``[0, 0, 0]`` in mm.
        direction: 9 numbers, the 3x3 direction matrix in row-major order
            (column ``i`` is the LPS direction of array axis ``x, y, z``\\[i]).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise InputError(
                f"Expected a 3D image, got {self.array.ndim}D with shape {self.array.shape}: "
                "give one 3D volume per modality (split 4D series first)."
            )
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(float(d) for d in self.direction))
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise InputError("Image geometry needs 3 spacings, 3 origin coordinates and 9 direction values.")
        if min(self.spacing) <= 0:
            raise InputError(f"Voxel spacing must be positive, got {self.spacing}.")

    # -- conversions --------------------------------------------------------
    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Image:
        return cls(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def to_sitk(self) -> sitk.Image:
        out = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        out.SetSpacing(self.spacing)
        out.SetOrigin(self.origin)
        out.SetDirection(self.direction)
        return out

    def with_array(self, array: np.ndarray) -> Image:
        """The same geometry around a new array of the same shape."""
        if array.shape != self.array.shape:
            raise ValueError(f"with_array needs shape {self.array.shape}, got {array.shape}")
        return Image(array, self.spacing, self.origin, self.direction)

    # -- geometry -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return (x, y, z)

    @property
    def grid(self) -> Grid:
        """The image's geometry without its voxels."""
        return Grid(self.size_xyz, self.spacing, self.origin, self.direction)

    def same_grid(self, other: Image | Grid, tolerance: float = GEOMETRY_TOLERANCE) -> bool:
        """True if both sample the same voxel positions."""
        return _same_geometry(self, other, tolerance)

    def describe_grid(self) -> str:
        return _describe(self.size_xyz, self.spacing, self.origin)


# -- checks on geometry from a file's header or an Image -------------------------

#: A voxel of a head MRI is between these sizes (mm): finer is a header in metres
#: (1 mm written as 0.001) or a microscope; coarser is a header in wrong units or
#: a corrupt one, and would make working grids of billions of voxels.
VOXEL_MM_RANGE = (0.1, 20.0)
#: A head MRI's field of view along each axis lies between these (mm): a
#: smaller one is not a head volume (a slab of a few slices, a header in metres),
#: a larger one a whole body or wrong units.
FIELD_OF_VIEW_MM_RANGE = (20.0, 500.0)
#: How far a direction matrix may be from orthonormal (max |D^T D - I|).
ORTHONORMAL_TOLERANCE = 1e-3


def check_direction(direction, name: str) -> None:
    """Refuse a direction matrix that is not orthonormal (a sheared or scaled grid).

    Args:
        direction: 9 numbers, the row-major 3x3 direction matrix.
        name: what to call the volume in the message (a path or a modality).

    Raises:
        InputError: the axes are not unit length and at right angles: NIfTI
            cannot store such a grid, so outputs would land off the input grid.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    error = float(np.abs(d.T @ d - np.eye(3)).max())
    if not np.isfinite(error) or error > ORTHONORMAL_TOLERANCE:
        raise InputError(
            f"{name} has a sheared or non-orthonormal direction matrix {np.round(d, 4).tolist()} (its axes are "
            "not at right angles): such a grid cannot be written back as NIfTI. Resample it onto an orthonormal "
            "grid first (e.g. Slicer's Resample Scalar Volume, or reslice on the scanner)."
        )


def check_head_geometry(size_xyz, spacing, name: str) -> None:
    """Refuse a grid no head MRI can have, before any memory is spent on it.

    Args:
        size_xyz: ``(x, y, z)`` voxel counts.
        spacing: ``(x, y, z)`` voxel size in mm.
        name: what to call the volume in the message.

    Raises:
        InputError: a voxel size outside ``VOXEL_MM_RANGE`` or a field of view
            outside ``FIELD_OF_VIEW_MM_RANGE`` on some axis, naming the axis.
    """
    (vlo, vhi), (flo, fhi) = VOXEL_MM_RANGE, FIELD_OF_VIEW_MM_RANGE
    for axis, n, s in zip("xyz", size_xyz, spacing):
        fov = n * s
        if not (np.isfinite(s) and vlo <= s <= vhi):
            raise InputError(
                f"{name} has voxels of {s:g} mm along {axis}, outside what a head MRI has ({vlo:g}-{vhi:g} mm): "
                "the header's spacing is wrong (in metres, or another unit?). Fix the spacing in the header."
            )
        if not flo <= fov <= fhi:
            raise InputError(
                f"{name} covers {fov:g} mm along {axis} ({n} voxels of {s:g} mm), outside a head's field of view "
                f"({flo:g}-{fhi:g} mm): give a whole head volume with the spacing in mm."
            )
