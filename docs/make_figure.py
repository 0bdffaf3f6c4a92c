"""Make the picture of the Slicer module's flow (docs/slicer_module_flow.png).

It does what the module does, headless with slicer-core: a case with one
modality left out goes into a real MRML scene as volumes named the BraTS way
(so the module's auto-assign fills the selectors), the module's logic runs
``medmodels run`` (the real worker, bundled weights, CPU: synthesis and
segmentation) and loads the results back as nodes. The picture shows one
axial slice through the tumour: the three inputs, the synthesised modality
next to the true one (which the run never saw), and the segmentation node,
exported by Slicer onto the reference grid, with the contour of the case's
true labels (its ``_seg`` file, which the module never sees). The title holds
the Dice figures of that run (``medmodels.metrics.region_scores``, whole
volume) and its time.

    # a real BraTS 2018 case (the README's figure: a validation case, never trained on; the title says
    # so only when no checkpoint that ran lists it among its training cases)
    OMP_NUM_THREADS=1 .venv/bin/python docs/make_figure.py --case ../shared/data/brats18/Brats18_2013_20_1 --leave-out t1c \
        --seg-checkpoint checkpoints/shaspec_unet_split_brats18.pt \
        --syn-checkpoint checkpoints/m2dn_split_brats18.pt   # the default's recipe and M2DN stage 6, on 11 cases
    # no data needed: a phantom made by ``medmodels phantom`` (the default without --case)
    OMP_NUM_THREADS=1 .venv/bin/python docs/make_figure.py [--size 96x96x64] [--seed 7]

``--stand-in`` runs MissingModalityTools/Resources/Testing/slicer_contract_worker.py instead of medmodels (no
weights needed) and stamps the picture as such; it only checks the script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "Lib", ROOT / "MissingModalityTools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from medmodels.errors import InputError  # noqa: E402  (after the path set-up above)
from medmodels.modalities import MODALITY_KEYS, modality  # noqa: E402

#: BraTS 2018 label value -> colour of its fill (necrotic core, edema, enhancing tumour).
BRATS_COLOURS = {1: (1.0, 0.0, 0.0), 2: (0.0, 0.8, 0.0), 4: (1.0, 0.9, 0.0)}
#: The split the bundled weights were trained with: the title says which side a real case is on.
SPLIT_FILE = ROOT / "splits" / "brats18_shared.json"
#: Voxels kept around the head when a slice is cropped for the picture.
CROP_MARGIN = 6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=None, help="a BraTS 2018 case folder (default: a phantom)")
    parser.add_argument("--leave-out", default="t1c", choices=MODALITY_KEYS, help="the modality not acquired")
    parser.add_argument("--size", default="96x96x64", help="phantom size XxYxZ (without --case)")
    parser.add_argument("--seed", type=int, default=7, help="phantom seed (without --case)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "slicer_module_flow.png")
    parser.add_argument("--stand-in", action="store_true", help="the contract stand-in worker, not the models")
    parser.add_argument("--seg-checkpoint", default=None, help="instead of the bundled segmentation weights")
    parser.add_argument("--syn-checkpoint", default=None, help="instead of the bundled synthesis weights")
    return parser.parse_args(argv)


def case_files(folder: Path) -> dict[str, Path]:
    """Modality key (and "seg") -> file of a BraTS 2018 case folder ``<case>/<case>_<suffix>.nii.gz``."""
    case = folder.name
    files = {key: folder / f"{case}_{modality(key).brats2018}.nii.gz" for key in MODALITY_KEYS}
    files["seg"] = folder / f"{case}_seg.nii.gz"
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise InputError(
            f"The case folder {folder} lacks {', '.join(missing)}: pass a BraTS 2018 case folder holding "
            "<case>_flair, _t1, _t1ce, _t2 and _seg .nii.gz files (all four modalities and the labels)."
        )
    return files


def split_of(case: str, weights: dict[str, Path]) -> str:
    """How the title describes the case: which side of the split it is on, and whether the weights that
    ran have seen it. A validation case of the split is called unseen only when none of the checkpoints'
    records lists it among their training cases (weights trained on all 15 cases have seen it).

    Args:
        case: the case folder's name.
        weights: what the weights do ("synthesis", "segmentation") -> the checkpoint that ran.
    """
    if case.startswith("Phantom_"):
        return "phantom"
    from medmodels.held_out import trained_on_cases

    seen = [what for what, path in weights.items() if trained_on_cases(path, [case])]
    if seen:
        return f"BraTS 2018 case the {' and '.join(seen)} weights TRAINED on: not a held-out figure"
    split = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))
    if case in split["validation"]:
        return "BraTS 2018 validation case, never trained on"
    if case in split["training"]:  # weights whose record lists no cases: the split still says it
        return "BraTS 2018 TRAINING case: the weights have seen it"
    return f"case not in {SPLIT_FILE.name}"


def make_logic(args: argparse.Namespace):
    """The module's logic on a fresh slicer-core scene, with the real worker (or the stand-in)."""
    from MissingModalityToolsLib.headless import make_scene
    from MissingModalityToolsLib.logic import MissingModalityToolsLogic

    scene = make_scene(set_global=True)
    if args.stand_in:
        worker = ROOT / "MissingModalityTools" / "Resources" / "Testing" / "slicer_contract_worker.py"
        command = [sys.executable, str(worker)]
    else:
        command = [sys.executable, "-m", "medmodels"]
    extra = []
    for flag, value in (("--seg-checkpoint", args.seg_checkpoint), ("--syn-checkpoint", args.syn_checkpoint)):
        if value:
            extra += [flag, str(Path(value).resolve())]
    return MissingModalityToolsLogic(
        scene, worker_command=command, pythonpath=[str(ROOT / "Lib")], extra_arguments=extra
    )


