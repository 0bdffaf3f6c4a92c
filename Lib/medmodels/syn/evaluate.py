"""Evaluation of synthesis over the 14 missing patterns: M2DN against two baselines.

For each validation case (all four modalities acquired) and each missing
pattern, the missing modalities are synthesised by

- ``m2dn``: the diffusion model, DDIM with the default (or given) steps;
- ``regression``: the same network trained with the same budget, no diffusion;
- ``mean_fill``: the mean of the available modalities' z-scores (no model).

Scores, inside the brain mask, on the z-scores (the synthesis itself, not the
intensity-scale estimate of ``synthesize``) mapped to [0, 1] by the ground
truth's minimum and maximum inside the brain of that case and modality (both
images clipped to [0, 1], background 0, as synthesis papers do; SSIM is not
shift-invariant, so raw z-scores around 0 would make its luminance term
meaningless): PSNR (peak 1), SSIM (Gaussian 11 x 11, sigma 1.5; the SSIM map
averaged over brain pixels) and MAE (in that [0, 1] unit). They are
computed per axial slice at the working spacing on a fixed subset of brain
slices (every ``slice_stride``-th slice with brain), kept per slice, case and
missing modality, and summarised per pattern. Paired two-sided Wilcoxon
signed-rank tests compare M2DN with each baseline on slices (case x modality
x slice; labelled slice-level: slices of one case are not independent, so
these p-values are too small) and on cases (below).

On the input grid (1 mm for BraTS: what the user sees; ``input_grid=True``,
the default), each missing modality of each case and pattern is synthesised
as a whole volume by ``Synthesizer.synthesize`` (M2DN and regression; the mean
fill from the inputs' z-scores) and scored in 3D inside the brain and inside
the tumour (whole tumour of the case's label file, when it has one). The
synthesised volume is in an intensity scale estimated from the inputs (MR
units are arbitrary), so each image is z-scored by its own brain statistics
(``Normalizer``, as the models' inputs are) and both are mapped to [0, 1] as
above: the scores measure structure and contrast, not the scale estimate.
SSIM is one 3D map over the brain, averaged over the brain and over the
tumour (``metrics.ssim_in_regions``). For T1c, the enhancement: excess
contrast mean(ET) / mean(edema) - 1 (``metrics.enhancement_contrast``) of the
true T1c and of the synthesised one mapped to the true one's intensity scale
(same normalisation), and their ratio per case.

Per-case paired tests (``medmodels.stats.paired_case_test``): cases are the unit; per case,
the mean over its slices and missing modalities (working grid) or its missing
modalities (input grid); M2DN against the regression U-Net by an exact
two-sided Wilcoxon signed-rank test. With n cases the smallest possible p is
2 / 2**n (0.125 for 4 cases), so few cases cannot give a small p, whatever the
difference; the number of cases M2DN wins is reported beside it.

The metrics themselves are ``medmodels.metrics`` (per slice, inside the brain).
The downstream score (segmentation Dice on the synthesised full set) needs the
segmenter too, so it lives one layer up, in ``medmodels.downstream``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr, wilcoxon

from medmodels.datasets import split_cases
from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.labels import labels_to_regions
from medmodels.metrics import enhancement_contrast, mae, psnr, ssim, ssim_in_regions
from medmodels.modalities import BY_KEY, MODALITY_KEYS, AvailabilityMask
from medmodels.options import samples_problem
from medmodels.preprocess import Normalizer, brain_mask, resample_like
from medmodels.progress import progress
from medmodels.stats import CASE_TEST, paired_case_test
from medmodels.syn.masks import PATTERNS
from medmodels.syn.slices import WorkingCase, prepare_case
from medmodels.syn.synthesize import Synthesizer, load_synthesizer

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


def _draws(model: Synthesizer, samples: int) -> int:
    return samples if model.kind == "m2dn" else 1


def predict_pattern(
    models: dict[str, Synthesizer],
    case: WorkingCase,
    zs: np.ndarray,
    mask: AvailabilityMask,
    steps: int | None,
    seed: int,
    samples: int = 1,
) -> dict[str, np.ndarray]:
    """``{method: (4, n, H, W)}`` z-score predictions on the chosen slices; M2DN's
    is the mean of ``samples`` draws (the deterministic regression needs one), and
    with several draws ``"m2dn_std"`` is their per-pixel standard deviation."""
    given = case.image * mask.vector()[:, None, None, None]
    inputs = given[:, zs]
    missing = torch.as_tensor(mask.missing_vector())[None].expand(len(zs), -1)
    out = {}
    for name, model in models.items():
        x, context = model.slices(given, zs)
        gen = torch.Generator(device=model.device).manual_seed(seed)
        draws = [model.predict_slices(x, missing, steps, gen, context=context) for _ in range(_draws(model, samples))]
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


def summarise_calibration(rows: list[dict], patterns: Sequence[AvailabilityMask]) -> list[dict]:
    """Per pattern: the mean over cases of each case's mean calibration figures (rows that have them)."""
    table = []
    for mask in patterns:
        r = [x for x in rows if x["pattern"] == mask.bits and "calibration" in x]
        if not r:
            continue
        entry = _pattern_entry(mask, len({x["case"] for x in r}))
        for key in ("spearman", "error_ratio"):
            entry[key] = _mean(_case_means(r, lambda x, k=key: _nan(x["calibration"][k]))[1])
        table.append(entry)
    return table


