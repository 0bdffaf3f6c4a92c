"""Case loading and the preprocessing shared by training and inference.

One function, :func:`prepare`, turns arrays on one grid into the network's
input: brain mask (``medmodels.preprocess.brain_mask``: the union of non-zero
voxels for skull-stripped input such as BraTS), crop to the brain,
per-modality percentile clip + z-score inside the brain
(``medmodels.preprocess.Normalizer``), then trilinear resampling of the crop
to the model's working spacing. Training and inference both call it, so they
see identical inputs; inference resamples its probabilities back onto the
crop with :func:`resize` and pastes them into the input grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from medmodels.datasets import Case
from medmodels.errors import InputError
from medmodels.labels import labels_to_regions
from medmodels.modalities import MODALITY_KEYS
from medmodels.image import Image
from medmodels.preprocess import Normalizer, brain_mask, bounding_box, crop


def read_case_arrays(case: Case) -> tuple[dict[str, np.ndarray], np.ndarray | None, tuple]:
    """``(images {key: (Z,Y,X) float32}, labels or None, spacing (x,y,z))`` of a
    ``medmodels.datasets.Case`` (images on one grid, as BraTS provides)."""
    images, labels = case.load()
    ref = images[next(k for k in MODALITY_KEYS if k in images)]
    for key, img in images.items():
        if not img.same_grid(ref):
            raise InputError(f"Case '{case.name}': {key} is not on the grid of the other modalities; "
                             "co-register the case first.")
    arrays = {k: np.asarray(img.array, dtype=np.float32) for k, img in images.items()}
    return arrays, (None if labels is None else np.asarray(labels.array).astype(np.uint8)), ref.spacing


def target_shape(shape_zyx, spacing_xyz, target_xyz) -> tuple[int, int, int]:
    sp = tuple(spacing_xyz)[::-1]
    tg = tuple(target_xyz)[::-1]
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape_zyx, sp, tg))


def resize(array: torch.Tensor, shape, mode: str = "trilinear") -> torch.Tensor:
    """``(C, Z, Y, X)`` -> ``(C, *shape)``; voxel edges aligned (same field of view)."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    kw = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(array[None].float(), size=tuple(shape), mode=mode, **kw)[0]


@dataclass
class Prepared:
    """Network input of one case: ``image (4, z, y, x)`` at the working spacing
    (missing modalities zero), the crop ``box`` on the input grid and the
    input grid's ``shape``; ``regions (3, z, y, x)`` uint8 when labels were given."""

    image: torch.Tensor
    box: tuple
    shape: tuple
    crop_shape: tuple
    regions: torch.Tensor | None = None


def prepare(arrays: Mapping[str, np.ndarray], spacing_xyz, target_spacing_xyz,
            labels: np.ndarray | None = None, label_convention: str | None = None) -> Prepared:
    """Brain mask, crop, normalise, resample; see the module docstring."""
    present = [k for k in MODALITY_KEYS if k in arrays]
    if not present:
        raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
    shape = arrays[present[0]].shape
    brain = brain_mask({k: Image(np.asarray(arrays[k])) for k in present})
    box = bounding_box(brain, margin=2)
    brain_c = crop(brain, box)
    chans = []
    for k in MODALITY_KEYS:
        if k in arrays:
            a = crop(np.asarray(arrays[k], dtype=np.float32), box)
            chans.append(Normalizer.fit(a, brain_c).apply(a, brain_c))
        else:
            chans.append(np.zeros(brain_c.shape, dtype=np.float32))
    crop_shape = brain_c.shape
    out_shape = target_shape(crop_shape, spacing_xyz, target_spacing_xyz)
    image = resize(torch.from_numpy(np.stack(chans)), out_shape)
    regions = None
    if labels is not None:
        reg = labels_to_regions(crop(labels, box), label_convention).astype(np.float32)
        regions = (resize(torch.from_numpy(reg), out_shape) >= 0.5).to(torch.uint8)
    return Prepared(image.contiguous(), box, tuple(shape), tuple(crop_shape), regions)
