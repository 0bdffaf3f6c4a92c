"""Scores of one case for the synthesis evaluation (``medmodels.syn.evaluate`` describes the method).

On the working grid: the methods' predictions on a fixed subset of slices
(``predict_pattern``), per-slice PSNR, SSIM and MAE in the truth's [0, 1]
unit (``slice_metrics``) and the calibration of M2DN's std map
(``calibration``), one row per case, pattern and missing modality
(``score_working_grid_case``). On the input grid: whole synthesised volumes
scored in the brain and the tumour, and the T1c enhancement
(``score_input_grid_case``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from medmodels.brain_mask import brain_mask
from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.labels import labels_to_regions
from medmodels.metrics import enhancement_contrast, mae, psnr, ssim, ssim_in_regions
from medmodels.modalities import MODALITY_KEYS, AvailabilityMask
from medmodels.normalisation import Normalizer
from medmodels.resampling import resample_like
from medmodels.syn.data import WorkingCase, to_working_case
from medmodels.syn.inference import Synthesizer

METHODS = ("m2dn", "regression", "mean_fill")
METRICS = ("psnr", "ssim", "mae")
#: Where the input-grid scores are averaged: the brain, and the whole tumour (label file).
REGIONS_SCORED = ("brain", "tumour")


def unit_range(truth: np.ndarray, brain: np.ndarray) -> tuple[float, float]:
    """The ground truth's (min, max) inside the brain: the [0, 1] mapping of the scores."""
    values = truth[brain]
    return float(values.min()), float(values.max())


def slice_metrics(
    pred: np.ndarray, truth: np.ndarray, brain: np.ndarray, lo: float, hi: float
) -> dict[str, np.ndarray]:
    """PSNR, SSIM and MAE of each slice inside the brain.

    Args:
        pred, truth: ``(n, H, W)`` z-scores.
        brain: ``(n, H, W)`` bool.
        lo, hi: z-scores mapped to 0 and 1 (``unit_range`` of the truth).

    Returns:
        ``{metric: (n,)}``; slices without brain give NaN.
    """
    scale = max(hi - lo, 1e-6)
    pred, truth = (np.clip((a - lo) / scale, 0, 1) for a in (pred, truth))
    return {
        "psnr": psnr(pred, truth, brain, data_range=1.0, per_slice=True),
        "ssim": ssim(pred, truth, brain, data_range=1.0, per_slice=True),
        "mae": mae(pred, truth, brain, per_slice=True),
    }


def mean_fill(x: np.ndarray, mask: AvailabilityMask) -> np.ndarray:
    """``(4, ...)`` z-scores -> every missing channel = the mean of the available ones."""
    out = x.copy()
    avail = list(np.flatnonzero(mask.vector()))
    fill = x[avail].mean(0)
    for c in np.flatnonzero(mask.missing_vector()):
        out[c] = fill
    return out


