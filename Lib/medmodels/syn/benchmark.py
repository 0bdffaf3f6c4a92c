"""Synthesis benchmark on one real case: whole-volume time, and quality against sampler steps.

1. Timing: one modality removed from the case, the rest given to
   ``Synthesizer.synthesize`` with the default steps and samples, on the
   case's own grid (240 x 240 x 155 for BraTS); wall time from images in
   memory to images out, median over repeats, and the process's peak resident
   memory (``ru_maxrss``) before and after. The output is scored against the
   removed modality (z-scores of the true image's normaliser, all brain slices
   on the input grid) so the figure belongs to a known result.
2. Steps sweep: on a fixed subset of working-grid slices, DDIM with each step
   count and (``full=True``) the full-length DDPM sampler (T steps), PSNR and
   SSIM of the missing modalities per pattern, and the time each took.

``benchmark_report`` makes both a report (``medmodels.report``): the JSON, and
the timing line and the sweep's table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medmodels.brain_mask import brain_mask
from medmodels.datasets import find_case
from medmodels.errors import InputError
from medmodels.modalities import MODALITY_KEYS, AvailabilityMask
from medmodels.normalisation import Normalizer
from medmodels.options import DEFAULT_SAMPLES
from medmodels.report import Report, Table
from medmodels.runtime import peak_rss_mib
from medmodels.syn.conditioning import RegionSource
from medmodels.syn.data import to_working_case
from medmodels.syn.inference import load_synthesizer
from medmodels.syn.scoring import evaluation_slices, slice_metrics, unit_range

DEFAULT_SWEEP = (1, 2, 5, 10, 20, 50)


def benchmark(
    case_dir,
    checkpoint=None,
    missing: str = "t1c",
    steps: Sequence[int] | None = None,
    patterns: Sequence[str] = ("1101",),
    full: bool = False,
    slice_stride: int = 8,
    repeats: int = 1,
    device: str = "auto",
    seed: int = 0,
    samples: int = DEFAULT_SAMPLES,
    regions: RegionSource | None = None,
) -> dict:
    """Whole-volume time of one missing modality at the default steps and ``samples`` (the output is
    their mean: ``run``'s default), then quality against the number of steps on working-grid slices.
    ``regions``: a conditioned synthesizer's region source (``Synthesizer``); its time is in the timing."""
    if missing not in MODALITY_KEYS:
        raise InputError(f"Unknown modality '{missing}': use one of {', '.join(MODALITY_KEYS)}.")
    case = find_case(Path(case_dir), require_all=True)
    images, _ = case.load()
    syn = load_synthesizer(checkpoint, device, regions)
    timing = time_whole_volume(syn, case.name, images, missing, repeats, seed, samples)
    configs = [("ddim", s) for s in (DEFAULT_SWEEP if steps is None else steps)]
    configs += [("ddpm", syn.diffusion.num_train_timesteps)] if full else []
    sweep = step_sweep(syn, case.name, images, patterns, configs, slice_stride, seed) if configs else []
    return {"timing": timing, "sweep": sweep, "spacing": list(syn.spacing)}


def time_whole_volume(
    syn, case_name: str, images, missing: str, repeats: int, seed: int, samples: int = DEFAULT_SAMPLES
) -> dict:
    """Seconds to synthesise ``missing`` from the other modalities of the whole
    case (default steps, the mean of ``samples``), and its scores on the input grid."""
    given = {k: v for k, v in images.items() if k != missing}
    mask = AvailabilityMask.from_keys(given)
    rss_before = peak_rss_mib()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = syn.synthesize(given, mask, steps=None, samples=samples, seed=seed)
        times.append(time.perf_counter() - t0)
    brain = brain_mask(images)
    truth_norm = Normalizer.fit(images[missing].array, brain)
    zs = np.flatnonzero(brain.any(axis=(1, 2)))
    zt = truth_norm.apply(images[missing].array, brain)[zs]
    zp = truth_norm.apply(out[missing][0].array, brain)[zs]
    lo, hi = unit_range(zt, brain[zs])
    full_res = {k: float(np.nanmean(v)) for k, v in slice_metrics(zp, zt, brain[zs], lo, hi).items()}
    return {
        "case": case_name,
        "grid": "x".join(map(str, images[missing].size_xyz)),
        "missing": missing,
        "given": list(given),
        "steps": syn.default_steps,
        "samples": samples,
        "device": str(syn.device),
        "threads": torch.get_num_threads(),
        "seconds": [round(t, 2) for t in times],
        "median_s": round(statistics.median(times), 2),
        # the process's peak: with the case and the model loaded (before), and after synthesising
        "peak_rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "input_grid_scores": full_res,
    }


def step_sweep(syn, case_name: str, images, patterns: Sequence[str], configs, slice_stride: int, seed: int) -> list:
    """PSNR/SSIM of each (sampler, steps) in ``configs`` for each availability
    pattern, on every ``slice_stride``-th brain slice of the working grid."""
    sweep: list[dict] = []
    work = to_working_case(images, syn.spacing, case_name)
    zsel = evaluation_slices(work, slice_stride)
    for bits in patterns:
        pm = AvailabilityMask.from_bits(bits)
        truth = work.image[:, zsel]
        x, context = syn.slices(work.image * pm.vector()[:, None, None, None], zsel)
        condition = syn.condition_slices(syn.case_condition(images, pm, work), zsel)
        miss = torch.as_tensor(pm.missing_vector())[None].expand(len(zsel), -1)
        for sampler, n in configs:
            gen = torch.Generator(device=syn.device).manual_seed(seed)
            t0 = time.perf_counter()
            pred = syn.predict_slices(x, miss, n, gen, sampler, context, condition).permute(1, 0, 2, 3).numpy()
            dt = time.perf_counter() - t0
            scores = []
            for key in pm.missing_keys:
                m = MODALITY_KEYS.index(key)
                lo, hi = unit_range(work.image[m], work.brain)
                metrics = slice_metrics(pred[m], truth[m], work.brain[zsel], lo, hi)
                scores.append({k: float(np.nanmean(v)) for k, v in metrics.items()})
            sweep.append(
                {
                    "pattern": bits,
                    "available": pm.label,
                    "sampler": sampler,
                    "steps": n,
                    "psnr": float(np.mean([s["psnr"] for s in scores])),
                    "ssim": float(np.mean([s["ssim"] for s in scores])),
                    "seconds": round(dt, 2),
                    "slices": len(zsel),
                }
            )
    return sweep


def benchmark_report(result: dict, command: str | None = None) -> Report:
    """``benchmark``'s figures as a report: the timing in one line, then the steps sweep as a table (if run).

    Args:
        result: what ``benchmark`` returned.
        command: the command line that made it (``report.command_line``), None from the library.
    """
    t = result["timing"]
    scores = t["input_grid_scores"]
    body: list[str | Table] = [
        f"synthesising {t['missing']} from {', '.join(t['given'])} of {t['case']} ({t['grid']}, {t['steps']} steps, "
        f"mean of {t['samples']} sample(s), "
        f"{t['device']}, {t['threads']} thread(s)): {t['median_s']:.2f} s (median of {len(t['seconds'])}), "
        f"peak RSS {t['peak_rss_mib'] / 1024:.2f} GiB; "
        f"on the input grid PSNR {scores['psnr']:.2f}, SSIM {scores['ssim']:.3f}"
    ]
    if result["sweep"]:
        digits = {"psnr": 2, "ssim": 3}
        keys = ("available", "sampler", "steps", "psnr", "ssim", "seconds", "slices")
        rows = [{k: f"{r[k]:.{digits[k]}f}" if k in digits else r[k] for k in keys} for r in result["sweep"]]
        body.append(Table(keys, rows, ("available", "sampler", "steps", "PSNR", "SSIM", "seconds", "slices")))
    title = f"Synthesis time and quality against sampler steps ({t['case']}, {t['missing']} missing)"
    return Report(kind="bench-syn", title=title, data=result, body=body, command=command)
