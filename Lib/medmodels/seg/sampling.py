"""Patch sampling (oversampling tumour), modality dropping and augmentation.

All randomness comes from a ``numpy.random.Generator`` passed in, so a seed
fixes the whole sequence of patches, masks and augmentations. What is drawn,
and how, is a ``PatchRecipe``; its defaults are the official ShaSpec code's
(docs/segmentation.md gives the ablation that compared them with the first
bundled weights' recipe).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medmodels.modalities import AvailabilityMask
from medmodels.seg.augment import augment, bias_field, spatial_context
from medmodels.seg.config import AUGMENTATIONS, FG_REGIONS, MODALITY_DROPS
from medmodels.seg.tumour_mix import MAX_MARGIN, tumour_mix


@dataclass(frozen=True)
class PatchRecipe:
    """How the patches of a training batch are drawn.

    Args:
        fg_prob: probability that a patch is centred on tumour (else on any voxel).
        fg_regions: "regions": on a voxel of a region drawn uniformly among the
            case's ET, TC and WT, so the small enhancing tumour is oversampled
            (official ShaSpec, nnU-Net); "wt": on a whole-tumour voxel.
        modality_drop: "k": keep k ~ U{1..4} modalities, chosen at random (the
            official code: all four a quarter of the time); "subsets": uniform
            over the 15 non-empty subsets (all four 1/15 of the time).
        full_modality_fraction: this first fraction of the run's iterations
            sees all four modalities (the official code: 80k of 180k, 0.44);
            0 for a run that continues from trained weights.
        augment: "none", "light" or "nnunet" (``medmodels.seg.augment``).
        bias_field: probability that a patch, after ``augment``, gets a smooth
            multiplicative intensity field (``medmodels.seg.augment.bias_field``); 0: never
            (and no random number is drawn for it, so earlier runs draw the same patches).
        tumour_mix: probability that a patch, before ``augment``, gets another case's tumour
            pasted in (``medmodels.seg.tumour_mix``); 0: never (no random number drawn), and
            never with one case.
        fixed_mask: a dedicated model's subset (4 booleans), overriding the drop.
    """

    fg_prob: float = 0.5
    fg_regions: str = "regions"
    modality_drop: str = "k"
    full_modality_fraction: float = 0.44
    augment: str = "nnunet"
    bias_field: float = 0.0
    tumour_mix: float = 0.0
    fixed_mask: tuple[bool, ...] | None = None

    def problems(self) -> list[str]:
        out = []
        if not 0.0 <= self.fg_prob <= 1.0:
            out.append(f"--fg-prob must be in 0..1 (got {self.fg_prob})")
        if not 0.0 <= self.full_modality_fraction <= 1.0:
            out.append(f"--full-modality-fraction must be in 0..1 (got {self.full_modality_fraction})")
        if not 0.0 <= self.bias_field <= 1.0:
            out.append(f"--bias-field must be in 0..1 (got {self.bias_field})")
        if not 0.0 <= self.tumour_mix <= 1.0:
            out.append(f"--tumour-mix must be in 0..1 (got {self.tumour_mix})")
        for name, value, allowed in (
            ("--fg-regions", self.fg_regions, FG_REGIONS),
            ("--modality-drop", self.modality_drop, MODALITY_DROPS),
            ("--augment", self.augment, AUGMENTATIONS),
        ):
            if value not in allowed:
                out.append(f"{name} must be one of {', '.join(allowed)} (got '{value}')")
        return out


@dataclass
class TrainCase:
    """One preprocessed case: ``image (4, Z, Y, X)`` float32, ``regions (3, Z, Y, X)``
    uint8, ``foreground`` ``[(N, 3) indices of ET, of TC, of WT voxels]``."""

    name: str
    image: torch.Tensor
    regions: torch.Tensor
    foreground: list

    @classmethod
    def build(cls, name: str, image: torch.Tensor, regions: torch.Tensor, patch) -> TrainCase:
        pads = []
        for n, p in zip(reversed(image.shape[1:]), reversed(tuple(patch))):
            extra = max(0, p - n)
            pads += [extra // 2, extra - extra // 2]
        if any(pads):
            image = F.pad(image, pads)
            regions = F.pad(regions, pads)
        fg = [torch.nonzero(regions[r]).numpy() for r in range(regions.shape[0])]
        return cls(name, image.contiguous(), regions.contiguous(), fg)


def _centre(case: TrainCase, rng: np.random.Generator, recipe: PatchRecipe) -> np.ndarray:
    """A tumour voxel (with probability ``fg_prob``, as ``fg_regions`` says) or any voxel."""
    wt = case.foreground[-1]
    if len(wt) and rng.random() < recipe.fg_prob:
        voxels = wt
        if recipe.fg_regions == "regions":
            present = [v for v in case.foreground if len(v)]
            voxels = present[rng.integers(len(present))]
        return voxels[rng.integers(len(voxels))]
    return np.array([rng.integers(n) for n in case.image.shape[1:]])


def centred_crop(tensor: torch.Tensor, centre, size) -> torch.Tensor:
    """A ``size`` crop of ``tensor (C, Z, Y, X)`` centred on ``centre``, zero-padded
    where it leaves the volume (augmentation crops are larger than the case)."""
    shape = np.array(tensor.shape[1:])
    size = np.array(size)
    start = np.asarray(centre) - size // 2
    lo, hi = np.maximum(start, 0), np.minimum(start + size, shape)
    if np.all(start >= 0) and np.all(start + size <= shape):
        return tensor[(slice(None),) + tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
    out = tensor.new_zeros((tensor.shape[0],) + tuple(int(s) for s in size))
    dst = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start))
    out[(slice(None),) + dst] = tensor[(slice(None),) + tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
    return out


def sample_patch(case: TrainCase, patch, rng: np.random.Generator, recipe: PatchRecipe = PatchRecipe()):
    """A ``patch``-sized crop (inside the volume), centred on tumour with probability ``fg_prob``."""
    shape, size = np.array(case.image.shape[1:]), np.array(patch)
    centre = np.clip(_centre(case, rng, recipe), size // 2, shape - size + size // 2)
    return centred_crop(case.image, centre, patch), centred_crop(case.regions, centre, patch)


SUBSETS = [m.available for m in AvailabilityMask.all_subsets()]


def draw_mask(rng: np.random.Generator, recipe: PatchRecipe = PatchRecipe(), progress: float = 1.0) -> tuple:
    """The modality subset of one patch (4 booleans, canonical order).

    Args:
        progress: the fraction of the run done (iteration / iterations): before
            ``recipe.full_modality_fraction`` every modality is kept.
    """
    if recipe.fixed_mask is not None:
        return tuple(recipe.fixed_mask)
    if progress < recipe.full_modality_fraction:
        return (True,) * 4
    if recipe.modality_drop == "subsets":
        return SUBSETS[rng.integers(len(SUBSETS))]
    kept = rng.choice(4, size=int(rng.integers(1, 5)), replace=False)
    return tuple(i in kept for i in range(4))


def _mix_in_a_tumour(x: torch.Tensor, y: torch.Tensor, case: TrainCase, cases, rng: np.random.Generator):
    """``tumour_mix`` of the crop ``x, y`` of ``case`` with a crop of the same size centred on a
    whole-tumour voxel of another case drawn at random (unchanged when no other case has tumour)."""
    donors = [c for c in cases if c is not case and len(c.foreground[-1])]
    if not donors:
        return x, y
    donor = donors[rng.integers(len(donors))]
    centre = donor.foreground[-1][rng.integers(len(donor.foreground[-1]))]
    size = x.shape[1:]
    margin = int(rng.integers(MAX_MARGIN + 1))
    return tumour_mix(x, y, centred_crop(donor.image, centre, size), centred_crop(donor.regions, centre, size), margin)


def make_batch(
    cases,
    batch_size: int,
    patch,
    rng: np.random.Generator,
    recipe: PatchRecipe = PatchRecipe(),
    progress: float = 1.0,
):
    """``(x (B,4,*patch), y (B,3,*patch), mask (B,4) bool)``; ``progress`` as in ``draw_mask``."""
    xs, ys, ms = [], [], []
    context = spatial_context(patch, recipe.augment)
    for _ in range(batch_size):
        case = cases[rng.integers(len(cases))]
        if context == tuple(patch):
            x, y = sample_patch(case, patch, rng, recipe)
        else:  # a larger crop about the same centre, brought back to ``patch`` by the augmentation
            centre = _centre(case, rng, recipe)
            x, y = centred_crop(case.image, centre, context), centred_crop(case.regions, centre, context)
        if recipe.tumour_mix > 0 and len(cases) > 1 and rng.random() < recipe.tumour_mix:
            x, y = _mix_in_a_tumour(x, y, case, cases, rng)
        x, y = augment(x, y, patch, recipe.augment, rng)
        if recipe.bias_field > 0 and rng.random() < recipe.bias_field:
            x = bias_field(x, rng)
        m = draw_mask(rng, recipe, progress)
        x = x * torch.tensor(m, dtype=x.dtype)[:, None, None, None]  # dropped inputs are zeros
        xs.append(x)
        ys.append(y)
        ms.append(m)
    return torch.stack(xs), torch.stack(ys), torch.tensor(ms, dtype=torch.bool)
