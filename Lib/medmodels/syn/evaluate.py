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
signed-rank tests compare M2DN with each baseline on the same units: slices
(case x modality x slice; slices of one case are not independent) and the
case means (case x modality; few units, so large p-values).

The metrics themselves are ``medmodels.metrics`` (per slice, inside the brain).
The downstream score (segmentation Dice on the synthesised full set) needs the
segmenter too, so it lives one layer up, in ``medmodels.downstream``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

from medmodels.datasets import split_cases
from medmodels.errors import InputError
from medmodels.metrics import mae, psnr, ssim
from medmodels.modalities import BY_KEY, MODALITY_KEYS, AvailabilityMask
from medmodels.progress import progress
from medmodels.syn.masks import PATTERNS
from medmodels.syn.slices import WorkingCase, prepare_case
from medmodels.syn.synthesize import Synthesizer, load_synthesizer

METHODS = ("m2dn", "regression", "mean_fill")
METRICS = ("psnr", "ssim", "mae")


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
) -> dict[str, np.ndarray]:
    """``{method: (4, n, H, W)}`` z-score predictions on the chosen slices."""
    truth = case.image[:, zs]
    inputs = truth * mask.vector()[:, None, None, None]
    x = torch.from_numpy(inputs).permute(1, 0, 2, 3).contiguous()
    missing = torch.as_tensor(mask.missing_vector())[None].expand(len(zs), -1)
    out = {}
    for name, model in models.items():
        gen = torch.Generator(device=model.device).manual_seed(seed)
        out[name] = model.predict_slices(x, missing, steps, gen).permute(1, 0, 2, 3).numpy() * case.brain[zs][None]
    out["mean_fill"] = mean_fill(inputs, mask) * case.brain[zs][None]
    return out


def paired_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or np.allclose(a[ok], b[ok]):
        return None
    return float(wilcoxon(a[ok], b[ok]).pvalue)


def summarise(rows: list[dict], patterns: Sequence[AvailabilityMask]) -> list[dict]:
    """Per pattern: mean of each metric and method, p-values of M2DN vs each baseline."""
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
                entry[f"p_{metric}_vs_{base}_cases"] = paired_p(
                    [np.nanmean(x["m2dn"][metric]) for x in r], [np.nanmean(x[base][metric]) for x in r]
                )
        table.append(entry)
    return table


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for the Markdown tables ('-' for none)."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(table: list[dict]) -> str:
    """The per-pattern table (PSNR, SSIM, p-values) with the mean of patterns as last row."""
    f = fmt

    def p(v):
        return "-" if v is None else (f"{v:.1e}" if v < 1e-3 else f"{v:.3f}")

    lines = [
        "| available | missing | PSNR M2DN | PSNR reg. | PSNR mean | p vs reg. | p vs mean "
        "| SSIM M2DN | SSIM reg. | SSIM mean | p vs reg. | p vs mean | slices |",
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


def _score_case(c, syn: Synthesizer, reg: Synthesizer, chosen, slice_stride: int, steps, seed) -> list[dict]:
    """Rows (case x pattern x missing modality) of one case, each with per-slice scores of every method."""
    images, _ = c.load()
    case = prepare_case(images, syn.spacing, c.name)
    zs = evaluation_slices(case, slice_stride)
    brain = case.brain[zs]
    rows = []
    for mask in chosen:
        preds = predict_pattern({"m2dn": syn, "regression": reg}, case, zs, mask, steps, seed)
        for key in mask.missing_keys:
            m = MODALITY_KEYS.index(key)
            lo, hi = unit_range(case.image[m], case.brain)
            row = {"case": c.name, "pattern": mask.bits, "modality": key, "slices": zs.tolist(), "unit": [lo, hi]}
            for method in METHODS:
                row[method] = slice_metrics(preds[method][m], case.image[m, zs], brain, lo, hi)
            rows.append(row)
    return rows


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
) -> dict:
    """Run the evaluation on the validation cases of ``split``; writes ``out`` (JSON) and ``out.md``.

    The result's ``"dice"`` is None here; ``medmodels.downstream.add_downstream_dice`` fills it.
    """
    t_start = time.time()
    syn = load_synthesizer(checkpoint, device)
    reg = load_synthesizer(baseline if baseline is not None else "baseline", device)
    if reg.kind != "regression":
        raise InputError("--baseline must be a regression-baseline checkpoint (trained with --model regression).")
    if syn.spacing != reg.spacing:
        raise InputError(f"M2DN ({syn.spacing}) and the baseline ({reg.spacing}) use different working spacings.")
    chosen = parse_patterns(patterns)
    cases = split_cases(data, split, "validation", require_label=False)[: max_cases or None]
    rows: list[dict] = []
    for c in progress(cases, desc="Evaluating cases"):
        rows += _score_case(c, syn, reg, chosen, slice_stride, steps, seed)
    table = summarise(rows, chosen)
    result = {
        "validation_cases": [c.name for c in cases],
        "steps": syn._check_steps(steps),
        "slice_stride": slice_stride,
        "spacing": list(syn.spacing),
        "seed": seed,
        "table": table,
        "dice": None,
        "per_case": [
            {
                k: (
                    v
                    if not isinstance(v, dict)
                    else {mk: [None if not np.isfinite(x) else round(float(x), 5) for x in mv] for mk, mv in v.items()}
                )
                for k, v in r.items()
            }
            for r in rows
        ],
        "wall_s": round(time.time() - t_start, 1),
        "threads": torch.get_num_threads(),
        "markdown": markdown(table),
    }
    write_result(result, out)
    return result