def evaluation_slices(case: WorkingCase, stride: int) -> np.ndarray:
    """The fixed subset: every ``stride``-th slice whose brain area is at least 10 % of the largest."""
    zs = case.brain_slices(0.1)
    return zs[stride // 2 :: stride] if len(zs) > stride else zs


def predict_pattern(
    models: dict[str, Synthesizer],
    case: WorkingCase,
    zs: np.ndarray,
    mask: AvailabilityMask,
    steps: int | None,
    seed: int,
    samples: int = 1,
    conditions: Mapping[str, np.ndarray | None] | None = None,
) -> dict[str, np.ndarray]:
    """``{method: (4, n, H, W)}`` z-score predictions on the chosen slices; M2DN's
    is the mean of ``samples`` draws (the deterministic regression needs one), and
    with several draws ``"m2dn_std"`` is their per-pixel standard deviation.
    ``conditions``: each conditioned model's region map on the case's working crop
    (``Synthesizer.case_condition``)."""
    given = case.image * mask.vector()[:, None, None, None]
    inputs = given[:, zs]
    missing = torch.as_tensor(mask.missing_vector())[None].expand(len(zs), -1)
    out = {}
    for name, model in models.items():
        x, context = model.slices(given, zs)
        condition = model.condition_slices((conditions or {}).get(name), zs)
        gen = torch.Generator(device=model.device).manual_seed(seed)
        draws = [
            model.predict_slices(x, missing, steps, gen, context=context, condition=condition)
            for _ in range(model.draws(samples))
        ]
        out[name] = torch.stack(draws).mean(0).permute(1, 0, 2, 3).numpy() * case.brain[zs][None]
        if len(draws) > 1:
            out[f"{name}_std"] = (
                torch.stack(draws).std(0, correction=0).permute(1, 0, 2, 3).numpy() * case.brain[zs][None]
            )
    out["mean_fill"] = mean_fill(inputs, mask) * case.brain[zs][None]
    return out


#: Pixels are split at these quantiles of the std map to compare the error where the samples agree and disagree.
CALIBRATION_QUANTILES = (0.2, 0.8)


def calibration(std: np.ndarray, pred: np.ndarray, truth: np.ndarray, brain: np.ndarray) -> dict:
    """Does the std map mark where the error is? One missing modality on the scored slices.

    Args:
        std, pred, truth: ``(n, H, W)`` z-scores: the samples' standard deviation,
            their mean and the true image.
        brain: ``(n, H, W)`` bool: the pixels compared.

    Returns:
        ``{"spearman": rank correlation of std and |error| over brain pixels,
        "error_ratio": mean |error| where std is in its top 20 % over where it is
        in its bottom 20 %}`` (None where the std map is constant). A calibrated
        uncertainty has rho > 0 and a ratio > 1.
    """
    s, e = std[brain], np.abs(pred - truth)[brain]
    if s.size < 2 or np.ptp(s) == 0:
        return {"spearman": None, "error_ratio": None}
    low, high = np.quantile(s, CALIBRATION_QUANTILES)
    bottom, top = e[s <= low], e[s >= high]
    ratio = float(top.mean() / bottom.mean()) if bottom.size and top.size and bottom.mean() > 0 else None
    return {"spearman": float(spearmanr(s, e).statistic), "error_ratio": ratio}


def score_working_grid_case(
    case_name: str,
    images: Mapping[str, Image],
    syn: Synthesizer,
    reg: Synthesizer,
    chosen,
    slice_stride: int,
    steps,
    seed,
    samples: int = 1,
) -> list[dict]:
    """Rows (case x pattern x missing modality) of one case, each with per-slice scores of every method.

    Args:
        case_name: the case's name, in every row.
        images: ``{key: Image}`` all four modalities, one grid, raw intensities (the truth).
        syn, reg: the M2DN and the regression synthesizers.
        chosen: the availability patterns scored.
        slice_stride: every k-th brain slice is scored (``evaluation_slices``).
        steps: DDIM steps (None: the synthesizer's default).
        seed: the samplers' seed.
        samples: M2DN draws averaged (with more than one, the rows get ``calibration``).
    """
    case = to_working_case(images, syn.spacing, case_name)
    zs = evaluation_slices(case, slice_stride)
    brain = case.brain[zs]
    rows = []
    for mask in chosen:
        models = {"m2dn": syn, "regression": reg}
        conditions = {name: m.case_condition(images, mask, case) for name, m in models.items()}
        preds = predict_pattern(models, case, zs, mask, steps, seed, samples, conditions)
        for key in mask.missing_keys:
            m = MODALITY_KEYS.index(key)
            lo, hi = unit_range(case.image[m], case.brain)
            row = {"case": case_name, "pattern": mask.bits, "modality": key, "slices": zs.tolist(), "unit": [lo, hi]}
            for method in METHODS:
                row[method] = slice_metrics(preds[method][m], case.image[m, zs], brain, lo, hi)
            if "m2dn_std" in preds:
                row["calibration"] = calibration(preds["m2dn_std"][m], preds["m2dn"][m], case.image[m, zs], brain)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# Input grid: whole volumes as the user gets them
# ---------------------------------------------------------------------------


def own_zscores(array: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``(Z, Y, X)`` intensities -> z-scores by their own brain statistics (``Normalizer``), 0 outside."""
    return Normalizer.fit(array, brain).apply(array, brain)


def volume_scores(
    pred: np.ndarray, truth: np.ndarray, brain: np.ndarray, tumour: np.ndarray | None
) -> dict[str, dict[str, float | None]]:
    """PSNR, SSIM and MAE of one volume inside the brain and inside the tumour.

    Args:
        pred, truth: ``(Z, Y, X)`` z-scores on the input grid.
        brain: ``(Z, Y, X)`` bool.
        tumour: ``(Z, Y, X)`` bool whole tumour, or None (no labels, or none inside the brain).

    Returns:
        ``{"brain": {metric: value}, "tumour": {...}}`` in the [0, 1] unit of
        ``unit_range`` (the truth's range in the brain); tumour figures None without a tumour.
    """
    lo, hi = unit_range(truth, brain)
    scale = max(hi - lo, 1e-6)
    p, t = (np.clip((a - lo) / scale, 0, 1) * brain for a in (pred, truth))
    regions = {"brain": brain}
    if tumour is not None and (tumour & brain).any():
        regions["tumour"] = tumour & brain
    ssims = ssim_in_regions(p, t, brain, regions, data_range=1.0)
    out: dict[str, dict[str, float | None]] = {r: dict.fromkeys(METRICS) for r in REGIONS_SCORED}
    for name, region in regions.items():
        out[name] = {
            "psnr": psnr(p, t, region, data_range=1.0),
            "ssim": ssims[name],
            "mae": mae(p, t, region),
        }
    return out


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def enhancement(zscores: Mapping[str, np.ndarray], truth: Normalizer, labels: np.ndarray, brain: np.ndarray) -> dict:
    """T1c excess contrast (ET over edema) of the true and each synthesised volume, on one scale.

    Args:
        zscores: ``{"true" or method: (Z, Y, X) z-scores}``, each by its own brain statistics.
        truth: the true T1c's ``Normalizer``: every volume is mapped to the true
            T1c's intensity scale with it (same normalisation), the ratio needs a
            scale whose 0 is no signal.
        labels: ``(Z, Y, X)`` BraTS labels on the same grid.
        brain: ``(Z, Y, X)`` bool.

    Returns:
        ``{name: excess contrast or None}`` (None: no ET or no edema in the labels,
        or a non-positive edema intensity).
    """
    out = {}
    for name, z in zscores.items():
        try:
            out[name] = _finite(enhancement_contrast(truth.invert(z, brain), labels))
        except InputError:  # a non-positive scale in the edema: no figure for this case, the others still count
            out[name] = None
    return out


def case_truth(images: Mapping[str, Image], label_image: Image | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A case's brain mask from all four images, and its labels on the images' grid (None without)."""
    brain = brain_mask(images)
    if label_image is None:
        return brain, None
    reference = images[MODALITY_KEYS[0]]
    if not label_image.same_grid(reference):
        label_image = resample_like(label_image, reference, "nearest")
    return brain, label_image.array


def score_input_grid_case(
    case_name: str,
    images: Mapping[str, Image],
    label_image: Image | None,
    models: Mapping[str, Synthesizer],
    chosen: Sequence[AvailabilityMask],
    steps,
    seed: int,
    samples: int = 1,
) -> list[dict]:
    """Rows (case x pattern x missing modality) of input-grid scores for one case.

    Each row: ``{method: {region: {metric}}}`` for M2DN, regression (whole-volume
    ``synthesize``; M2DN the mean of ``samples``) and the mean fill, plus ``"enhancement"`` for T1c
    (when the case has labels).
    """
    brain, labels = case_truth(images, label_image)
    tumour = None if labels is None else labels_to_regions(labels)[2]
    norms = {k: Normalizer.fit(images[k].array, brain) for k in MODALITY_KEYS}
    truth = {k: norms[k].apply(images[k].array, brain) for k in MODALITY_KEYS}
    rows = []
    for mask in chosen:
        given = {k: images[k] for k in mask.keys}
        out = {name: m.synthesize(given, mask, steps, m.draws(samples), seed) for name, m in models.items()}
        fill = own_zscores(np.mean([truth[k] for k in mask.keys], 0), brain)  # scaled like the models' outputs
        for key in mask.missing_keys:
            z = {name: own_zscores(out[name][key][0].array, brain) for name in models}
            z["mean_fill"] = fill
            row = {"case": case_name, "pattern": mask.bits, "modality": key}
            row.update({name: volume_scores(z[name], truth[key], brain, tumour) for name in METHODS})
            if key == "t1c" and labels is not None:
                row["enhancement"] = enhancement({"true": truth[key], **z}, norms[key], labels, brain)
            rows.append(row)
    return rows
