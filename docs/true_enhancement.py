"""The true T1c enhancement of each case of a split: how much the models had to learn from.

Prints, per case of each part of a split, the excess contrast of the enhancing
tumour over the edema on the acquired T1c (``metrics.enhancement_contrast``:
mean(ET) / mean(edema) - 1, the measure ``evaluate-syn`` reports as "true"),
and each part's mean (docs/synthesis.md, "Where the enhancement is lost"):

    python docs/true_enhancement.py ../shared/data/brats18 --split splits/brats18_shared.json
"""

from __future__ import annotations

import argparse

import numpy as np
from medmodels.datasets import split_cases
from medmodels.metrics import enhancement_contrast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="folder of BraTS case folders (with labels)")
    parser.add_argument("--split", required=True, help="split JSON with 'training' and 'validation' case lists")
    args = parser.parse_args()
    for part in ("training", "validation"):
        values = []
        for case in split_cases(args.data, args.split, part):
            images, labels = case.load()
            value = enhancement_contrast(images["t1c"].array, labels.array)
            values.append(value)
            print(f"{part:10s} {case.name:28s} {value:6.2f}")
        print(f"{part:10s} {'mean of ' + str(len(values)) + ' cases':28s} {np.nanmean(values):6.2f}")


if __name__ == "__main__":
    main()
