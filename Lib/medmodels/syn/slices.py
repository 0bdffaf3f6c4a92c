"""Cases on the synthesis working grid, and the 2D slices training draws from them.

A case goes to the working grid in the same way for training, evaluation and
whole-volume synthesis (``medmodels.preprocess`` does each step): brain mask
(from the available modalities), per-modality percentile clip + z-score inside
the brain (0 outside), resampling of the whole volume to the working spacing
(2 mm by default: the CPU budget of the bundled model), then a crop to the
brain's bounding box. ``to_input_grid`` undoes the last two steps.

Axial slices are the ``z`` planes of the ``(Z, Y, X)`` arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.modalities import MODALITY_KEYS
from medmodels.preprocess import (
    BoundingBox,
    Normalizer,
    bounding_box,
    brain_mask,
    crop,
    paste,
    resample_like,
    resample_to_spacing,
)

#: In-plane crops are grown to a multiple of this (the network halves H, W three times).
MULTIPLE_OF = 8


@dataclass
class WorkingCase:
    """One case on the working grid.

    Attributes:
        image: ``(4, Z, Y, X)`` float32 brain z-scores, canonical modality
            order, cropped to the brain; 0 outside the brain and for
            modalities not given.
        brain: ``(Z, Y, X)`` bool brain mask on the same crop.
        available: ``(4,)`` bool, which channels hold data.
        normalizers: the fitted ``Normalizer`` of each given modality.
        box: the crop inside the full working-grid volume.
        working: an ``Image`` describing the full working grid (array unused).
        reference: the input grid (an ``Image``; array = the input brain mask, uint8).
        name: case name, for tables.
    """

    image: np.ndarray
    brain: np.ndarray
    available: np.ndarray
    normalizers: dict[str, Normalizer]
    box: BoundingBox
    working: Image
    reference: Image
    name: str = ""
    slice_weights: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        area = self.brain.reshape(self.brain.shape[0], -1).sum(1).astype(np.float64)
        self.slice_weights = area

    def brain_slices(self, min_fraction: float = 0.0) -> np.ndarray:
        """z indices of slices whose brain area is above ``min_fraction`` of the largest."""
        area = self.slice_weights
        return np.flatnonzero(area > max(min_fraction * area.max(), 0))


def prepare_case(images: Mapping[str, Image], spacing: Sequence[float], name: str = "") -> WorkingCase:
    """Bring a case (images on one grid, raw intensities) to the working grid."""
    keys = [k for k in MODALITY_KEYS if k in images]
    if not keys:
        raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
    ref = images[keys[0]]
    for k in keys:
        if not images[k].same_grid(ref):
            raise InputError(f"{k} is not on the grid of {keys[0]}: bring all inputs onto one grid first "
                             "(medmodels.preprocess.to_common_grid).")
    brain = brain_mask({k: images[k] for k in keys})
    spacing = tuple(float(s) for s in spacing)
    working_brain = resample_to_spacing(ref.with_array(brain.astype(np.float32)), spacing)
    wbrain = working_brain.array > 0.5
    if not wbrain.any():
        raise InputError("The brain mask vanishes at the working spacing: the brain is too small or the "
                         "inputs are nearly empty.")
    box = bounding_box(wbrain, margin=1, multiple_of=MULTIPLE_OF)
    box = (slice(box[0].start, box[0].stop),) + box[1:]
    chans, norms = [], {}
    for k in MODALITY_KEYS:
        if k in images:
            norms[k] = Normalizer.fit(images[k].array, brain)
            z = ref.with_array(norms[k].apply(images[k].array, brain))
            chans.append(crop(resample_to_spacing(z, spacing).array, box))
        else:
            chans.append(np.zeros(crop(wbrain, box).shape, dtype=np.float32))
    image = np.stack(chans).astype(np.float32) * crop(wbrain, box)[None]
    available = np.array([k in images for k in MODALITY_KEYS])
    return WorkingCase(image, crop(wbrain, box), available, norms, box, working_brain,
                       ref.with_array(brain.astype(np.uint8)), name)


def to_input_grid(case: WorkingCase, z_crop: np.ndarray) -> np.ndarray:
    """A ``(Z, Y, X)`` array on the working crop -> float32 on the input grid,
    0 outside the input's brain mask (still in z-scores)."""
    full = paste(z_crop.astype(np.float32), case.box, case.working.shape, fill=0.0)
    out = resample_like(case.working.with_array(full), case.reference, "linear").array
    return np.where(case.reference.array.astype(bool), out, 0.0).astype(np.float32)


def sample_slices(cases: Sequence[WorkingCase], batch: int, size: tuple[int, int], rng: np.random.Generator,
                  min_fraction: float = 0.1, flip: bool = True) -> torch.Tensor:
    """A training batch of axial slices.

    Each item: a case (uniform), a brain slice of it (area above
    ``min_fraction`` of its largest), placed at a random offset in a
    ``size`` canvas (padded with 0 = background), optionally mirrored
    left-right.

    Returns:
        ``(batch, 4, H, W)`` float32 z-scores.
    """
    h, w = size
    out = np.zeros((batch, len(MODALITY_KEYS), h, w), dtype=np.float32)
    for b in range(batch):
        case = cases[rng.integers(len(cases))]
        z = rng.choice(case.brain_slices(min_fraction))
        sl = case.image[:, z]
        # random crop if the slice is larger than the canvas, random placement if smaller
        ys, xs = sl.shape[1], sl.shape[2]
        y0, x0 = rng.integers(0, max(ys - h, 0) + 1), rng.integers(0, max(xs - w, 0) + 1)
        sl = sl[:, y0 : y0 + h, x0 : x0 + w]
        oy, ox = rng.integers(0, h - sl.shape[1] + 1), rng.integers(0, w - sl.shape[2] + 1)
        if flip and rng.random() < 0.5:
            sl = sl[:, :, ::-1]
        out[b, :, oy : oy + sl.shape[1], ox : ox + sl.shape[2]] = sl
    return torch.from_numpy(out)
