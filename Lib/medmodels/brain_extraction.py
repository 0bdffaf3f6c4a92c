"""Brain extraction: a learned extractor, a classical fallback, and checks of the result.

``extract_brain`` makes one mask for a case whose series are on one grid
(registered first) and checks it:

1. The learned extractor (``brain_net``: deepbet's networks, weights shipped
   in its wheel) on the best series for it: T1, else T1c, else FLAIR, else
   T2 (``SERIES_ORDER``; deepbet was trained on T1-weighted heads). The one
   mask applies to every series, which registration has put on one grid.
2. ``mask_problems``: a brain outside ``PLAUSIBLE_ML`` (an adult brain with
   its CSF is about 1100-1700 ml), or a mask reaching the field of view's
   edge (the field of view cuts the brain, or the mask leaked into the neck
   or the scalp) is implausible.
3. When the learned extractor cannot run (deepbet not installed, weights
   altered, no head found) or its mask is implausible, the threshold-
   morphology method below runs instead, and ``BrainExtraction.fallback``
   says why. The caller (``preparation.py``) reports the problems of the
   mask it gets and, in ``auto`` mode, refuses to go on with an implausible
   one.

Threshold-morphology (``threshold_morphology``), the fallback. It relies on
what T1-weighted and FLAIR images show around every brain: a dark band
(cerebrospinal fluid and cortical bone) between the brain and the bright
scalp.

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

Where it fails: on real heads (a clinical glioma study gave a 2087 ml mask
with scalp in it, issue 19); where the dark band is thinner than the voxels
(thick slices near the skull base, the orbits and the vertex); T2-only
input; any image whose scalp is darker than brain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from medmodels.brain_net import ExtractorUnavailable, learned_brain_mask
from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.modalities import BY_KEY
from medmodels.registration import head_mask

#: Brain tissue lies above this fraction of the head's median, CSF and bone below.
THRESHOLD = 0.75
#: Erosion that cuts the brain from the scalp (mm); larger than the bridges, smaller than the brain's gyri.
ERODE_MM = 7.5
#: Closing that fills the sulci and notches at the brain's surface (mm).
CLOSE_MM = 6.0
#: Contrasts in which CSF is dark: the dark band around the brain is clearest there.
DARK_CSF = ("t1", "t1c", "flair")
#: The series the learned extractor takes the mask from, best first.
SERIES_ORDER = ("t1", "t1c", "flair", "t2")
#: Brain volumes (ml, with the CSF around the brain) outside this range are implausible for an adult.
PLAUSIBLE_ML = (800.0, 2000.0)
#: A mask with more than this area (mm^2) on one face of the field of view reaches its edge.
EDGE_AREA_MM2 = 100.0


@dataclass(frozen=True)
class BrainExtraction:
    """The extracted brain.

    Attributes:
        mask: uint8 0/1 brain mask on the input grid.
        method: the method's name, for the manifest.
        used: the modalities the mask was made from.
        volume_ml: the brain's volume (a real adult brain: about 1100-1700 ml).
        mask_problems: what makes the mask implausible (``mask_problems``), one sentence
            each (the record's ``problems``).
        fallback: why the learned extractor's mask is not the one used ("" when it is).
    """

    mask: Image
    method: str
    used: tuple[str, ...]
    volume_ml: float
    mask_problems: tuple[str, ...] = ()
    fallback: str = ""

    def record(self) -> dict:
        out = {"method": self.method, "used": list(self.used), "volume_ml": round(self.volume_ml, 1)}
        return {**out, "problems": list(self.mask_problems), "fallback": self.fallback}

    @classmethod
    def of(cls, mask: Image, method: str, used: tuple[str, ...], fallback: str = "") -> BrainExtraction:
        """The extraction of ``mask``, its volume and problems measured."""
        volume = float(mask.array.astype(bool).sum() * np.prod(mask.spacing) / 1000.0)
        return cls(mask, method, used, volume, tuple(mask_problems(mask)), fallback)


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


def threshold_morphology(images: Mapping[str, Image]) -> BrainExtraction:
    """The brain of a head, by threshold and morphology (see the module's description).

    Args:
        images: modality key -> image (raw intensities, head not stripped),
            all on one grid (register them first).

    Returns:
        the mask on that grid, and what it was made from.
    """
    grid = _one_grid(images)
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
    return BrainExtraction.of(grid.with_array(mask), "threshold-morphology", used)


def _one_grid(images: Mapping[str, Image]) -> Image:
    if not images:
        raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
    grid = next(iter(images.values()))
    if not all(image.same_grid(grid) for image in images.values()):
        raise InputError("Brain extraction needs every image on one grid: register or resample them first.")
    return grid


def mask_problems(mask: Image) -> list[str]:
    """What makes a brain mask implausible, one sentence each (empty: plausible).

    Args:
        mask: 0/1 brain mask, ``(Z, Y, X)`` on its grid.
    """
    brain = mask.array.astype(bool)
    spacing = mask.spacing
    volume = float(brain.sum() * np.prod(spacing) / 1000.0)
    out = []
    low, high = PLAUSIBLE_ML
    if not low <= volume <= high:
        out.append(
            f"the brain mask holds {volume:.0f} ml, outside the {low:.0f}-{high:.0f} ml of an adult brain "
            + ("(scalp, neck or orbits taken for brain?)" if volume > high else "(brain missed or cut off?)")
        )
    # Faces of the (Z, Y, X) array: the area each face's voxels cover is the product of the other two spacings.
    x, y, z = spacing
    faces = {
        "first slice": brain[0].sum() * x * y,
        "last slice": brain[-1].sum() * x * y,
        "first row": brain[:, 0].sum() * x * z,
        "last row": brain[:, -1].sum() * x * z,
        "first column": brain[:, :, 0].sum() * y * z,
        "last column": brain[:, :, -1].sum() * y * z,
    }
    touching = [f"{name} ({area / 100:.1f} cm2)" for name, area in faces.items() if area > EDGE_AREA_MM2]
    if touching:
        out.append(
            "the brain mask reaches the edge of the field of view at its "
            + ", ".join(touching)
            + " (the field of view cuts the brain, or the mask leaked into the neck or scalp)"
        )
    return out


def extract_brain(images: Mapping[str, Image], device: str = "cpu") -> BrainExtraction:
    """One brain mask for a case: the learned extractor on its best series, threshold-morphology as fallback.

    Args:
        images: modality key -> image (raw intensities, head not stripped),
            all on one grid (register them first).
        device: the run's ``--device`` word ("auto", "cpu", "cuda", "cuda:N") for the learned extractor.

    Returns:
        the learned mask when it is plausible; else the fallback's when that
        one is plausible or the learned extractor could not run; else the
        learned one. Its ``mask_problems`` say what is wrong with it, ``fallback``
        why the learned one was not taken.
    """
    _one_grid(images)
    source = next(k for k in (*SERIES_ORDER, *images) if k in images)
    try:
        learned = BrainExtraction.of(learned_brain_mask(images[source], device), "deepbet", (source,))
    except ExtractorUnavailable as e:
        return dataclasses.replace(threshold_morphology(images), fallback=f"The learned extractor could not run: {e}.")
    if not learned.mask_problems:
        return learned
    why = f"deepbet's mask from {BY_KEY[source].display} is implausible: {'; '.join(learned.mask_problems)}."
    fallback = threshold_morphology(images)
    return dataclasses.replace(fallback, fallback=why) if not fallback.mask_problems else learned