def calibration_markdown(table: list[dict]) -> str:
    lines = [
        "Std map against the error of the mean (working grid, brain pixels of the scored slices; mean over cases): "
        "Spearman rank correlation of std and |error|, and the mean |error| where std is in its top 20 % over "
        "where it is in its bottom 20 %:",
        "",
        "| available | missing | Spearman rho | error ratio top/bottom 20 % std | cases |",
        "|---|---|---|---|---|",
    ]
    for e in table:
        lines.append(
            f"| {e['available']} | {e['missing']} | {fmt(e['spearman'], 3)} | {fmt(e['error_ratio'])} | {e['n_cases']} |"
        )
    return "\n".join(lines)


def paired_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or np.allclose(a[ok], b[ok]):
        return None
    return float(wilcoxon(a[ok], b[ok]).pvalue)


def _case_means(rows: list[dict], value) -> tuple[list[str], np.ndarray]:
    """Case names in order of appearance and, per case, the mean of ``value(row)`` over its rows (NaN: none finite)."""
    cases = list(dict.fromkeys(x["case"] for x in rows))
    means = []
    for case in cases:
        values = np.array([value(x) for x in rows if x["case"] == case], float)
        means.append(float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan"))
    return cases, np.array(means)


def summarise(rows: list[dict], patterns: Sequence[AvailabilityMask]) -> list[dict]:
    """Working grid, per pattern: mean of each metric and method over slices; M2DN against each
    baseline: ``p_<metric>_vs_<base>`` over slices (slice-level), ``test_<metric>_vs_<base>_cases``
    (``paired_case_test`` of per-case means) and its p as ``p_<metric>_vs_<base>_cases``."""
    table = []
    for mask in patterns:
        r = [x for x in rows if x["pattern"] == mask.bits]
        if not r:
            continue
        entry: dict = {
            "pattern": mask.bits,
            "available": mask.label,
            "missing": "+".join(BY_KEY[k].display for k in mask.missing_keys),
            "n_case_modality": len(r),
            "n_slices": int(sum(len(x["slices"]) for x in r)),
        }
        for metric in METRICS:
            for method in METHODS:
                per_slice = np.concatenate([x[method][metric] for x in r])
                entry[f"{method}_{metric}"] = float(np.nanmean(per_slice))
            for base in METHODS[1:]:
                a = np.concatenate([x["m2dn"][metric] for x in r])
                b = np.concatenate([x[base][metric] for x in r])
                entry[f"p_{metric}_vs_{base}"] = paired_p(a, b)
                test = paired_case_test(
                    *(_case_means(r, lambda x, m=m, k=metric: np.nanmean(x[m][k]))[1] for m in ("m2dn", base))
                )
                entry[f"test_{metric}_vs_{base}_cases"] = test
                entry[f"p_{metric}_vs_{base}_cases"] = test["p"]
        table.append(entry)
    return table


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for the Markdown tables ('-' for none)."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(table: list[dict]) -> str:
    """The working-grid per-pattern table (PSNR, SSIM, slice-level p-values) with the mean of patterns as last row."""
    f = fmt

    def p(v):
        return "-" if v is None else (f"{v:.1e}" if v < 1e-3 else f"{v:.3f}")

    lines = [
        "| available | missing | PSNR M2DN | PSNR reg. | PSNR mean | p slices vs reg. | p slices vs mean "
        "| SSIM M2DN | SSIM reg. | SSIM mean | p slices vs reg. | p slices vs mean | slices |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        lines.append(
            f"| {e['available']} | {e['missing']} | {f(e['m2dn_psnr'])} | {f(e['regression_psnr'])} | "
            f"{f(e['mean_fill_psnr'])} | {p(e['p_psnr_vs_regression'])} | {p(e['p_psnr_vs_mean_fill'])} | "
            f"{f(e['m2dn_ssim'], 3)} | {f(e['regression_ssim'], 3)} | {f(e['mean_fill_ssim'], 3)} | "
            f"{p(e['p_ssim_vs_regression'])} | {p(e['p_ssim_vs_mean_fill'])} | {e['n_slices']} |"
        )
    avg = (
        {k: float(np.mean([e[k] for e in table])) for k in table[0] if k.endswith(("_psnr", "_ssim", "_mae"))}
        if table
        else {}
    )
    if avg:
        lines.append(
            f"| **mean of patterns** | | {f(avg['m2dn_psnr'])} | {f(avg['regression_psnr'])} | "
            f"{f(avg['mean_fill_psnr'])} | | | {f(avg['m2dn_ssim'], 3)} | {f(avg['regression_ssim'], 3)} | "
            f"{f(avg['mean_fill_ssim'], 3)} | | | |"
        )
    return "\n".join(lines)


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
        out = {name: m.synthesize(given, mask, steps, _draws(m, samples), seed) for name, m in models.items()}
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


def _pattern_entry(mask: AvailabilityMask, n_cases: int) -> dict:
    return {
        "pattern": mask.bits,
        "available": mask.label,
        "missing": "+".join(BY_KEY[k].display for k in mask.missing_keys),
        "n_cases": n_cases,
    }


def _mean(values) -> float | None:
    values = np.asarray([np.nan if v is None else v for v in values], float)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else None


def summarise_input_grid(rows: list[dict], patterns: Sequence[AvailabilityMask]) -> list[dict]:
    """Input grid, per pattern: ``<method>_<region>_<metric>`` = the mean over cases of each
    case's mean over its missing modalities, and ``test_<region>_<metric>`` =
    ``paired_case_test`` of M2DN against the regression U-Net on those per-case means."""
    table = []
    for mask in patterns:
        r = [x for x in rows if x["pattern"] == mask.bits]
        if not r:
            continue
        entry = _pattern_entry(mask, len({x["case"] for x in r}))
        for region, metric in itertools.product(REGIONS_SCORED, METRICS):
            per_case = {}
            for method in METHODS:
                _, per_case[method] = _case_means(r, lambda x, m=method, g=region, k=metric: _nan(x[m][g][k]))
                entry[f"{method}_{region}_{metric}"] = _mean(per_case[method])
            entry[f"test_{region}_{metric}"] = paired_case_test(per_case["m2dn"], per_case["regression"])
        table.append(entry)
    return table


def _nan(value: float | None) -> float:
    return np.nan if value is None else value


def summarise_enhancement(rows: list[dict], patterns: Sequence[AvailabilityMask]) -> list[dict]:
    """T1c enhancement, per pattern with T1c missing: the per-case excess contrasts (true and
    each method), each method's ratio to the true one (None where the true contrast is not
    positive), and their means over cases; ``m2dn_reaches_half``: mean M2DN ratio >= 0.5."""
    table = []
    for mask in patterns:
        r = [x for x in rows if x["pattern"] == mask.bits and x.get("enhancement")]
        if "t1c" not in mask.missing_keys or not r:
            continue
        cases = []
        for x in r:
            e = x["enhancement"]
            ok = e["true"] is not None and e["true"] > 0
            ratios = {f"{m}_ratio": e[m] / e["true"] if ok and e[m] is not None else None for m in METHODS}
            cases.append({"case": x["case"], **e, **ratios})
        entry = {**_pattern_entry(mask, len(cases)), "cases": cases}
        for key in ("true", *METHODS, *(f"{m}_ratio" for m in METHODS)):
            entry[key] = _mean([c[key] for c in cases])
        ratio = entry["m2dn_ratio"]
        entry["m2dn_reaches_half"] = None if ratio is None else bool(ratio >= 0.5)
        table.append(entry)
    return table


def _test_cell(test: dict, digits: int) -> str:
    """'+0.012 (3/4, p 0.250)': mean difference, cases won, p."""
    if test["mean_difference"] is None:
        return "-"
    p = "-" if test["p"] is None else f"{test['p']:.3f}"
    return f"{test['mean_difference']:+.{digits}f} ({test['wins']}/{test['n']}, p {p})"


def case_tests_markdown(table: list[dict], input_table: list[dict]) -> str:
    """Per-case paired tests, M2DN minus regression, on the working grid and (when scored) the input grid."""
    by_pattern = {e["pattern"]: e for e in input_table}
    cols = [("SSIM working", "ssim", 3), ("PSNR working", "psnr", 2)]
    extra = [("SSIM input brain", "brain_ssim", 3), ("PSNR input brain", "brain_psnr", 2)]
    extra += [("SSIM input tumour", "tumour_ssim", 3)]
    extra = extra if input_table else []
    lines = [
        "Per-case paired tests, M2DN minus regression U-Net: mean difference over cases (cases M2DN wins / "
        f"cases, p). {CASE_TEST}; with n cases the smallest possible p is 2/2^n (0.125 for 4 cases).",
        "",
        "| available | missing | " + " | ".join(c[0] for c in cols + extra) + " |",
        "|---|---|" + "---|" * len(cols + extra),
    ]
    for e in table:
        cells = [_test_cell(e[f"test_{key}_vs_regression_cases"], d) for _, key, d in cols]
        i = by_pattern.get(e["pattern"])
        cells += [_test_cell(i[f"test_{key}"], d) if i else "-" for _, key, d in extra]
        lines.append(f"| {e['available']} | {e['missing']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def input_grid_markdown(input_table: list[dict], enhancement_table: list[dict]) -> str:
    """The input-grid table (brain and tumour) and the T1c enhancement table."""
    f = fmt
    lines = [
        "Input grid (whole volumes as synthesised), mean over cases:",
        "",
        "| available | missing | SSIM brain M2DN | reg. | mean | PSNR brain M2DN | reg. | mean "
        "| SSIM tumour M2DN | reg. | mean | PSNR tumour M2DN | reg. | cases |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in input_table:
        cells = [f(e[f"{m}_brain_ssim"], 3) for m in METHODS] + [f(e[f"{m}_brain_psnr"]) for m in METHODS]
        cells += [f(e[f"{m}_tumour_ssim"], 3) for m in METHODS] + [f(e[f"{m}_tumour_psnr"]) for m in METHODS[:2]]
        lines.append(f"| {e['available']} | {e['missing']} | " + " | ".join(cells) + f" | {e['n_cases']} |")
    if enhancement_table:
        lines += [
            "",
            "T1c enhancement, excess contrast mean(ET) / mean(edema) - 1 on the true T1c's scale; ratio = "
            "synthesised / true, mean over cases (the floor: M2DN ratio >= 0.5):",
            "",
            "| available | true | M2DN | reg. | mean fill | M2DN / true | reg. / true | cases |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in enhancement_table:
            cells = [f(e[k]) for k in ("true", *METHODS, "m2dn_ratio", "regression_ratio")]
            lines.append(f"| {e['available']} | " + " | ".join(cells) + f" | {e['n_cases']} |")
        for e in enhancement_table:
            per_case = ", ".join(f"{c['case']} {f(c['true'])} / {f(c['m2dn'])}" for c in e["cases"])
            lines.append(f"\n{e['available']}, per case (true / M2DN): {per_case}.")
    return "\n".join(lines)


def parse_patterns(text: str | None) -> list[AvailabilityMask]:
    """Comma-separated availability bits ("1101,1000"); None = the 14 missing patterns."""
    return [AvailabilityMask.from_bits(b.strip()) for b in text.split(",") if b.strip()] if text else list(PATTERNS)


def write_result(result: dict, out) -> Path:
    """Write ``result`` to ``out`` (JSON) and its ``markdown`` to ``out`` with suffix .md."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(result["markdown"] + "\n", encoding="utf-8")
    return out


def _score_case(
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
    """Rows (case x pattern x missing modality) of one case, each with per-slice scores of every method."""
    case = prepare_case(images, syn.spacing, case_name)
    zs = evaluation_slices(case, slice_stride)
    brain = case.brain[zs]
    rows = []
    for mask in chosen:
        preds = predict_pattern({"m2dn": syn, "regression": reg}, case, zs, mask, steps, seed, samples)
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


def _rounded(rows: list[dict]) -> list[dict]:
    """Per-slice scores of working-grid rows as JSON lists (5 decimals, None for NaN)."""
    return [
        {
            k: (
                v
                if not isinstance(v, dict) or k == "calibration"
                else {mk: [None if not np.isfinite(x) else round(float(x), 5) for x in mv] for mk, mv in v.items()}
            )
            for k, v in r.items()
        }
        for r in rows
    ]


def _all_markdown(table, input_table, enhancement_table, calibration_table) -> str:
    """The evaluation's Markdown: working grid, per-case tests, input grid (None: not scored), calibration."""
    text = markdown(table) + "\n\n" + case_tests_markdown(table, input_table or [])
    if input_table is not None:
        text += "\n\n" + input_grid_markdown(input_table, enhancement_table)
    if calibration_table:
        text += "\n\n" + calibration_markdown(calibration_table)
    return text


def evaluate(
    data,
    split,
    out,
    checkpoint=None,
    baseline=None,
    steps: int | None = None,
    slice_stride: int = 4,
    max_cases: int | None = None,
    patterns: str | None = None,
    device: str = "auto",
    seed: int = 0,
    input_grid: bool = True,
    samples: int = 1,
) -> dict:
    """Run the evaluation on the validation cases of ``split``; writes ``out`` (JSON) and ``out.md``.

    Args:
        data, split: the dataset folder and the split JSON (its validation cases are scored).
        out: the JSON path; the Markdown tables go beside it (``.md``).
        checkpoint, baseline: M2DN and regression checkpoints (None: the bundled ones).
        steps: DDIM steps (None: the synthesizer's default).
        slice_stride: every k-th brain slice of the working grid is scored.
        max_cases: score only the first validation cases.
        patterns: comma-separated availability bits (None: all 14).
        device: "auto", "cpu", "cuda", ...
        seed: the samplers' seed.
        input_grid: also synthesise whole volumes and score them on the input
            grid (brain, tumour, T1c enhancement); the slow part.
        samples: M2DN's output is the mean of this many samples (an estimate of
            the posterior mean; ``run --samples``).

    The result's ``"dice"`` is None here; ``medmodels.downstream.add_downstream_dice`` fills it.
    """
    t_start = time.time()
    if samples_problem(samples):
        raise InputError(samples_problem(samples))
    syn = load_synthesizer(checkpoint, device)
    reg = load_synthesizer(baseline if baseline is not None else "baseline", device)
    if reg.kind != "regression":
        raise InputError("--baseline must be a regression-baseline checkpoint (trained with --model regression).")
    if syn.spacing != reg.spacing:
        raise InputError(f"M2DN ({syn.spacing}) and the baseline ({reg.spacing}) use different working spacings.")
    chosen = parse_patterns(patterns)
    cases = split_cases(data, split, "validation", require_label=False)[: max_cases or None]
    rows: list[dict] = []
    input_rows: list[dict] = []
    for c in progress(cases, desc="Evaluating cases"):
        images, label_image = c.load()  # read once: both grids score the same files
        rows += _score_case(c.name, images, syn, reg, chosen, slice_stride, steps, seed, samples)
        if input_grid:
            models = {"m2dn": syn, "regression": reg}
            input_rows += score_input_grid_case(c.name, images, label_image, models, chosen, steps, seed, samples)
    table = summarise(rows, chosen)
    input_table = summarise_input_grid(input_rows, chosen)
    enhancement_table = summarise_enhancement(input_rows, chosen)
    calibration_table = summarise_calibration(rows, chosen)
    text = _all_markdown(table, input_table if input_grid else None, enhancement_table, calibration_table)
    result = {
        "validation_cases": [c.name for c in cases],
        "steps": syn._check_steps(steps),
        "samples": samples,
        "slice_stride": slice_stride,
        "spacing": list(syn.spacing),
        "seed": seed,
        "case_test": CASE_TEST,
        "table": table,
        "input_grid": input_table if input_grid else None,
        "enhancement": enhancement_table if input_grid else None,
        "calibration": calibration_table or None,
        "dice": None,
        "per_case": _rounded(rows),
        "per_case_input_grid": input_rows if input_grid else None,
        "wall_s": round(time.time() - t_start, 1),
        "threads": torch.get_num_threads(),
        "markdown": text,
    }
    write_result(result, out)
    return result
