"""Patch sampling (oversampling tumour), modality dropping and augmentation.

All randomness comes from a ``numpy.random.Generator`` passed in, so a seed
fixes the whole sequence of patches, masks and augmentations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medmodels.modalities import AvailabilityMask


@dataclass
class TrainCase:
    """One preprocessed case: ``image (4, Z, Y, X)`` float32, ``regions (3, Z, Y, X)``
    uint8, ``foreground`` ``(N, 3)`` indices of whole-tumour voxels."""

    name: str
    image: torch.Tensor
    regions: torch.Tensor
    foreground: np.ndarray

    @classmethod
    def build(cls, name: str, image: torch.Tensor, regions: torch.Tensor, patch) -> TrainCase:
        pads = []
        for n, p in zip(reversed(image.shape[1:]), reversed(tuple(patch))):
            extra = max(0, p - n)
            pads += [extra // 2, extra - extra // 2]
        if any(pads):
            image = F.pad(image, pads)
            regions = F.pad(regions, pads)
        fg = torch.nonzero(regions[2]).numpy()
        return cls(name, image.contiguous(), regions.contiguous(), fg)


def sample_patch(case: TrainCase, patch, rng: np.random.Generator, fg_prob: float = 0.5):
    """A ``patch``-sized crop: with probability ``fg_prob`` centred on a random
    tumour voxel (tumour oversampling), else on a random voxel."""
    shape = np.array(case.image.shape[1:])
    patch = np.array(patch)
    if len(case.foreground) and rng.random() < fg_prob:
        centre = case.foreground[rng.integers(len(case.foreground))]
    else:
        centre = np.array([rng.integers(n) for n in shape])
    start = np.clip(centre - patch // 2, 0, shape - patch)
    sl = tuple(slice(int(s), int(s + p)) for s, p in zip(start, patch))
    return case.image[(slice(None),) + sl], case.regions[(slice(None),) + sl]


SUBSETS = [m.available for m in AvailabilityMask.all_subsets()]


def draw_mask(rng: np.random.Generator, fixed: tuple[bool, ...] | None = None) -> tuple[bool, ...]:
    """Random modality dropping: uniform over the 15 non-empty subsets, or the
    ``fixed`` subset (a dedicated model)."""
    if fixed is not None:
        return tuple(fixed)
    return SUBSETS[rng.integers(len(SUBSETS))]


def augment(image: torch.Tensor, regions: torch.Tensor, rng: np.random.Generator):
    """Random flips along each axis; per-modality intensity scale (0.9-1.1) and
    shift (+-0.1 SD) inside the brain; random gamma-free contrast only, so the
    z-scored background stays 0."""
    flips = [d + 1 for d in range(3) if rng.random() < 0.5]
    if flips:
        image = torch.flip(image, flips)
        regions = torch.flip(regions, flips)
    scale = torch.from_numpy(rng.uniform(0.9, 1.1, size=(image.shape[0], 1, 1, 1)).astype(np.float32))
    shift = torch.from_numpy(rng.uniform(-0.1, 0.1, size=(image.shape[0], 1, 1, 1)).astype(np.float32))
    brain = image != 0
    image = torch.where(brain, image * scale + shift, image)
    return image, regions


def make_batch(
    cases,
    batch_size: int,
    patch,
    rng: np.random.Generator,
    fg_prob: float = 0.5,
    fixed_mask=None,
    do_augment: bool = True,
):
    """``(x (B,4,*patch), y (B,3,*patch), mask (B,4) bool)``."""
    xs, ys, ms = [], [], []
    for _ in range(batch_size):
        case = cases[rng.integers(len(cases))]
        x, y = sample_patch(case, patch, rng, fg_prob)
        if do_augment:
            x, y = augment(x, y, rng)
        m = draw_mask(rng, fixed_mask)
        x = x * torch.tensor(m, dtype=x.dtype)[:, None, None, None]  # dropped inputs are zeros
        xs.append(x)
        ys.append(y)
        ms.append(m)
    return torch.stack(xs), torch.stack(ys), torch.tensor(ms, dtype=torch.bool)
