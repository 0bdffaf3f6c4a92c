"""Case loading and the preprocessing shared by segmentation training and inference.

One function, :func:`prepare`, turns a case (images on one grid) into the
network's input on the model's working grid
(``medmodels.working_grid.WorkingGrid``): brain mask (the union of non-zero
voxels for skull-stripped input such as BraTS), per-modality percentile clip +
z-score inside the brain (``medmodels.normalisation.Normalizer``), trilinear
resampling to the working spacing along the input's axes, crop to the brain
plus ``MARGIN_MM``. Training and inference both call it, so they
see identical inputs; inference takes its probabilities back onto the input
grid with ``NetworkInput.grid.inverse``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from medmodels.datasets import Case
from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.labels import labels_to_regions
from medmodels.modalities import MODALITY_KEYS
from medmodels.working_grid import WorkingGrid, working_zscores

#: Kept around the brain, in mm: the bundled weights were trained on crops with
#: a margin of 2 voxels of 1 mm (BraTS). They are sensitive to it: on 5 BraTS
#: cases, a 5 mm margin lowered the mean whole-tumour Dice from 0.65 to 0.61.
MARGIN_MM = 2.0


def read_case(case: Case) -> tuple[dict[str, Image], Image | None]:
    """``({key: Image}, labels Image or None)`` of a ``medmodels.datasets.Case``,
    geometry kept; the modalities must share one grid (as BraTS provides)."""
    images, labels = case.load()
    ref = images[next(k for k in MODALITY_KEYS if k in images)]
    for key, img in images.items():
        if not img.same_grid(ref):
            raise InputError(
                f"Case '{case.name}': {key} is not on the grid of the other modalities; co-register the case first."
            )
    return images, labels


@dataclass
class NetworkInput:
    """Network input of one case on its working grid.

    Attributes:
        image: ``(4, z, y, x)`` float32 torch z-scores, canonical modality
            order, missing modalities zero.
        grid: the ``WorkingGrid`` (input geometry and working crop; its
            ``inverse`` takes network outputs back to the input grid).
        regions: ``(3, z, y, x)`` uint8 torch ET, TC, WT when labels were given.
    """

    image: torch.Tensor
    grid: WorkingGrid
    regions: torch.Tensor | None = None


def _as_images(images: Mapping[str, Image | np.ndarray], spacing_xyz) -> dict[str, Image]:
    """Images as given, or arrays placed on a grid of ``spacing_xyz`` (origin 0,
    identity direction: the working grid follows the input's axes, so the
    network input does not depend on them)."""
    out = {}
    for key, value in images.items():
        if isinstance(value, Image):
            if spacing_xyz is not None and not np.allclose(value.spacing, tuple(spacing_xyz), atol=1e-4):
                raise InputError(
                    f"{key} has spacing {value.spacing} but spacing_xyz={tuple(spacing_xyz)} was "
                    "given: pass spacing_xyz=None with Images (their own geometry is used)."
                )
            out[key] = value
        elif spacing_xyz is None:
            raise InputError(f"{key} is a bare array: give its voxel spacing (spacing_xyz) or pass an Image.")
        else:
            out[key] = Image(np.asarray(value), tuple(spacing_xyz))
    return out


def prepare(
    images: Mapping[str, Image | np.ndarray],
    spacing_xyz,
    target_spacing_xyz,
    labels: Image | np.ndarray | None = None,
    label_convention: str | None = None,
    margin_mm: float = MARGIN_MM,
) -> NetworkInput:
    """A case on the segmentation working grid; see the module docstring.

    Args:
        images: ``{key: Image}`` on one grid (geometry kept), or ``{key: (Z, Y, X)
            array}``; keys of ``medmodels.modalities``, raw intensities. Every
            given modality counts (the brain mask included): drop unused ones first.
        spacing_xyz: the arrays' voxel spacing ``(x, y, z)`` in mm; None (or the
            same spacing) with Images.
        target_spacing_xyz: the working spacing ``(x, y, z)`` in mm (the model's).
        labels: BraTS labels ``(Z, Y, X)`` on the same grid (array or Image), or None.
        label_convention: "2018", "2023" or None (detected).
        margin_mm: kept around the brain, in mm.
    """
    images = _as_images({k: images[k] for k in MODALITY_KEYS if k in images}, spacing_xyz)
    if not images:
        raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
    grid = WorkingGrid.fit(images, target_spacing_xyz, margin_mm=margin_mm)
    z, _ = working_zscores(grid, images)
    regions = None
    if labels is not None:
        lab = labels.array if isinstance(labels, Image) else np.asarray(labels)
        reg = labels_to_regions(lab, label_convention).astype(np.float32)
        # Regions are resampled like probabilities and thresholded: at a coarser
        # spacing this keeps a region's volume better than nearest neighbour.
        regions = torch.from_numpy((grid.forward(reg, "linear") >= 0.5).astype(np.uint8))
    return NetworkInput(torch.from_numpy(z).contiguous(), grid, regions)


def lesion_zscores(images: Mapping[str, Image], labels: Image, target_spacing_xyz) -> dict[str, dict[str, float]]:
    """How bright each tumour part is on the network's own input: the mean brain z-score of every
    modality inside the enhancing tumour, the edema and the necrosis, after :func:`prepare`.

    Args:
        images: ``{key: Image}`` on one grid, raw intensities (as :func:`prepare`).
        labels: BraTS labels on the same grid.
        target_spacing_xyz: the working spacing ``(x, y, z)`` in mm.

    Returns:
        ``{"ET" | "edema" | "necrosis": {modality key: mean z-score}}``; NaN where a part is empty.
        A phantom whose figures lie outside those of real cases tests something real cases never
        show (docs/segmentation.md, "Why four cases move the network off the phantom").
    """
    prep = prepare(images, None, target_spacing_xyz, labels=labels)
    z, (et, tc, wt) = prep.image.numpy(), prep.regions.numpy().astype(bool)
    parts = {"ET": et, "edema": wt & ~tc, "necrosis": tc & ~et}
    keys = [k for k in MODALITY_KEYS if k in images]
    return {
        name: {k: float(z[m][inside].mean()) if inside.any() else float("nan") for m, k in enumerate(keys)}
        for name, inside in parts.items()
    }
