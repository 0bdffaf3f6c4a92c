"""Learning curves of segmentation training runs: validation Dice against
iterations and against training wall time, one panel per region.

Reads each run's ``history.json`` (or, for a run still going, the history
inside its ``last.pt``) and draws every validation subset it recorded
(``val_dice`` either ``{"ET", "TC", "WT"}`` for all four modalities, or
``{"1111": {...}, "1101": {...}, ...}`` per subset). Iterations and time count
on from the run's starting point: ``--offset-iterations`` / ``--offset-hours``
give the compute of the weights it was initialised from.

    python docs/make_learning_curves.py runs/shaspec_c1 --label "ShaSpec (CPU)" \
        --offset-iterations 1000 --offset-hours 0.85 --out docs/seg_learning_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SUBSET_NAMES = {"1111": "all four", "1101": "FLAIR+T1+T2", "1000": "FLAIR only"}
REGIONS = ("ET", "TC", "WT")


def read_history(run: Path) -> list[dict]:
    """Validation records of a run folder (history.json, else last.pt)."""
    hist = run / "history.json"
    if hist.exists():
        return json.loads(hist.read_text(encoding="utf-8"))["history"]
    import torch  # only for a run that has not finished

    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    return json.loads(state["history"])


def curves(history: list[dict]) -> dict[str, dict[str, list]]:
    """``{subset: {"it": [...], "hours": [...], "ET": [...], ...}}``."""
    out: dict[str, dict[str, list]] = {}
    for rec in history:
        dice = rec.get("val_dice")
        if not dice:
            continue
        per_subset = {"1111": dice} if "WT" in dice else dice
        for bits, scores in per_subset.items():
            c = out.setdefault(bits, {"it": [], "hours": [], **{r: [] for r in REGIONS}})
            c["it"].append(rec["iteration"])
            c["hours"].append(rec.get("train_s", 0.0) / 3600.0)
            for r in REGIONS:
                c[r].append(100.0 * scores[r])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders")
    parser.add_argument("--label", action="append", default=None, help="legend name of each run")
    parser.add_argument("--offset-iterations", type=float, action="append", default=None)
    parser.add_argument("--offset-hours", type=float, action="append", default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/seg_learning_curves.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharey="col")
    for i, run in enumerate(args.runs):
        label = args.label[i] if args.label and i < len(args.label) else run.name
        off_it = args.offset_iterations[i] if args.offset_iterations and i < len(args.offset_iterations) else 0.0
        off_h = args.offset_hours[i] if args.offset_hours and i < len(args.offset_hours) else 0.0
        for bits, c in curves(read_history(run)).items():
            name = f"{label}, {SUBSET_NAMES.get(bits, bits)}"
            for j, region in enumerate(REGIONS):
                axes[0, j].plot([x + off_it for x in c["it"]], c[region], marker="o", ms=3, label=name)
                axes[1, j].plot([x + off_h for x in c["hours"]], c[region], marker="o", ms=3, label=name)
    for j, region in enumerate(REGIONS):
        axes[0, j].set_title(f"{region} Dice (%), validation cases")
        axes[0, j].set_xlabel("iterations (total, incl. the initial weights')")
        axes[1, j].set_xlabel("training wall time (hours)")
        for row in (0, 1):
            axes[row, j].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
