"""Make the picture of the Slicer module's flow (docs/slicer_module_flow.png).

It does what the module does, headless with slicer-core: a phantom case with
T1c left out goes into a real MRML scene, the module's logic runs
``medmodels run`` (bundled weights, CPU) and loads the results back as nodes;
the picture shows one axial slice of the three inputs, the synthesised T1c
(next to the phantom's true T1c, which the run never saw), and the
segmentation node exported by Slicer onto the reference grid (next to the
phantom's labels). The figures printed at the end (Dice, timing) are the ones
quoted in docs/slicer_module.md.

    PYTHONPATH=Lib:MissingModalityTools .venv/bin/python docs/make_figure.py [--size 96x96x64] [--seed 7]

``--stand-in`` runs MissingModalityTools/Resources/Testing/slicer_contract_worker.py instead of medmodels (no
weights needed) and stamps the picture as such; it only checks the script.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "Lib", ROOT / "MissingModalityTools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

BRATS_COLOURS = {1: (1.0, 0.0, 0.0), 2: (0.0, 0.8, 0.0), 4: (1.0, 0.9, 0.0)}


def overlay(ax, grey: np.ndarray, labels: np.ndarray | None, title: str) -> None:
    lo, hi = np.percentile(grey[grey > 0], [1, 99.5]) if np.any(grey > 0) else (0, 1)
    g = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.stack([g, g, g], -1)
    if labels is not None:
        for value, colour in BRATS_COLOURS.items():
            m = labels == value
            rgb[m] = 0.45 * rgb[m] + 0.55 * np.array(colour)
    ax.imshow(rgb, origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="96x96x64")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "slicer_module_flow.png")
    parser.add_argument("--stand-in", action="store_true")
    parser.add_argument("--seg-checkpoint", default=None, help="instead of the bundled segmentation weights")
    parser.add_argument("--syn-checkpoint", default=None, help="instead of the bundled synthesis weights")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import slicer
    from MissingModalityToolsLib import nodes as nodeio
    from MissingModalityToolsLib.headless import make_scene
    from MissingModalityToolsLib.inputs import assign_by_name
    from MissingModalityToolsLib.logic import MissingModalityToolsLogic
    from MissingModalityToolsLib.options import RunOptions
    from MissingModalityToolsLib.selftest import _labels_on, dice

    scene = make_scene(set_global=True)
    if args.stand_in:
        command = [
            sys.executable,
            str(ROOT / "MissingModalityTools" / "Resources" / "Testing" / "slicer_contract_worker.py"),
        ]
    else:
        command = [sys.executable, "-m", "medmodels"]
    extra = []
    for flag, value in (("--seg-checkpoint", args.seg_checkpoint), ("--syn-checkpoint", args.syn_checkpoint)):
        if value:
            extra += [flag, str(Path(value).resolve())]
    logic = MissingModalityToolsLogic(
        scene, worker_command=command, pythonpath=[str(ROOT / "Lib")], extra_arguments=extra
    )
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(
            [sys.executable, "-m", "medmodels", "phantom", work, "--seed", str(args.seed), "--size", args.size],
            env=logic.environment(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        case = f"Phantom_{args.seed:03d}"
        folder = os.path.join(work, case)
        loaded = [
            nodeio.read_scalar_volume(scene, os.path.join(folder, f"{case}_{s}.nii.gz"), f"{case}_{s}")
            for s in ("flair", "t1", "t2")
        ]
        true_t1c = slicer.vtkMRMLScalarVolumeNode()
        nodeio.read_into(true_t1c, os.path.join(folder, f"{case}_t1ce.nii.gz"))
        truth_node = slicer.vtkMRMLLabelMapVolumeNode()
        nodeio.read_into(truth_node, os.path.join(folder, f"{case}_seg.nii.gz"))
        inputs, _ = assign_by_name(loaded)
        t0 = time.monotonic()
        result = logic.run_blocking(inputs, RunOptions(device="cpu"), on_log=print)
        seconds = time.monotonic() - t0

        truth = slicer.util.arrayFromVolume(truth_node)
        predicted = _labels_on(result.segmentation, inputs["flair"])
        k = int(np.argmax((truth > 0).sum(axis=(1, 2))))  # the axial slice with the most tumour
        arr = lambda node: slicer.util.arrayFromVolume(node)[k]  # noqa: E731
        fig, axes = plt.subplots(2, 4, figsize=(12, 7.2))
        overlay(axes[0, 0], arr(inputs["flair"]), None, f"input: {inputs['flair'].GetName()}")
        overlay(axes[0, 1], arr(inputs["t1"]), None, f"input: {inputs['t1'].GetName()}")
        overlay(axes[0, 2], arr(inputs["t2"]), None, f"input: {inputs['t2'].GetName()}")
        axes[0, 3].axis("off")
        axes[0, 3].text(
            0.0,
            0.5,
            "T1c not acquired\n(left out of the scene)\n\nmask FLAIR T1 T1c T2 = 1101",
            fontsize=10,
            va="center",
        )
        overlay(axes[1, 0], arr(result.synthesized["t1c"]), None, f"new node: {result.synthesized['t1c'].GetName()}")
        overlay(axes[1, 1], arr(true_t1c), None, "phantom's true T1c (not used)")
        wt, tc, et = (
            dice(predicted > 0, truth > 0),
            dice(np.isin(predicted, (1, 4)), np.isin(truth, (1, 4))),
            dice(predicted == 4, truth == 4),
        )
        overlay(axes[1, 2], arr(inputs["flair"]), predicted[k], f"new node: {result.segmentation.GetName()}")
        axes[1, 2].text(
            0.5,
            -0.03,
            f"Dice vs phantom: WT {wt:.2f}  TC {tc:.2f}  ET {et:.2f}",
            transform=axes[1, 2].transAxes,
            ha="center",
            va="top",
            fontsize=9,
        )
        overlay(axes[1, 3], arr(inputs["flair"]), truth[k], "phantom labels (truth)")
        title = (
            f"MissingModalityTools logic on a {args.size} phantom (seed {args.seed}), slice {k}: "
            f"synthesis + segmentation in {seconds:.0f} s on CPU"
        )
        if args.stand_in:
            title = "STAND-IN WORKER, NOT A MODEL - " + title
        else:

            def which(path):
                return "bundled" if not path else "/".join(Path(path).resolve().parts[-2:])

            title += f"\nweights: synthesis {which(args.syn_checkpoint)}, segmentation {which(args.seg_checkpoint)}"
        fig.suptitle(title, fontsize=10)
        fig.text(0.5, 0.01, "red: necrotic core   green: edema   yellow: enhancing tumour", ha="center", fontsize=9)
        fig.tight_layout(rect=(0, 0.03, 1, 0.95))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=90)
        print(f"wrote {args.out}; Dice WT {wt:.3f} TC {tc:.3f} ET {et:.3f}; run {seconds:.1f} s; slice {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