def load_case(scene, folder: Path, leave_out: str) -> dict:
    """Put the acquired volumes into the scene under their file names and let auto-assign pick them.

    Returns ``inputs`` (modality key -> node, as the selectors would hold
    them), ``true_missing`` (the left-out volume, outside the scene) and
    ``truth`` (the case's labels, ``(Z, Y, X)`` array, never given to the module).
    """
    import slicer
    from MissingModalityToolsLib import nodes as nodeio
    from MissingModalityToolsLib.inputs import assign_by_name

    files = case_files(folder)
    loaded = [
        nodeio.read_scalar_volume(scene, str(files[key]), files[key].name.removesuffix(".nii.gz"))
        for key in MODALITY_KEYS
        if key != leave_out
    ]
    inputs, _ = assign_by_name(loaded)
    if sorted(inputs) != sorted(k for k in MODALITY_KEYS if k != leave_out):
        raise InputError(f"Auto-assign gave {sorted(inputs)} for {[n.GetName() for n in loaded]}: rename the files.")
    true_missing = slicer.vtkMRMLScalarVolumeNode()
    nodeio.read_into(true_missing, str(files[leave_out]))
    truth_node = slicer.vtkMRMLLabelMapVolumeNode()
    nodeio.read_into(truth_node, str(files["seg"]))
    return {"inputs": inputs, "true_missing": true_missing, "truth": slicer.util.arrayFromVolume(truth_node).copy()}


def radiological(image: np.ndarray, node) -> np.ndarray:
    """An axial ``(Y, X)`` slice of ``node`` turned so that anterior is up and the patient's right on the left."""
    from MissingModalityToolsLib import nodes as nodeio

    m = nodeio.ijk_to_ras(node)
    if m[0, 0] > 0:  # i runs to the patient's right: the first column would be the left side
        image = image[:, ::-1]
    if m[1, 1] < 0:  # j runs posterior: row 0 is anterior already, shown at the top
        return image
    return image[::-1, :]


