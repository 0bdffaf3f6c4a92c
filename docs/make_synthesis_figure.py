"""Make the picture of synthesis on a real case (docs/synthesis_case.png).

One BraTS case with all four modalities: each modality in turn is left out and
synthesised from the other three by the bundled M2DN (the mean of ``--samples``
samples, the default sampler) and by the regression U-Net, on the case's own
1 mm grid (``Synthesizer.synthesize``, what ``medmodels run`` and the Slicer
module give). One axial slice, the one with the most enhancing tumour: the top
row shows the four acquired modalities with the expert labels' outline (which
synthesis never sees); each row below one left-out modality: the true image,
M2DN's output, the regression U-Net's, M2DN's per-voxel standard deviation over
the samples, and M2DN's absolute error. Images are z-scored by their own brain
statistics (as ``evaluate-syn`` scores them) and shown on the true image's
window; std and error on one shared scale per row. Each row's title gives the
slice's SSIM in the brain (``medmodels.metrics.ssim``, the true slice's range)
and the Spearman correlation of std and error over the brain voxels of the
whole volume (``medmodels.syn.scoring.calibration``). A model conditioned on the tumour regions reads
the map of the segmenter ``--regions-from`` on the acquired modalities, never the expert labels.

    .venv/bin/python docs/make_synthesis_figure.py --case ../shared/data/brats18/Brats18_CBICA_ALU_1 \
        --regions-from checkpoints/shaspec_unet_split_brats18.pt --checkpoint checkpoints/m2dn_split_brats18.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "Lib") not in sys.path:
    sys.path.insert(0, str(ROOT / "Lib"))

from medmodels.datasets import find_case  # noqa: E402  (after the path set-up above)
from medmodels.metrics import ssim  # noqa: E402
from medmodels.modalities import MODALITY_KEYS, AvailabilityMask, modality  # noqa: E402
from medmodels.region_condition import load_conditioned_synthesizer  # noqa: E402
from medmodels.syn.scoring import calibration, case_truth, own_zscores  # noqa: E402
from medmodels.weights import read_record, resolve_checkpoint  # noqa: E402

SPLIT_FILE = ROOT / "splits" / "brats18_shared.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, required=True, help="a BraTS case folder with all four modalities")
    parser.add_argument("--samples", type=int, default=4, help="M2DN samples (their mean and std)")
    parser.add_argument("--checkpoint", default=None, help="M2DN weights (default: bundled)")
    parser.add_argument("--baseline", default="baseline", help="regression weights (default: bundled)")
    parser.add_argument(
        "--regions-from",
        default=None,
        help="the segmenter whose map a model conditioned on the tumour regions reads (default: the default "
        "segmenter); give one that never trained on --case",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "synthesis_case.png")
    return parser.parse_args(argv)


def split_side(name: str) -> str:
    split = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))
    return next((side for side in ("training", "validation") if name in split[side]), "not in the split")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case = find_case(args.case, require_all=True, require_label=True)
    images, label_image = case.load()
    brain, labels = case_truth(images, label_image)
    z = int(np.argmax((labels == 4).sum(axis=(1, 2)))) if (labels == 4).any() else labels.shape[0] // 2
    m2dn, reg = (load_conditioned_synthesizer(c, "cpu", args.regions_from) for c in (args.checkpoint, args.baseline))
    sha = read_record(resolve_checkpoint(args.checkpoint, "m2dn_brats18", "m2dn_regression_brats18"))["sha256"]
    truth = {k: own_zscores(images[k].array, brain) for k in MODALITY_KEYS}
    ys, xs = np.nonzero(brain[z])
    crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))

    fig, axes = plt.subplots(5, 5, figsize=(13, 14))
    for ax in axes.flat:
        ax.axis("off")
    for j, key in enumerate(MODALITY_KEYS):
        lo, hi = np.percentile(truth[key][brain], (0.5, 99.5))
        axes[0, j].imshow(truth[key][z][crop], cmap="gray", vmin=lo, vmax=hi)
        axes[0, j].contour(labels[z][crop] > 0, levels=[0.5], colors="lime", linewidths=0.6)
        axes[0, j].set_title(f"{modality(key).display} (acquired)", fontsize=9)
    axes[0, 4].imshow(labels[z][crop], cmap="viridis", vmin=0, vmax=4)
    axes[0, 4].set_title("expert labels (not used)", fontsize=9)
    for i, key in enumerate(MODALITY_KEYS, start=1):
        mask = AvailabilityMask(tuple(k != key for k in MODALITY_KEYS))
        given = {k: images[k] for k in mask.keys}
        mean, std = m2dn.synthesize(given, mask, samples=args.samples, seed=0)[key]
        regression = reg.synthesize(given, mask, seed=0)[key][0]
        syn, base = own_zscores(mean.array, brain), own_zscores(regression.array, brain)
        # the std map in the same z units as the synthesised image (its own brain std)
        sd = std.array / max(float(mean.array[brain].std()), 1e-6)
        error = np.abs(syn - truth[key])
        lo, hi = np.percentile(truth[key][brain], (0.5, 99.5))
        unit = (lo, hi)
        scores = [
            ssim(*(np.clip((a[z] - lo) / (hi - lo), 0, 1) for a in (x, truth[key])), brain[z], 1.0) for x in (syn, base)
        ]
        cal = calibration(sd, syn, truth[key], brain)
        top = float(np.percentile(error[brain], 99))
        name = modality(key).display
        for j, (img, title, cmap, window) in enumerate(
            [
                (truth[key], f"true {name}", "gray", unit),
                (syn, f"M2DN, mean of {args.samples} (SSIM {scores[0]:.3f})", "gray", unit),
                (base, f"regression U-Net (SSIM {scores[1]:.3f})", "gray", unit),
                (sd, f"M2DN std (rho with error {cal['spearman']:.2f})", "magma", (0, top / 2)),
                (error, "|M2DN - true|", "magma", (0, top)),
            ]
        ):
            axes[i, j].imshow(img[z][crop], cmap=cmap, vmin=window[0], vmax=window[1])
            axes[i, j].set_title(title, fontsize=9)
        axes[i, 0].text(-0.08, 0.5, f"{name} left out", transform=axes[i, 0].transAxes, rotation=90, va="center")
    fig.suptitle(
        f"{case.name} ({split_side(case.name)} case), axial slice {z}, 1 mm input grid; M2DN weights {sha[:12]}",
        fontsize=11,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()
