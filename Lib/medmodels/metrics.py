"""The project's one set of image metrics: masked Dice, HD95 and BraTS region
scores for segmentation; masked PSNR, SSIM and MAE for synthesis.

Every evaluation (``seg/evaluate.py``, ``syn/scoring.py``, the demo, the
Slicer module's self-test) scores through this file, so a figure means the
same thing wherever it is printed.

Importing this file needs numpy only: torch and MONAI are imported inside
``hd95`` and ``ssim``, the two metrics MONAI computes. The Slicer module's
self-test runs in Slicer's own Python, which has no torch, and uses ``dice``
and ``region_scores`` (without HD95) from here.

Conventions (as in BraTS scoring): a region absent from both prediction and
truth has Dice 1 and HD95 0; absent from one of them, Dice 0 and HD95 is the
diagonal of the volume (a finite worst case, so averages stay defined).

Synthesis metrics are computed inside a mask (the brain) and, with
``per_slice=True``, separately for each index of the first axis (axial
slices), a slice without mask voxels giving NaN. The intensity range
(``data_range``, the PSNR peak and SSIM's range) defaults to the truth's range
inside the mask. ``ssim_in_regions`` averages one SSIM map over several regions
(brain, tumour); ``enhancement_contrast`` is the T1c excess contrast of the
enhancing tumour over the edema.
"""

from __future__ import annotations

import warnings

import numpy as np

from medmodels.cropping import bounding_box, crop  # numpy only, as this file
from medmodels.errors import InputError
from medmodels.labels import EDEMA, REGIONS, labels_to_regions

#: SSIM window: Gaussian, 11 voxels wide, sigma 1.5 (Wang et al. 2004; MONAI's default).
SSIM_KERNEL, SSIM_SIGMA = 11, 1.5
#: PSNR is capped 120 dB above the peak (MSE floor 1e-12 of the range squared),
#: so a perfect slice gives a finite figure and per-pattern means stay defined.
_MSE_FLOOR = 1e-12


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks of the same shape (any number of axes; non-zero = inside).

    1.0 when both are empty (BraTS convention).
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise InputError(
            f"Dice of masks of different shapes {pred.shape} and {truth.shape}: put the prediction "
            "on the grid of the truth first."
        )
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, truth).sum() / total)


