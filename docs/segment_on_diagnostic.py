"""Segment on the acquired modalities, on acquired + synthesised, or on the mean of both probability maps
(docs/synthesis.md, "Segmenting on acquired + synthesised"): Dice ET / TC / WT on the split's validation cases,
T1c left out and synthesised by M2DN (mean of 4) with the region map of the same segmenter.

    .venv/bin/python docs/segment_on_diagnostic.py --segmenter checkpoints/shaspec_unet_split_brats18.pt \\
        --checkpoint checkpoints/m2dn_split_brats18.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from medmodels.datasets import discover_cases
from medmodels.labels import labels_to_regions
from medmodels.metrics import dice_per_channel
from medmodels.modalities import AvailabilityMask
from medmodels.region_condition import load_conditioned_synthesizer
from medmodels.seg.data import read_case
from medmodels.seg.inference import load_segmenter, regions_from_probabilities

ROOT = Path(__file__).resolve().parents[1]
ACQUIRED = AvailabilityMask.from_keys(["flair", "t1", "t2"])
ALL_FOUR = AvailabilityMask((True,) * 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "brats18"))
    parser.add_argument("--split", default=str(ROOT / "splits" / "brats18_shared.json"))
    parser.add_argument("--segmenter", default=None, help="segmentation weights (default: the default ensemble)")
    parser.add_argument("--checkpoint", default=None, help="M2DN weights (default: bundled)")
    args = parser.parse_args()
    cases = json.loads(Path(args.split).read_text(encoding="utf-8"))["validation"]
    found = discover_cases(args.data)
    seg = load_segmenter(args.segmenter, "cpu")
    m2dn = load_conditioned_synthesizer(args.checkpoint, "cpu", seg)
    rows: dict[str, list] = {"acquired": [], "acquired + synthesised": [], "mean of both maps": []}
    for name in cases:
        images, labels = read_case(found[name])
        truth = labels_to_regions(labels.array)
        given = {k: images[k] for k in ACQUIRED.keys}
        filled = {**given, "t1c": m2dn.synthesize(given, ACQUIRED, None, 4, 0)["t1c"][0]}
        acquired = seg.probabilities(given, None, ACQUIRED)
        complete = seg.probabilities(filled, None, ALL_FOUR)
        spacing = images["t1"].spacing
        for row, probs in zip(rows, (acquired, complete, (acquired + complete) / 2), strict=True):
            regions = regions_from_probabilities(probs, seg.threshold, spacing, True)
            rows[row].append(dice_per_channel(regions, truth))
        print(name, {k: np.round(v[-1], 3).tolist() for k, v in rows.items()}, flush=True)
    print("| segment on | Dice ET | TC | WT |\n|---|---|---|---|")
    for row, values in rows.items():
        et, tc, wt = np.mean(values, 0)
        print(f"| {row} | {et:.3f} | {tc:.3f} | {wt:.3f} |")


if __name__ == "__main__":
    main()
