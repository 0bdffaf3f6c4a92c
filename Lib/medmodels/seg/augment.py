"""Training augmentation of segmentation patches, two strengths.

* ``"light"``: flips along each axis, a per-modality intensity scale (0.9-1.1)
  and shift (+-0.1 SD) inside the brain. The recipe of the first bundled weights.
* ``"nnunet"``: the settings the official ShaSpec code takes from nnU-Net
  (batchgenerators), built from MONAI's dictionary transforms: rotation up to
  +-15 degrees about each axis and scaling 0.85-1.25 (together with p 0.2 each),
  Gaussian noise (p 0.1), Gaussian blur (p 0.2), multiplicative brightness
  0.75-1.25 (p 0.15), contrast 0.75-1.25 around the mean (p 0.15), simulated low
  resolution 0.5-1 (p 0.25), gamma 0.7-1.5 (p 0.3; inverted image p 0.1),
  mirroring along every axis. Elastic deformation is left out (nnU-Net's own
  default leaves it out too, and it costs more than the rest together on a CPU).

A patch for ``"nnunet"`` is cut larger than the training patch
(``spatial_context``), so that rotated and zoomed-out patches are filled with
image instead of zeros; the spatial transform brings it back to the patch size
about its centre (``RandAffined(spatial_size=...)``: the centre crop also
happens when no rotation or scaling is drawn).

Either can be followed by ``bias_field``: a smooth multiplicative intensity
field over the crop, as an uncorrected receive coil leaves in a scan (MONAI's
``RandBiasField``), applied to the raw intensities that the z-scores stand for
(``--bias-field``; docs/segmentation.md, "The bias field").

All randomness comes from the numpy Generator passed in: it seeds the MONAI
transforms for each patch, so a seed fixes every augmentation (and an exact
resume, which restores the Generator, draws the same ones).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from medmodels.seg.config import AUGMENTATIONS

#: nnU-Net's rotation limit (radians) and scale range.
ROTATION = math.radians(15.0)
SCALE = (0.85, 1.25)


def spatial_context(patch, augment: str) -> tuple[int, ...]:
    """The crop cut around a patch centre before augmentation: the patch itself,
    or for ``"nnunet"`` 1.5 times it (a 15-degree rotation of the patch about
    every axis and a 0.85 zoom stay inside)."""
    if augment != "nnunet":
        return tuple(int(p) for p in patch)
    return tuple(int(math.ceil(p * 1.5)) for p in patch)


@lru_cache(maxsize=8)
def _nnunet_transforms(patch: tuple[int, ...]):
    """The MONAI ``Compose`` of the ``"nnunet"`` recipe for ``patch`` (z, y, x)."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandScaleIntensityFixedMeand,
        RandSimulateLowResolutiond,
    )

    img, both = ["image"], ["image", "regions"]
    # MONAI adds 1 to the drawn scale; its grid scale > 1 shows a larger field (zoom out),
    # so the image appears scaled by 1/s: drawing s in 1/1.25 .. 1/0.85 gives 0.85 .. 1.25.
    s_lo, s_hi = 1.0 / SCALE[1] - 1.0, 1.0 / SCALE[0] - 1.0
    return Compose(
        [
            RandAffined(
                both,
                prob=0.36,  # rotation or scaling each with p 0.2, as nnU-Net: 1 - 0.8**2
                rotate_range=(ROTATION, ROTATION, ROTATION),
                scale_range=((s_lo, s_hi),) * 3,
                spatial_size=patch,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandGaussianNoised(img, prob=0.1, mean=0.0, std=0.1, sample_std=True),
            RandGaussianSmoothd(img, prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
            RandScaleIntensityd(img, prob=0.15, factors=0.25),
            RandScaleIntensityFixedMeand(img, prob=0.15, factors=0.25, preserve_range=True),
            RandSimulateLowResolutiond(img, prob=0.25, zoom_range=(0.5, 1.0)),
            RandAdjustContrastd(img, prob=0.1, gamma=(0.7, 1.5), invert_image=True, retain_stats=True),
            RandAdjustContrastd(img, prob=0.3, gamma=(0.7, 1.5), invert_image=False, retain_stats=True),
            RandFlipd(both, prob=0.5, spatial_axis=0),
            RandFlipd(both, prob=0.5, spatial_axis=1),
            RandFlipd(both, prob=0.5, spatial_axis=2),
        ]
    )


def nnunet(image: torch.Tensor, regions: torch.Tensor, patch, rng: np.random.Generator):
    """The ``"nnunet"`` augmentation of one crop.

    Args:
        image: ``(4, *spatial_context(patch))`` float32 z-scores.
        regions: ``(3, *spatial_context(patch))`` uint8 ET, TC, WT.
        patch: the output size (z, y, x).
        rng: seeds every random draw.

    Returns:
        ``(image (4, *patch) float32, regions (3, *patch) uint8)``.
    """
    transforms = _nnunet_transforms(tuple(int(p) for p in patch))
    transforms.set_random_state(seed=int(rng.integers(2**31)))
    out = transforms({"image": image.float(), "regions": regions.float()})
    x = torch.as_tensor(out["image"]).float().contiguous()
    y = (torch.as_tensor(out["regions"]) >= 0.5).to(torch.uint8).contiguous()
    return x, y


def light(image: torch.Tensor, regions: torch.Tensor, rng: np.random.Generator):
    """Random flips along each axis; per-modality intensity scale (0.9-1.1) and
    shift (+-0.1 SD) inside the brain, so the z-scored background stays 0."""
    flips = [d + 1 for d in range(3) if rng.random() < 0.5]
    if flips:
        image = torch.flip(image, flips)
        regions = torch.flip(regions, flips)
    scale = torch.from_numpy(rng.uniform(0.9, 1.1, size=(image.shape[0], 1, 1, 1)).astype(np.float32))
    shift = torch.from_numpy(rng.uniform(-0.1, 0.1, size=(image.shape[0], 1, 1, 1)).astype(np.float32))
    brain = image != 0
    image = torch.where(brain, image * scale + shift, image)
    return image, regions


#: ``bias_field``'s log-field: MONAI's polynomial of degree 3 with coefficients in +-0.1 (its SD over a
#: 40^3 patch is about 0.10; the self-test phantom's field, ``phantom.make_phantom(bias=0.15)``, has 0.13
#: over the whole brain).
BIAS_DEGREE, BIAS_COEFFICIENTS = 3, (-0.1, 0.1)
#: Brain mean over brain SD of the raw intensities: 2.1-3.8 in the BraTS 2018 cases' modalities.
MEAN_OVER_SD = (2.0, 4.0)


def apply_bias(image: torch.Tensor, field: torch.Tensor, mean_over_sd: torch.Tensor) -> torch.Tensor:
    """Z-scores of a scan whose raw intensities are multiplied by ``field``.

    With raw = sd * (z + c), c = mean / sd of the brain, the biased scan's z-scores are
    ``(z + c) * field - c`` (a field near 1 barely moves the case's mean and SD). Outside
    the brain (0) stays 0.

    Args:
        image: ``(C, Z, Y, X)`` z-scores, 0 outside the brain.
        field: ``(1 or C, Z, Y, X)`` positive multiplicative field.
        mean_over_sd: ``(C, 1, 1, 1)``: each channel's c.
    """
    return torch.where(image != 0, (image + mean_over_sd) * field - mean_over_sd, image)


def bias_field(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``image (C, Z, Y, X)`` z-scores under a random smooth field (one per crop, shared by the
    modalities, as a coil's is), each channel's mean over SD drawn from ``MEAN_OVER_SD``."""
    from monai.transforms import RandBiasField

    draw = RandBiasField(degree=BIAS_DEGREE, coeff_range=BIAS_COEFFICIENTS, prob=1.0)
    draw.set_random_state(seed=int(rng.integers(2**31)))
    # np.asarray: MONAI returns a MetaTensor, which the batch should not carry into the network.
    field = torch.from_numpy(np.asarray(draw(np.ones((1, *image.shape[1:]), np.float32)))).to(image.dtype)
    c = torch.from_numpy(rng.uniform(*MEAN_OVER_SD, size=(image.shape[0], 1, 1, 1)).astype(np.float32))
    return apply_bias(image, field, c.to(image.dtype))


def augment(image: torch.Tensor, regions: torch.Tensor, patch, kind: str, rng: np.random.Generator):
    """Augment one crop as ``kind`` says (one of ``AUGMENTATIONS``); returns ``patch``-sized tensors."""
    if kind == "nnunet":
        return nnunet(image, regions, patch, rng)
    if kind == "light":
        return light(image, regions, rng)
    if kind == "none":
        return image, regions
    raise ValueError(f"unknown augmentation '{kind}': use one of {', '.join(AUGMENTATIONS)}")
