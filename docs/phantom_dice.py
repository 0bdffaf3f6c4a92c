"""Tumour Dice of segmentation weights on the project's phantoms, with and without their bias field.

A sanity check, not a measure of accuracy on patients: the phantom is a smooth
ellipsoidal brain with one ellipsoidal glioma. Each checkpoint segments phantoms
of several seeds (96x96x64, BraTS's field of view) from FLAIR+T1+T2 (what the
module's self-test gives) and from all four modalities, through the same
``run_case`` as ``medmodels run`` (``--segment``, clean-up on). Each line is one
checkpoint, input, lesion style (``phantom.LESION_CONTRAST``) and bias-field
strength (``make_phantom(bias=...)``; 0.15 is the phantoms' default, 0 none): the
whole-tumour Dice per seed, then the mean whole-tumour, tumour-core and
enhancing-tumour Dice, and the whole tumour's mean precision and recall (too
much or too little tumour; docs/segmentation.md, "The bias field"):

    python docs/phantom_dice.py bundled runs/r27/seg_bias_swa/model.pt
"""

from __future__ import annotations

import argparse

import numpy as np
from medmodels.labels import labels_to_regions
from medmodels.metrics import region_scores
from medmodels.options import RunOptions
from medmodels.phantom import LESION_STYLES, make_phantom
from medmodels.pipeline import run_case

#: Inputs: without T1c (the module's self-test), and all four modalities.
SUBSETS = {"FLAIR+T1+T2": ("flair", "t1", "t2"), "all four": ("flair", "t1", "t1c", "t2")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="'bundled', 'baseline' or a checkpoint path")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 11])
    parser.add_argument("--size", type=int, nargs=3, default=[96, 96, 64], metavar=("X", "Y", "Z"))
    parser.add_argument("--bias", type=float, nargs="+", default=[0.0, 0.15], help="bias-field strengths")
    parser.add_argument("--lesion", nargs="+", choices=LESION_STYLES, default=list(LESION_STYLES))
    parser.add_argument("--no-cleanup", dest="cleanup", action="store_false", help="without the clean-up")
    args = parser.parse_args()
    for lesion in args.lesion:
        for bias in args.bias:
            phantoms = [make_phantom(tuple(args.size), seed, bias=bias, lesion=lesion) for seed in args.seeds]
            for subset, keys in SUBSETS.items():
                for checkpoint in args.checkpoints:
                    options = RunOptions(
                        synthesize=False, device="cpu", seg_checkpoint=checkpoint, cleanup=args.cleanup
                    )
                    rows = []
                    for phantom in phantoms:
                        given = {k: phantom.images[k] for k in keys}
                        found = run_case(given, options).segmentation.array
                        scores = region_scores(found, phantom.labels.array)
                        rows.append([scores[f"Dice_{r}"] for r in ("WT", "TC", "ET")] + whole_tumour_pr(found, phantom))
                    per_seed = " ".join(f"{row[0]:.2f}" for row in rows)
                    wt, tc, et, precision, recall = np.mean(rows, axis=0)
                    print(
                        f"{lesion:6s} bias {bias:.2f} {subset:12s} WT per seed {per_seed} | "
                        f"mean WT {wt:.3f} TC {tc:.3f} ET {et:.3f}, WT precision {precision:.2f} recall {recall:.2f}  "
                        f"{checkpoint}",
                        flush=True,
                    )


def whole_tumour_pr(found: np.ndarray, phantom) -> list[float]:
    """[precision, recall] of the whole tumour found against the phantom's (0 where nothing is found)."""
    pred, truth = (labels_to_regions(a)[2].astype(bool) for a in (found, phantom.labels.array))
    hit = float((pred & truth).sum())
    return [hit / pred.sum() if pred.any() else 0.0, hit / truth.sum()]


if __name__ == "__main__":
    main()
