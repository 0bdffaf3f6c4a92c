"""The main job on a generated case: a phantom with modalities left out,
synthesised back and segmented with the bundled weights, then compared with
the phantom's own truth. ``medmodels demo`` prints what this returns."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from medmodels.atomic import check_output_folder
from medmodels.datasets import find_case
from medmodels.metrics import psnr, region_scores, ssim
from medmodels.modalities import BY_KEY, MODALITY_KEYS, AvailabilityMask
from medmodels.options import RunOptions
from medmodels.phantom import phantom_files, write_phantom_case
from medmodels.pipeline import planned_outputs, run_case, write_outputs


def run_demo(
    out_dir: Path,
    size: tuple[int, int, int],
    seed: int,
    drop: tuple[str, ...],
    options: RunOptions,
    lesion: str = "bright",
) -> str:
    """Run the demo and return its report (one line per fact).

    Args:
        out_dir: the phantom goes to ``out_dir/input/<case>``, the outputs
            to ``out_dir/output`` (the one-case layout of ``medmodels run``).
        size: phantom voxels along x, y, z.
        seed: phantom seed (the case is ``Phantom_<seed>``).
        drop: modality keys left out, then synthesised back.
        options: the run options.
        lesion: the phantom tumour's contrast (``phantom.LESION_CONTRAST``).

    Raises:
        InputError: before anything is written, when ``out_dir`` holds a file
            the demo would write (an earlier demo's inputs or outputs).
    """
    out_dir, name = Path(out_dir), f"Phantom_{seed:03d}"
    # Both folders are checked before the phantom is written: a refused demo leaves the folder as it was.
    fix = "give the demo another folder, or move the earlier demo away"
    check_output_folder(out_dir / "input" / name, phantom_files(name), fix)
    check_output_folder(out_dir / "output", planned_outputs([k for k in MODALITY_KEYS if k not in drop], options), fix)
    case = find_case(write_phantom_case(out_dir / "input", name, size, seed, lesion=lesion), require_label=True)
    images, labels = case.load()
    given = {k: v for k, v in images.items() if k not in drop}
    mask = AvailabilityMask.from_keys(given)
    start = time.perf_counter()
    result = run_case(given, options)
    seconds = time.perf_counter() - start
    manifest = write_outputs(
        result, out_dir / "output", options, {k: str(p) for k, p in case.images.items() if k in given}
    )

    lines = [
        f"Phantom case: {case.folder} ({'x'.join(map(str, size))} voxels)",
        f"Given: {mask.label}; left out: {', '.join(BY_KEY[k].display for k in mask.missing_keys) or 'none'}",
        f"Pipeline time: {seconds:.1f} s",
        f"Outputs: {manifest.parent} (manifest {manifest.name})",
    ]
    brain = np.any([img.array != 0 for img in images.values()], axis=0)
    for key, image in result.synthesised.items():
        truth = images[key].array.astype(np.float32)
        lines.append(
            f"Synthesised {BY_KEY[key].display}: PSNR {psnr(image.array, truth, brain):.2f} dB, "
            f"SSIM {ssim(image.array, truth, brain):.3f} against the phantom's own {BY_KEY[key].display}"
        )
    if result.segmentation is not None and labels is not None:
        scores = region_scores(result.segmentation.array, labels.array, images[result.reference].spacing[::-1])
        lines.append(
            "Segmentation against the phantom's labels: "
            + ", ".join(f"Dice {r} {scores[f'Dice_{r}']:.3f}" for r in ("ET", "TC", "WT"))
        )
    return "\n".join(lines)
