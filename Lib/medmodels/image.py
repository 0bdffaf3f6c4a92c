"""``Image``: a 3D array with the geometry that places it in the patient.

The array is indexed ``[z, y, x]`` (SimpleITK's ``GetArrayFromImage`` order);
``spacing`` and ``origin`` are ``(x, y, z)`` in millimetres and ``direction``
is the row-major 3x3 direction cosine matrix, all in LPS as on disk. Every
step of medmodels passes images as this type so geometry is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from medmodels.errors import InputError

#: Geometry comparisons allow this much difference (mm, or cosine units):
#: the round-off of NIfTI's float32 header fields, far below any real mismatch.
GEOMETRY_TOLERANCE = 1e-4


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

    def same_grid(self, other: Image, tolerance: float = GEOMETRY_TOLERANCE) -> bool:
        """True if both images sample the same voxel positions."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tolerance)
            and np.allclose(self.origin, other.origin, atol=tolerance * max(1.0, *np.abs(self.origin)))
            and np.allclose(self.direction, other.direction, atol=tolerance)
        )

    def describe_grid(self) -> str:
        sx, sy, sz = self.spacing
        return (
            f"{'x'.join(str(s) for s in self.size_xyz)} voxels of {sx:g}x{sy:g}x{sz:g} mm, "
            f"origin ({', '.join(f'{o:g}' for o in self.origin)})"
        )
