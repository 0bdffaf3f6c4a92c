"""Learning curves of training runs: validation figures against iterations and
against training wall time, one panel per figure.

Segmentation runs: Dice per region (ET, TC, WT).
Reads each run's ``history.json`` (or, for a run still going, the history
inside its ``last.pt``) and draws every validation subset it recorded
(``val_dice`` either ``{"ET", "TC", "WT"}`` for all four modalities, or
``{"1111": {...}, "1101": {...}, ...}`` per subset). Synthesis runs (records
with ``val_ssim``): SSIM and PSNR of the missing modalities synthesised with
the default sampler, the validation loss and, where recorded, the error in
the tumour. Iterations and time count
on from the run's starting point: ``--offset-iterations`` / ``--offset-hours``
give the compute of the weights it was initialised from.

    python docs/make_learning_curves.py runs/shaspec_c1 --label "ShaSpec (CPU)" \
        --offset-iterations 1000 --offset-hours 0.85 --out docs/seg_learning_curves.png
    python docs/make_learning_curves.py runs/m2dn runs/regression --label M2DN --label regression \
        --offset-iterations 1500 --offset-iterations 1500 --out docs/syn_learning_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SUBSET_NAMES = {"1111": "all four", "1101": "FLAIR+T1+T2", "1000": "FLAIR only"}
REGIONS = ("ET", "TC", "WT")
#: Synthesis panels: history key -> axis title.
SYN_FIGURES = {
    "val_ssim": "SSIM in the brain, missing modalities",
    "val_psnr": "PSNR (dB)",
    "val_loss": "loss",
    "val_tumour_mse": "MSE in the tumour, missing modalities",
}


def read_history(run: Path) -> list[dict]:
    """Validation records of a run folder (history.json, else last.pt)."""
    hist = run / "history.json"
    if hist.exists():
        return json.loads(hist.read_text(encoding="utf-8"))["history"]
    import torch  # only for a run that has not finished

    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    return json.loads(state["history"])


def curves(history: list[dict]) -> dict[str, dict[str, list]]:
    """``{series: {"it": [...], "hours": [...], panel: [...], ...}}``: one series per
    segmentation subset (panels ET, TC, WT in %), or one for a synthesis run."""
    out: dict[str, dict[str, list]] = {}
    for rec in history:
        if "val_ssim" in rec:
            per_series = {"": {k: rec.get(k) for k in SYN_FIGURES}}
        elif rec.get("val_dice"):
            dice = rec["val_dice"]
            per_subset = {"1111": dice} if "WT" in dice else dice
            per_series = {
                f", {SUBSET_NAMES.get(b, b)}": {r: 100.0 * v[r] for r in REGIONS} for b, v in per_subset.items()
            }
        else:
            continue
        for name, figures in per_series.items():
            c = out.setdefault(name, {"it": [], "hours": [], **{k: [] for k in figures}})
            c["it"].append(rec["iteration"])
            c["hours"].append(rec.get("train_s", 0.0) / 3600.0)
            for k, v in figures.items():
                c[k].append(v)
    return out


def table(runs: dict, labels: list[str], last: int) -> str:
    """Markdown: per segmentation run and subset, the mean Dice of its last ``last``
    validation records (one record is noisy: 4 cases, whole volumes), with the
    iterations and training hours at the final record."""
    lines = [
        f"| run | iterations | training h | subset | ET (mean of last {last}) | TC | WT |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, series in zip(labels, runs.values()):
        for suffix, c in series.items():
            if "WT" not in c:
                continue
            means = [sum(c[r][-last:]) / len(c[r][-last:]) for r in REGIONS]
            lines.append(
                f"| {label} | {c['it'][-1]} | {c['hours'][-1]:.2f} | {suffix.lstrip(', ')} | "
                + " | ".join(f"{m:.1f}" for m in means)
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders")
    parser.add_argument("--label", action="append", default=None, help="legend name of each run")
    parser.add_argument("--offset-iterations", type=float, action="append", default=None)
    parser.add_argument("--offset-hours", type=float, action="append", default=None)
    parser.add_argument(
        "--mark", action="append", default=None, help="ITERATIONS:TEXT, a dashed line where a setting changed"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/seg_learning_curves.png"))
    parser.add_argument(
        "--table", type=int, default=0, metavar="K", help="also print a Markdown table: mean of the last K records"
    )
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {run: curves(read_history(run)) for run in args.runs}
    recorded = {k for c in runs.values() for s in c.values() for k, v in s.items() if any(x is not None for x in v)}
    synthesis = "val_ssim" in recorded
    panels = (
        {k: t for k, t in SYN_FIGURES.items() if k in recorded}
        if synthesis
        else {r: f"{r} Dice (%), validation cases" for r in REGIONS}
    )
    fig, axes = plt.subplots(2, len(panels), figsize=(13, 7), sharey="col", squeeze=False)
    for i, (run, series) in enumerate(runs.items()):
        label = args.label[i] if args.label and i < len(args.label) else run.name
        off_it = args.offset_iterations[i] if args.offset_iterations and i < len(args.offset_iterations) else 0.0
        off_h = args.offset_hours[i] if args.offset_hours and i < len(args.offset_hours) else 0.0
        for suffix, c in series.items():
            for j, key in enumerate(panels):
                axes[0, j].plot([x + off_it for x in c["it"]], c[key], marker="o", ms=3, label=label + suffix)
                axes[1, j].plot([x + off_h for x in c["hours"]], c[key], marker="o", ms=3, label=label + suffix)
    for j, title in enumerate(panels.values()):
        axes[0, j].set_title(title)
        axes[0, j].set_xlabel("iterations (total, incl. the initial weights')")
        axes[1, j].set_xlabel("training wall time (hours)")
        for row in (0, 1):
            axes[row, j].grid(alpha=0.3)
    for mark in args.mark or []:
        at, _, text = mark.partition(":")
        for j in range(len(panels)):
            axes[0, j].axvline(float(at), color="grey", ls="--", lw=0.8)
        axes[0, 0].annotate(text, (float(at), 0.02), xycoords=("data", "axes fraction"), fontsize=7, rotation=90)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)
    if args.table:
        labels = [args.label[i] if args.label and i < len(args.label) else r.name for i, r in enumerate(args.runs)]
        print(table(runs, labels, args.table))


if __name__ == "__main__":
    main()
