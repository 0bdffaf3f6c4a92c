"""Markdown tables of segmentation arms from ``evaluate-seg`` results, for docs/segmentation.md.

    python docs/make_seg_ablation_table.py runs/r18/eval_a/results.json runs/r18/eval_b/results.json ...

For every model in the files (a later file's model of the same name wins):
Dice (%) ET / TC / WT with all four modalities, with FLAIR+T1+T2 and the mean
of the 14 incomplete subsets; then ET per validation case (mean over the 15
subsets), because two of the four validation cases have very little
enhancing tumour and move the ET mean most.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
from medmodels.report import Table, markdown_table

REGIONS = ("ET", "TC", "WT")
ALL_FOUR = "1111"
FLAIR_T1_T2 = "1101"  # bits in the order FLAIR, T1, T1c, T2


def rows_by_model(paths: list[str]) -> dict[str, list[dict]]:
    """Model name -> its per-case, per-subset rows (the last file that holds a model wins)."""
    out: dict[str, list[dict]] = {}
    for path in paths:
        grouped = defaultdict(list)
        for row in json.load(open(path))["rows"]:
            grouped[row["model"]].append(row)
        out.update(grouped)
    return out


def mean_dice(rows: list[dict], keep) -> list[float]:
    """Mean Dice (%) per region over the rows whose subset ``keep`` accepts."""
    chosen = [r for r in rows if keep(r["subset"])]
    return [100 * float(np.mean([r[f"Dice_{g}"] for r in chosen])) for g in REGIONS]


def summary_table(models: dict[str, list[dict]]) -> str:
    columns = ["model", "all four ET / TC / WT", "FLAIR+T1+T2 ET / TC / WT", "mean of 14 incomplete ET / TC / WT"]
    table = []
    for name, rows in models.items():
        cells = [
            mean_dice(rows, lambda s: s == ALL_FOUR),
            mean_dice(rows, lambda s: s == FLAIR_T1_T2),
            mean_dice(rows, lambda s: s != ALL_FOUR),
        ]
        table.append(dict(zip(columns, [name, *(" / ".join(f"{v:.1f}" for v in c) for c in cells)])))
    return markdown_table(Table(columns, table))


def et_per_case_table(models: dict[str, list[dict]]) -> str:
    cases = sorted({r["case"] for rows in models.values() for r in rows})
    table = []
    for name, rows in models.items():
        per_case = [100 * float(np.mean([r["Dice_ET"] for r in rows if r["case"] == c])) for c in cases]
        table.append({"model": name, **{c: f"{v:.1f}" for c, v in zip(cases, per_case)}})
    return markdown_table(Table(["model", *cases], table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="results.json files of evaluate-seg")
    args = parser.parse_args()
    models = rows_by_model(args.results)
    print("Dice (%), mean over the validation cases\n")
    print(summary_table(models))
    print("\nET Dice (%) per validation case, mean over the 15 subsets\n")
    print(et_per_case_table(models))


if __name__ == "__main__":
    main()