def dice_per_channel(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """Dice of each channel of two ``(C, *spatial)`` masks, e.g. the ``(3, Z, Y, X)``
    ET/TC/WT regions a network predicts: ``[dice(pred[c], truth[c]) for c]``."""
    return [dice(p, t) for p, t in zip(np.asarray(pred), np.asarray(truth))]


def hd95(pred: np.ndarray, truth: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """95th-percentile Hausdorff distance in mm between two boolean ``(Z, Y, X)`` masks.

    ``spacing_zyx`` is the voxel size in mm in array-axis order. MONAI computes
    it on the box around both masks (2 voxels of margin): the distances are the
    same and a tumour-sized box is much faster than a whole volume.
    """
    import torch  # late: importing this file must not need torch
    from monai.metrics import compute_hausdorff_distance

    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float(np.linalg.norm(np.asarray(pred.shape) * np.asarray(spacing_zyx)))
    box = bounding_box(pred | truth, margin=2)
    pred, truth = np.ascontiguousarray(crop(pred, box)), np.ascontiguousarray(crop(truth, box))
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument; nothing to act on
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            torch.from_numpy(pred)[None, None],
            torch.from_numpy(truth)[None, None],
            include_background=True,
            percentile=95,
            spacing=list(spacing_zyx),
        )
    return float(value.item())


def region_scores(
    pred_labels: np.ndarray, true_labels: np.ndarray, spacing_zyx: tuple[float, float, float] | None = None
) -> dict[str, float]:
    """BraTS scores of two ``(Z, Y, X)`` label maps (either label convention, detected per map).

    Returns ``{"Dice_ET", "Dice_TC", "Dice_WT"}``, plus ``"HD95_ET"``, ``"HD95_TC"``
    and ``"HD95_WT"`` (mm) when ``spacing_zyx`` (mm, array-axis order) is given.
    Without a spacing no torch is needed.
    """
    p, t = labels_to_regions(pred_labels), labels_to_regions(true_labels)
    out = {f"Dice_{r}": dice(p[i], t[i]) for i, r in enumerate(REGIONS)}
    if spacing_zyx is not None:
        out.update({f"HD95_{r}": hd95(p[i], t[i], tuple(spacing_zyx)) for i, r in enumerate(REGIONS)})
    return out


def _check_masked(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, per_slice: bool):
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    mask = np.asarray(mask, bool)
    if not pred.shape == truth.shape == mask.shape:
        raise InputError(
            f"Prediction, truth and mask have the shapes {pred.shape}, {truth.shape}, {mask.shape}: "
            "put all three on one grid first."
        )
    if per_slice and pred.ndim < 2:
        raise InputError("per_slice scores need arrays with the slice axis first, (n, H, W).")
    return pred, truth, mask


def _range(truth: np.ndarray, mask: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    values = truth[mask]
    return float(values.max() - values.min()) if values.size else 1.0


def _masked_mean(values: np.ndarray, mask: np.ndarray, per_slice: bool):
    """Mean of ``values`` over ``mask``: a float, or ``(n,)`` per first-axis index (NaN where the mask is empty)."""
    if not per_slice:
        return float(values[mask].mean()) if mask.any() else float("nan")
    n = len(mask)
    area = mask.reshape(n, -1).sum(1)
    total = np.where(mask, values, 0.0).reshape(n, -1).sum(1)
    return np.where(area > 0, total / np.maximum(area, 1), np.nan)


def mae(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, per_slice: bool = False):
    """Mean absolute error inside ``mask``.

    Args:
        pred, truth: intensities, one shape (``(Z, Y, X)``, ``(H, W)`` or ``(n, H, W)``).
        mask: bool, same shape: where to score.
        per_slice: one figure per index of the first axis, ``(n,)``, instead of one float.
    """
    pred, truth, mask = _check_masked(pred, truth, mask, per_slice)
    return _masked_mean(np.abs(pred - truth), mask, per_slice)


def psnr(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, data_range: float | None = None, per_slice: bool = False
):
    """PSNR (dB) inside ``mask``, peak ``data_range`` (default: the truth's range inside the mask).

    Arguments as in :func:`mae`. Capped at 120 dB above the peak for a perfect prediction.
    """
    pred, truth, mask = _check_masked(pred, truth, mask, per_slice)
    peak = _range(truth, mask, data_range)
    mse = np.asarray(_masked_mean((pred - truth) ** 2, mask, per_slice))
    with np.errstate(invalid="ignore"):  # NaN (empty slices) stays NaN
        value = 10 * np.log10(peak**2 / np.maximum(mse, _MSE_FLOOR * peak**2))
    return value if per_slice else float(value)


def ssim(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, data_range: float | None = None, per_slice: bool = False
):
    """SSIM inside ``mask``: MONAI's SSIM map (Gaussian window 11, sigma 1.5)
    of the two images with everything outside the mask set to 0, averaged over
    the mask's voxels.

    The images are zero-padded by half a window, so the map covers every mask
    voxel, and cropped to the mask's box first (the same map, faster). A 3D
    volume uses a 3D window when its box is at least 11 voxels along every axis,
    else 2D windows slice by slice; ``per_slice`` and 2D images always use 2D windows.

    Args:
        pred, truth, mask: as in :func:`mae`.
        data_range: the intensity range SSIM's constants scale with (default:
            the truth's range inside the mask).
        per_slice: one figure per index of the first axis, ``(n,)``, instead of one float.
    """

    pred, truth, mask = _check_masked(pred, truth, mask, per_slice)
    drange = _range(truth, mask, data_range)
    squeeze = pred.ndim == 2
    if squeeze:
        pred, truth, mask = pred[None], truth[None], mask[None]
    if not mask.any():
        return np.full(len(mask), np.nan) if per_slice else float("nan")
    box = bounding_box(mask)
    if per_slice:  # keep every slice, so the result has one entry per input slice
        box = (slice(None), *box[1:])
    p, t, m = (crop(a, box) for a in (pred, truth, mask))
    dims = 3 if not (per_slice or squeeze) and min(p.shape) >= SSIM_KERNEL else 2
    ssim_map = _ssim_map(np.where(m, p, 0.0), np.where(m, t, 0.0), drange, dims)
    return _masked_mean(ssim_map, m, per_slice)


def _ssim_map(pred: np.ndarray, truth: np.ndarray, data_range: float, dims: int) -> np.ndarray:
    """Per-voxel SSIM of two ``(n, H, W)`` arrays: one 3D map (``dims=3``) or
    ``n`` 2D maps (``dims=2``), each the size of its input."""
    import torch  # late: importing this file must not need torch
    import torch.nn.functional as F
    from monai.metrics.regression import compute_ssim_and_cs

    x, y = (torch.from_numpy(a.astype(np.float32)) for a in (pred, truth))
    x, y = (a[None, None] if dims == 3 else a[:, None] for a in (x, y))  # (B, 1, *spatial)
    pad = (SSIM_KERNEL // 2,) * (2 * dims)  # MONAI's map covers only where the whole window fits
    x, y = F.pad(x, pad), F.pad(y, pad)
    ssim_full, _ = compute_ssim_and_cs(x, y, dims, (SSIM_KERNEL,) * dims, (SSIM_SIGMA,) * dims, data_range=data_range)
    return (ssim_full[0, 0] if dims == 3 else ssim_full[:, 0]).numpy().astype(np.float64)


def ssim_in_regions(
    pred: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    regions: dict[str, np.ndarray],
    data_range: float | None = None,
) -> dict[str, float]:
    """SSIM averaged over several regions of one SSIM map, e.g. the brain and the tumour.

    The map is :func:`ssim`'s: both images with everything outside ``mask`` set
    to 0, one 3D window when the mask's box is at least 11 voxels along every
    axis (else 2D windows slice by slice). Each region's figure is the map's
    mean over ``region & mask``, so a small region (the tumour) is scored with
    its surroundings in the window, not against a black background as
    ``ssim(pred, truth, region)`` would; with ``regions={"x": mask}`` the result
    equals ``ssim(pred, truth, mask)`` of a 3D volume.

    Args:
        pred, truth: ``(Z, Y, X)`` intensities on one grid.
        mask: ``(Z, Y, X)`` bool: where the images count (the brain).
        regions: name -> ``(Z, Y, X)`` bool, each averaged over (inside ``mask``).
        data_range: SSIM's intensity range (default: the truth's range inside ``mask``).

    Returns:
        ``{name: SSIM}``; NaN for a region with no voxel inside ``mask``.
    """

    pred, truth, mask = _check_masked(pred, truth, mask, per_slice=False)
    for name, region in regions.items():
        if np.shape(region) != mask.shape:
            raise InputError(
                f"Region '{name}' has the shape {np.shape(region)}, the images {mask.shape}: put it on their grid."
            )
    if pred.ndim != 3:
        raise InputError(f"ssim_in_regions needs (Z, Y, X) volumes, got {pred.ndim} axes.")
    if not mask.any():
        return {name: float("nan") for name in regions}
    drange = _range(truth, mask, data_range)
    box = bounding_box(mask)
    p, t, m = (crop(a, box) for a in (pred, truth, mask))
    dims = 3 if min(p.shape) >= SSIM_KERNEL else 2
    ssim_map = _ssim_map(np.where(m, p, 0.0), np.where(m, t, 0.0), drange, dims)
    return {name: _masked_mean(ssim_map, m & crop(np.asarray(r, bool), box), False) for name, r in regions.items()}


def enhancement_contrast(image: np.ndarray, labels: np.ndarray, label_convention: str | None = None) -> float:
    """Excess contrast of the enhancing tumour over the edema: mean(ET) / mean(ED) - 1.

    What a radiologist reads as enhancement on T1c: 0 = the enhancing tumour is
    as bright as the edema around it, 1.0 = twice as bright. A ratio, so the
    image must be on a positive intensity scale whose 0 means no signal (raw
    MR intensities, or a synthesised image mapped to the true image's scale),
    not z-scores around 0.

    Args:
        image: ``(Z, Y, X)`` intensities.
        labels: ``(Z, Y, X)`` BraTS labels on the same grid (ET = 4, or 3 from
            2023 on; edema = 2; ``medmodels.labels``).
        label_convention: '2018' or '2023'; None = detected from the labels.

    Returns:
        The excess contrast; NaN when the labels have no ET or no edema voxel.

    Raises:
        InputError: shapes differ, labels are not BraTS labels, or the edema's
            mean intensity is not positive.
    """
    image, labels = np.asarray(image, np.float64), np.asarray(labels)
    if image.shape != labels.shape:
        raise InputError(
            f"Image {image.shape} and labels {labels.shape} differ in shape: put the labels on the image's grid."
        )
    enhancing = labels_to_regions(labels, label_convention)[0]
    edema = labels == EDEMA
    if not enhancing.any() or not edema.any():
        return float("nan")
    base = float(image[edema].mean())
    if base <= 0:
        raise InputError(
            f"The edema's mean intensity is {base:.3g}: the excess contrast needs a positive intensity scale "
            "(raw intensities, not z-scores); map the image to one first."
        )
    return float(image[enhancing].mean()) / base - 1.0
