"""Where the input-grid SSIM of a synthesised T1c is lost (docs/synthesis.md, "Where the input-grid SSIM is lost").

``ceiling``: the true T1c through a coarser grid and back, blurred, or replaced by the case's T1, scored against
itself. ``detail``: the synthesised T1c (M2DN, mean of 4, FLAIR+T1+T2 given, the region map of ``--regions-from``)
plus the acquired modalities' fine detail (image minus its Gaussian blur), with weights fitted by least squares on
the true images of training cases. ``blend``: the M2DN output (mean of 4) averaged with a regression's
(an estimate of the same posterior mean from another network), ``w M2DN + (1 - w) regression`` in z-scores, with
the enhancement and the downstream Dice (the bundled ShaSpec on acquired + synthesised, as ``evaluate-syn
--dice``). All score as ``evaluate-syn`` does at the input grid (``medmodels.syn.scoring.volume_scores``) on the
validation cases of the split.

    .venv/bin/python docs/ssim_diagnostics.py ceiling
    .venv/bin/python docs/ssim_diagnostics.py detail --checkpoint checkpoints/m2dn_split_brats18.pt \\
        --regions-from checkpoints/shaspec_unet_split_brats18.pt
    .venv/bin/python docs/ssim_diagnostics.py blend [--missing t1c] --checkpoint checkpoints/m2dn_split_brats18.pt \\
        --regression checkpoints/m2dn_regression_cond_split_brats18.pt \\
        --regions-from checkpoints/shaspec_unet_split_brats18.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from medmodels.brain_mask import brain_mask
from medmodels.datasets import discover_cases
from medmodels.image import Image
from medmodels.modalities import MODALITY_KEYS
from medmodels.resampling import resample_like, resample_to_spacing
from medmodels.seg.data import read_case
from medmodels.syn.scoring import own_zscores, volume_scores
from scipy.ndimage import gaussian_filter

ROOT = Path(__file__).resolve().parents[1]
ACQUIRED = ("t1", "t2", "flair")


def load(case):
    """z-scores of the four modalities (own brain statistics), the brain and the BraTS labels (> 0: the whole tumour)."""
    images, labels = read_case(case)
    brain = brain_mask(images)
    z = {k: own_zscores(img.array.astype(np.float32), brain) for k, img in images.items()}
    return images, z, brain, labels.array


def through(image: Image, spacing: float) -> np.ndarray:
    """``image`` resampled (linear) to an isotropic ``spacing`` grid and back onto its own."""
    return resample_like(resample_to_spacing(image, (spacing,) * 3), image).array


def fine_detail(x: np.ndarray, sigma: float, brain: np.ndarray) -> np.ndarray:
    return (x - gaussian_filter(x, sigma)) * brain


def score(pred: np.ndarray, z: dict, brain: np.ndarray, tumour: np.ndarray, key: str = "t1c") -> tuple[float, float]:
    s = volume_scores(own_zscores(pred * brain, brain), z[key], brain, tumour)
    return s["brain"]["ssim"], s["tumour"]["ssim"]


def ceiling(cases) -> dict[str, list]:
    rows: dict[str, list] = {}
    for case in cases:
        images, z, brain, labels = load(case)
        tumour, t1c = labels > 0, images["t1c"]
        changed = {"1.25 mm grid and back": through(t1c, 1.25), "2 mm grid and back": through(t1c, 2.0)}
        changed.update({f"blur sigma {s}": gaussian_filter(images["t1c"].array, s) for s in (1.0, 1.5, 2.0)})
        changed["the T1 as the T1c"] = images["t1"].array
        for name, array in changed.items():
            rows.setdefault(name, []).append(score(array.astype(np.float32), z, brain, tumour))
    return rows


def detail(cases, training, args) -> dict[str, list]:
    from medmodels.region_condition import load_conditioned_synthesizer

    rows: dict[str, list] = {}
    for sigma in args.sigmas:
        lhs, rhs = [], []
        for case in training[: args.fit_cases]:
            _, z, brain, _ = load(case)
            inner = brain & (gaussian_filter(brain.astype(np.float32), 2) > 0.99)  # away from the brain's edge
            lhs.append(np.stack([fine_detail(z[k], sigma, brain)[inner] for k in ACQUIRED], 1))
            rhs.append(fine_detail(z["t1c"], sigma, brain)[inner])
        a, b = np.concatenate(lhs), np.concatenate(rhs)
        weights = np.linalg.lstsq(a, b, rcond=None)[0]
        explained = 1 - np.var(b - a @ weights) / np.var(b)
        print(f"sigma {sigma}: weights {dict(zip(ACQUIRED, np.round(weights, 3)))}, explained {explained:.3f}")
        rows[f"sigma {sigma} weights"] = [tuple(np.round(weights, 3))]
    m2dn = load_conditioned_synthesizer(args.checkpoint, "cpu", args.regions_from)
    for case in cases:
        images, z, brain, labels = load(case)
        tumour = labels > 0
        pred = m2dn.synthesize({k: images[k] for k in ACQUIRED}, None, None, 4, 0)["t1c"][0].array
        pz = own_zscores(pred, brain)
        rows.setdefault("synthesised", []).append(score(pz, z, brain, tumour))
        for sigma in args.sigmas:
            weights = rows[f"sigma {sigma} weights"][0]
            added = sum(w * fine_detail(z[k], sigma, brain) for w, k in zip(weights, ACQUIRED, strict=True))
            for gain in (0.5, 1.0):
                rows.setdefault(f"+ detail sigma {sigma} x {gain}", []).append(
                    score(pz + gain * added, z, brain, tumour)
                )
    return {k: v for k, v in rows.items() if not k.endswith("weights")}


def blend(cases, args) -> dict[str, list]:
    from medmodels.labels import labels_to_regions
    from medmodels.metrics import dice_per_channel
    from medmodels.modalities import AvailabilityMask
    from medmodels.normalisation import Normalizer
    from medmodels.region_condition import SegmenterRegions
    from medmodels.seg.inference import load_segmenter
    from medmodels.syn.inference import load_synthesizer
    from medmodels.syn.scoring import enhancement

    regions = SegmenterRegions(args.regions_from, "cpu")  # one map per case for both models
    m2dn = load_synthesizer(args.checkpoint, "cpu", regions)
    regression = load_synthesizer(args.regression, "cpu", regions)
    segmenter = load_segmenter("bundled", "cpu")  # ShaSpec, as evaluate-syn --dice
    key = args.missing
    acquired = AvailabilityMask(tuple(k != key for k in MODALITY_KEYS))
    everything = AvailabilityMask((True,) * 4)
    rows: dict[str, list] = {}
    for case in cases:
        images, z, brain, labels = load(case)
        tumour = labels > 0
        given = {k: images[k] for k in acquired.keys}
        mean = m2dn.synthesize(given, acquired, None, 4, 0)[key][0].array
        zm, zr = (own_zscores(a, brain) for a in (mean, regression.synthesize(given, acquired)[key][0].array))
        scale = Normalizer.fit(images[key].array, brain)
        back = Normalizer.fit(mean, brain)  # to the synthesised intensity scale the segmenter is given
        for w in args.weights:
            pz = own_zscores(w * zm + (1 - w) * zr, brain)
            ssim_brain, ssim_tumour = score(pz, z, brain, tumour, key)
            ratio = enhancement({"x": pz}, scale, labels, brain)["x"] if key == "t1c" else None
            filled = images[key].with_array(back.invert(pz, brain).astype(np.float32))
            pred = segmenter.segment({**given, key: filled}, everything, label_convention="2018").array
            dice = dice_per_channel(labels_to_regions(pred, "2018"), labels_to_regions(labels))
            rows.setdefault(f"{w:g} M2DN + {1 - w:g} regression", []).append(
                (ssim_brain, ssim_tumour, np.nan if ratio is None else ratio, *dice)
            )
        if key == "t1c":
            truth = enhancement({"x": z[key]}, scale, labels, brain)["x"]
            rows.setdefault("(true T1c: enhancement)", []).append((np.nan, np.nan, np.nan if truth is None else truth))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("ceiling", "detail", "blend"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "brats18"))
    parser.add_argument("--split", default=str(ROOT / "splits" / "brats18_shared.json"))
    parser.add_argument("--checkpoint", default=None, help="M2DN weights (default: bundled)")
    parser.add_argument("--regions-from", default=None, help="the segmenter of the region map (default: the default)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--fit-cases", type=int, default=6, help="training cases the detail weights are fitted on")
    parser.add_argument("--regression", default="baseline", help="regression weights of the blend (default: bundled)")
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25, 0.0], help="M2DN's w")
    parser.add_argument("--missing", default="t1c", choices=MODALITY_KEYS, help="the modality left out (blend)")
    args = parser.parse_args()
    split = json.loads(Path(args.split).read_text(encoding="utf-8"))
    found = discover_cases(args.data)
    cases = [found[n] for n in split["validation"]]
    if args.what == "blend":
        rows = blend(cases, args)
        print("| | SSIM brain | SSIM tumour | enhancement | downstream Dice ET / TC / WT |\n|---|---|---|---|---|")
        for name, values in rows.items():
            mean = [np.nanmean([v[i] for v in values]) for i in range(len(values[0]))]
            dice = " / ".join(f"{d:.3f}" for d in mean[3:])
            print(f"| {name} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | {dice} |")
        return
    rows = ceiling(cases) if args.what == "ceiling" else detail(cases, [found[n] for n in split["training"]], args)
    print("| | SSIM brain | SSIM tumour |\n|---|---|---|")
    for name, values in rows.items():
        brain, tumour = np.mean(values, 0)
        print(f"| {name} | {brain:.3f} | {tumour:.3f} |")


if __name__ == "__main__":
    main()