def crop_box(image: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns of the head in a ``(Y, X)`` slice, plus a margin (the whole slice when empty)."""
    rows, cols = np.nonzero(image > 0)
    if rows.size == 0:
        return slice(None), slice(None)
    return (
        slice(max(rows.min() - CROP_MARGIN, 0), rows.max() + CROP_MARGIN + 1),
        slice(max(cols.min() - CROP_MARGIN, 0), cols.max() + CROP_MARGIN + 1),
    )


def show(ax, grey: np.ndarray, title: str, labels: np.ndarray | None = None, truth: np.ndarray | None = None) -> None:
    """One panel: a grey ``(Y, X)`` slice, optionally label fills and the true labels' contours."""
    lo, hi = np.percentile(grey[grey > 0], [1, 99.5]) if np.any(grey > 0) else (0, 1)
    g = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.stack([g, g, g], -1)
    if labels is not None:
        for value, colour in BRATS_COLOURS.items():
            inside = labels == value
            rgb[inside] = 0.45 * rgb[inside] + 0.55 * np.array(colour)
    ax.imshow(rgb, interpolation="nearest")
    if truth is not None:
        # Whole tumour solid, tumour core dashed: the regions the Dice figures are about.
        for mask, style in ((truth > 0, "solid"), (np.isin(truth, (1, 4)), "dashed")):
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.0, linestyles=style)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def render(case: dict, result, predicted: np.ndarray, leave_out: str, title: str):
    """The 2 x 4 figure: inputs and what was left out on top; synthesis, truth and segmentation below."""
    import matplotlib.pyplot as plt
    import slicer

    truth, reference = case["truth"], case["inputs"][result.reference_key]
    k = int(np.argmax((truth > 0).sum(axis=(1, 2))))  # the axial slice with the most tumour

    def view(image: np.ndarray) -> np.ndarray:
        return radiological(image[k], reference)[rows, cols]

    # Crop to the head as any volume shows it: one series may cover less of it than another.
    heads = [slicer.util.arrayFromVolume(n)[k] > 0 for n in [*case["inputs"].values(), case["true_missing"]]]
    rows, cols = crop_box(radiological(np.any(heads, axis=0), reference))
    shown = lambda node: view(slicer.util.arrayFromVolume(node))  # noqa: E731
    missing = modality(leave_out).display
    fig, axes = plt.subplots(2, 4, figsize=(11, 6.4))
    for ax, key in zip(axes[0], sorted(case["inputs"], key=MODALITY_KEYS.index)):
        show(ax, shown(case["inputs"][key]), f"input: {case['inputs'][key].GetName()}")
    mask = "".join("0" if key == leave_out else "1" for key in MODALITY_KEYS)
    axes[0, 3].axis("off")
    axes[0, 3].text(
        0.0, 0.5, f"{missing} not acquired\n(left out of the scene)\n\nmask FLAIR T1 T1c T2 = {mask}\n\naxial slice {k}"
    )
    show(axes[1, 0], shown(result.synthesized[leave_out]), f"new node: {result.synthesized[leave_out].GetName()}")
    show(axes[1, 1], shown(case["true_missing"]), f"true {missing} (never given to the module)")
    seg_title = f"new node: {result.segmentation.GetName()}"
    show(axes[1, 2], shown(reference), seg_title, labels=view(predicted), truth=view(truth))
    show(axes[1, 3], shown(reference), "true labels (_seg file, never given)", labels=view(truth))
    fig.suptitle(title, fontsize=10)
    fig.text(
        0.5,
        0.01,
        "red: necrotic core   green: edema   yellow: enhancing tumour   "
        "white line: true whole tumour (solid), tumour core (dashed)   radiological view (patient's right on the left)",
        ha="center",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.92))
    return fig, k


def weights_used(args: argparse.Namespace) -> dict[str, Path]:
    """What the weights do ("synthesis", "segmentation") -> the checkpoint file that runs."""
    from medmodels.seg.inference import segmenter_file
    from medmodels.syn.inference import BUNDLED_NAME as SYN_BUNDLED
    from medmodels.weights import resolve_checkpoint

    return {
        "synthesis": resolve_checkpoint(args.syn_checkpoint, SYN_BUNDLED, SYN_BUNDLED),
        "segmentation": segmenter_file(args.seg_checkpoint),  # None: the default, the ensemble
    }


def weights_line(args: argparse.Namespace) -> str:
    """Which weights ran, with the first hex digits of each file's SHA-256 (so a figure names its weights)."""
    from medmodels.weights import sha256_of

    parts = []
    given = {"synthesis": args.syn_checkpoint, "segmentation": args.seg_checkpoint}
    for what, path in weights_used(args).items():
        name = f"bundled {path.stem}" if not given[what] else "/".join(path.resolve().parts[-2:])
        parts.append(f"{what} {name} (sha256 {sha256_of(path)[:8]})")
    return "weights: " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    from medmodels.metrics import region_scores
    from MissingModalityToolsLib.demo import make_phantom_case
    from MissingModalityToolsLib.options import PanelOptions
    from MissingModalityToolsLib.selftest import _labels_on

    logic = make_logic(args)
    with tempfile.TemporaryDirectory() as work:
        if args.case is None:
            folder = Path(make_phantom_case(logic, work, args.seed, args.size))
        else:
            folder = args.case.resolve()
        case = load_case(logic.scene, folder, args.leave_out)
        result = logic.run_blocking(case["inputs"], PanelOptions(device="cpu"), on_log=print)
    predicted = _labels_on(result.segmentation, case["inputs"][result.reference_key])
    scores = region_scores(predicted, case["truth"])
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    title = (
        f"MissingModalityTools logic on {folder.name} ({split_of(folder.name, weights_used(args))}), "
        f"{modality(args.leave_out).display} left out\n"
        f"Dice WT {scores['Dice_WT']:.2f}  TC {scores['Dice_TC']:.2f}  ET {scores['Dice_ET']:.2f} (whole volume)   "
        f"synthesis + segmentation in {result.seconds:.0f} s on CPU ({threads} thread(s))\n"
    )
    if args.stand_in:
        title = "STAND-IN WORKER, NOT A MODEL - " + title + "no weights"
    else:
        title += weights_line(args)
    fig, k = render(case, result, predicted, args.leave_out, title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    summary = " ".join(f"{name} {value:.3f}" for name, value in sorted(scores.items()))
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB); {summary}; run {result.seconds:.1f} s; slice {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
