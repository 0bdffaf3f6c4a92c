"""What the synthesis networks are trained to minimise, from their prediction.

All variants (``medmodels.syn.diffusion``, ``medmodels.syn.flow``) predict the
clean slices ``x0`` of every modality and share one criterion:

- the paper's joint squared error over all modalities and pixels, optionally
  pixel-weighted (``weight``, the tumour counted 1 + w times);
- optionally the region-mean term: for every tumour region of the training
  labels (necrosis 1, edema 2, enhancing tumour 4) present in a slice, the
  squared error of its *mean* intensity in each missing modality. The pixel
  error lets a network that cannot place the enhancing rim spread its
  brightness thin around it (the synthesised T1c then has no enhancement,
  issue 20); the region mean is only right when the brightness lands inside
  the region, so it teaches contrast between tumour regions, not just pixels.

Tensors are ``(B, M, H, W)`` in diffusion space; ``missing`` ``(B, M)``, 1 = missing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: BraTS labels whose mean intensity the region-mean term matches (necrosis, edema, enhancing).
TUMOUR_LABELS = (1, 2, 4)
#: A region counts in a slice from this many pixels on (a few pixels' mean is noise).
MIN_REGION_PIXELS = 10


def joint_mse(pred: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over all modalities and pixels; with ``weight`` ``(B, 1, H, W)``,
    pixel-weighted and divided by the mean weight, so its scale stays that of the plain mean."""
    if weight is None:
        return F.mse_loss(pred, x0)
    return (weight * (pred - x0) ** 2).mean() / weight.mean()


def region_mean_error(
    pred: torch.Tensor, x0: torch.Tensor, missing: torch.Tensor, regions: torch.Tensor
) -> torch.Tensor:
    """Mean over (slice, missing modality, tumour region present) of the squared error of
    the region's mean intensity; 0 (with a gradient path) when no region is present.

    Args:
        pred, x0: ``(B, M, H, W)`` prediction and truth.
        missing: ``(B, M)``, 1 = missing (available modalities are inputs, not counted).
        regions: ``(B, H, W)`` integer tumour labels (0 = none).
    """
    errors = []
    for label in TUMOUR_LABELS:
        inside = (regions == label).to(pred.dtype)[:, None]  # (B, 1, H, W)
        pixels = inside.sum(dim=(2, 3))  # (B, 1)
        counted = (pixels >= MIN_REGION_PIXELS) & missing.bool()  # (B, M)
        if counted.any():
            mean_error = ((pred - x0) * inside).sum(dim=(2, 3)) / pixels.clamp(min=1)
            errors.append(mean_error[counted] ** 2)
    return torch.cat(errors).mean() if errors else pred.sum() * 0.0


def synthesis_loss(
    pred: torch.Tensor,
    x0: torch.Tensor,
    missing: torch.Tensor,
    weight: torch.Tensor | None = None,
    regions: torch.Tensor | None = None,
    region_weight: float = 0.0,
) -> torch.Tensor:
    """``joint_mse`` plus ``region_weight`` times ``region_mean_error`` (when regions are given)."""
    loss = joint_mse(pred, x0, weight)
    if region_weight and regions is not None:
        loss = loss + region_weight * region_mean_error(pred, x0, missing, regions)
    return loss
