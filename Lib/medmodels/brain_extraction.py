"""Brain extraction without downloaded weights: a classical, morphological fallback.

For studies that are not skull-stripped when no better tool is at hand
(HD-BET, SynthStrip, or Slicer's HDBrainExtraction / SwissSkullStripper are
better on real heads). It relies on what T1-weighted and FLAIR images show
around every brain: a dark band (cerebrospinal fluid and cortical bone)
between the brain and the bright scalp.

1. A brain-likeness image: per contrast with dark CSF (T1, T1c, FLAIR) the
   intensity over its head's median, then the voxel-wise maximum (so a tumour
   that is dark in T1 but bright in FLAIR stays in). T2 alone is used only
   when nothing else is given.
2. Median filter, threshold at ``THRESHOLD`` of the head's median: brain tissue above, CSF, bone and
   air below.
3. Erode by ``ERODE_MM`` to cut the thin bridges that partial volume leaves
   across the dark band, keep the largest component (the brain), dilate back
   inside the thresholded voxels.
4. Close by ``CLOSE_MM`` and fill holes (ventricles, a dark necrotic core at
   the surface, sulci). The thresholds were tuned on the phantom with a head
   (``medmodels.phantom``, ``head=True``): Dice 0.97-0.99 against its brain.

Where it fails: where the dark band is thinner than the voxels (thick slices
near the skull base, the orbits and the vertex), the brain mask can leak into
the eye muscles, the skull base or the neck; very low-contrast T2-only input;
and any image whose scalp is darker than brain. Inspect the mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.registration import head_mask

#: Brain tissue lies above this fraction of the head's median, CSF and bone below.
THRESHOLD = 0.75
#: Erosion that cuts the brain from the scalp (mm); larger than the bridges, smaller than the brain's gyri.
ERODE_MM = 7.5
#: Closing that fills the sulci and notches at the brain's surface (mm).
CLOSE_MM = 6.0
#: Contrasts in which CSF is dark: the dark band around the brain is clearest there.
DARK_CSF = ("t1", "t1c", "flair")


@dataclass(frozen=True)
class BrainExtraction:
    """The extracted brain.

    Attributes:
        mask: uint8 0/1 brain mask on the input grid.
        method: the method's name, for the manifest.
        used: the modalities the mask was made from.
        volume_ml: the brain's volume (a real adult brain: about 1000-1600 ml).
    """

    mask: Image
    method: str
    used: tuple[str, ...]
    volume_ml: float

    def record(self) -> dict:
        return {"method": self.method, "used": list(self.used), "volume_ml": round(self.volume_ml, 1)}


def _radius(mm: float, spacing) -> list[int]:
    """A ball of ``mm`` as voxel radii along ``(x, y, z)`` (at least one voxel)."""
    return [max(1, int(round(mm / s))) for s in spacing]


def brain_likeness(images: Mapping[str, Image]) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(Z, Y, X)`` float32: per contrast intensity over its head's median, maximum over contrasts.

    Args:
        images: modality key -> image, all on one grid.

    Returns:
        the image and the modalities it was made from.
    """
    used = tuple(k for k in DARK_CSF if k in images) or tuple(images)
    out = None
    for key in used:
        image = sitk.Cast(images[key].to_sitk(), sitk.sitkFloat32)
        array = sitk.GetArrayFromImage(image)
        head = sitk.GetArrayFromImage(head_mask(image)).astype(bool)
        level = float(np.median(array[head])) if head.any() else 0.0
        if level <= 0:
            raise InputError(
                f"The {key} volume has no head to extract a brain from (all zero or constant): check the volume."
            )
        ratio = array / level
        out = ratio if out is None else np.maximum(out, ratio)
    return out.astype(np.float32), used


def extract_brain(images: Mapping[str, Image]) -> BrainExtraction:
    """The brain of a head, by threshold and morphology (see the module's description).

    Args:
        images: modality key -> image (raw intensities, head not stripped),
            all on one grid (register them first).

    Returns:
        the mask on that grid, and what it was made from.
    """
    if not images:
        raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
    grid = next(iter(images.values()))
    if not all(image.same_grid(grid) for image in images.values()):
        raise InputError("Brain extraction needs every image on one grid: register or resample them first.")
    likeness, used = brain_likeness(images)
    spacing = grid.spacing
    like = sitk.GetImageFromArray(likeness)
    like.SetSpacing(spacing)
    # A median filter (one voxel) so the threshold follows tissue, not noise; no Gaussian smoothing,
    # which would fill the dark band of a few voxels between brain and scalp.
    like = sitk.Median(like, [1, 1, 1])
    bright = sitk.BinaryThreshold(like, THRESHOLD, 1e30, 1, 0)
    core = sitk.BinaryErode(bright, _radius(ERODE_MM, spacing))
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(core), sortByObjectSize=True) == 1
    brain = sitk.And(sitk.BinaryDilate(largest, _radius(ERODE_MM, spacing)), bright)
    brain = sitk.RelabelComponent(sitk.ConnectedComponent(brain), sortByObjectSize=True) == 1
    # Pad before closing so a brain that touches the field of view is closed there too.
    pad = _radius(CLOSE_MM, spacing)
    padded = sitk.ConstantPad(brain, pad, pad, 0)
    closed = sitk.BinaryFillhole(sitk.BinaryMorphologicalClosing(padded, pad))
    brain = sitk.Crop(closed, pad, pad)
    mask = sitk.GetArrayFromImage(brain).astype(np.uint8)
    if not mask.any():
        raise InputError(
            "Brain extraction found no brain (no tissue stands out from the background): skull-strip the "
            "inputs with another tool, or run with --prepare off if they are already stripped."
        )
    volume = float(mask.sum() * np.prod(spacing) / 1000.0)
    return BrainExtraction(grid.with_array(mask), "threshold-morphology", used, volume)
