"""Metrics for segmentation (Dice, HD95 per region) and synthesis (PSNR, SSIM,
MAE inside the brain). HD95 and SSIM come from MONAI.

Conventions (as in BraTS scoring): a region absent from both prediction and
truth has Dice 1 and HD95 0; absent from one of them, Dice 0 and HD95 is the
diagonal of the volume (a finite worst case, so averages stay defined).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.metrics import SSIMMetric, compute_hausdorff_distance

from medmodels.labels import REGIONS, labels_to_regions


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean arrays (1.0 when both are empty)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, truth).sum() / total)


def hd95(pred: np.ndarray, truth: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """95th-percentile Hausdorff distance in mm between two boolean ``(Z, Y, X)`` arrays."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float(np.linalg.norm(np.asarray(pred.shape) * np.asarray(spacing_zyx)))
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument; nothing to act on
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(torch.from_numpy(pred)[None, None], torch.from_numpy(truth)[None, None],
                                           include_background=True, percentile=95, spacing=list(spacing_zyx))
    return float(value.item())


def region_scores(pred_labels: np.ndarray, true_labels: np.ndarray, spacing_zyx: tuple[float, float, float],
                  with_hd95: bool = True) -> dict[str, float]:
    """``{"Dice_ET": .., "Dice_TC": .., "Dice_WT": .., "HD95_ET": ..}`` for two label maps
    (either BraTS convention, detected per map)."""
    p, t = labels_to_regions(pred_labels), labels_to_regions(true_labels)
    out = {f"Dice_{r}": dice(p[i], t[i]) for i, r in enumerate(REGIONS)}
    if with_hd95:
        out.update({f"HD95_{r}": hd95(p[i], t[i], spacing_zyx) for i, r in enumerate(REGIONS)})
    return out


def _data_range(truth: np.ndarray, mask: np.ndarray) -> float:
    values = truth[mask]
    return float(values.max() - values.min()) if values.size else 1.0


def psnr(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) inside ``mask``, peak = the truth's range inside the mask."""
    mse = float(np.mean((pred[mask].astype(np.float64) - truth[mask]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(_data_range(truth, mask) ** 2 / mse))


def mae(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error inside ``mask``."""
    return float(np.mean(np.abs(pred[mask].astype(np.float64) - truth[mask])))


def ssim(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """SSIM (MONAI, Gaussian window) over the mask's bounding box with voxels
    outside the mask set to 0, averaged over voxels inside the mask. 2D arrays
    and 3D volumes are both accepted."""
    from medmodels.preprocess import bounding_box, crop  # late: preprocess imports nothing from here

    if pred.ndim == 2:
        pred, truth, mask = pred[None], truth[None], mask[None]
    box = bounding_box(mask)
    p, t, m = (crop(a, box) for a in (pred, truth, mask))
    p = np.where(m, p, 0.0).astype(np.float32)
    t = np.where(m, t, 0.0).astype(np.float32)
    dims = 3 if min(p.shape) >= 11 else 2
    metric = SSIMMetric(spatial_dims=dims, data_range=_data_range(truth, mask), win_size=min(11, min(p.shape[-2:])),
                        reduction="none")
    if dims == 3:
        ssim_map = _ssim_map(metric, torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None])[0, 0]
    else:  # thin stacks: slice by slice
        ssim_map = _ssim_map(metric, torch.from_numpy(p)[:, None], torch.from_numpy(t)[:, None])[:, 0]
    return float(ssim_map[torch.from_numpy(m)].mean())


def _ssim_map(metric: SSIMMetric, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-voxel SSIM ``(B, 1, *spatial)``, padded back to the input size
    (MONAI's map covers only the positions where the whole window fits)."""
    from monai.metrics.regression import compute_ssim_and_cs

    ssim_full, _ = compute_ssim_and_cs(y_pred=x, y=y, spatial_dims=metric.spatial_dims, kernel_size=metric.kernel_size,
                                       kernel_sigma=metric.kernel_sigma, data_range=metric.data_range,
                                       kernel_type=metric.kernel_type, k1=metric.k1, k2=metric.k2)
    pads = []
    for full, valid in zip(reversed(x.shape[2:]), reversed(ssim_full.shape[2:])):
        before = (full - valid) // 2
        pads += [before, full - valid - before]
    return torch.nn.functional.pad(ssim_full, pads, mode="replicate")
