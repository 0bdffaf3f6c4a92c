"""Whole-tumour Dice of a segmentation checkpoint on the pipeline tests' phantoms, at several
probability thresholds (docs/segmentation.md, "The probability threshold", "Only where it was measured").

For each threshold: the 96x96x64 phantom (seed 2) as BraTS-style input; the same with T1 turned 20
degrees (``Testing/prep/test_rotation.py``'s ``rotated``), which the pipeline registers back; and the
scanner-style study of ``Testing/prep/test_preparation.py`` (a head, 5 mm slices, misaligned), which it
registers, resamples and brain-extracts. Segmentation only, all four modalities, ``pipeline.run_case``.
The threshold reaches the segmenter as a copy of the checkpoint with it written in
(``seg.calibration.write_calibrated``); BraTS-style input then uses it, and this script, to show what a
prepared study would get at it, sets ``pipeline.PREPARED_STUDY_THRESHOLD`` to it too.

    python docs/make_prepared_threshold_table.py [--checkpoint PT] 0.5 0.3 0.25 0.2 0.15
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("thresholds", nargs="+", type=float)
    parser.add_argument(
        "--checkpoint",
        default="bundled",
        help="segmentation checkpoint: 'bundled' (ShaSpec, the default), 'baseline', 'ensemble' (what run "
        "segments with) or a .pt path",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "Testing" / "prep"))
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # as the tests run (one_itk_thread): registration repeats
    import medmodels.pipeline as pipeline
    from medmodels.metrics import region_scores
    from medmodels.options import RunOptions
    from medmodels.phantom import make_phantom, scanned_phantom
    from medmodels.seg.calibration import write_calibrated
    from medmodels.seg.inference import segmenter_file
    from test_rotation import rotated

    source = segmenter_file(args.checkpoint)
    plain = make_phantom((96, 96, 64), seed=2)
    turned = dict(plain.images)
    turned["t1"] = rotated(turned["t1"], 20.0, 0)
    scanned = scanned_phantom(make_phantom((96, 96, 64), seed=2, head=True), seed=2)
    print("| threshold | BraTS-style phantom | T1 turned 20 degrees, registered back | scanner-style study |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for t in args.thresholds:
            checkpoint = Path(tmp) / f"seg_{t}.pt"
            write_calibrated(source, checkpoint, {"threshold": t, "cases": []})
            pipeline.PREPARED_STUDY_THRESHOLD = t
            options = RunOptions(synthesize=False, device="cpu", seg_checkpoint=str(checkpoint))
            scores = [
                region_scores(pipeline.run_case(images, options).segmentation.array, labels.array)["Dice_WT"]
                for images, labels in (
                    (plain.images, plain.labels),
                    (turned, plain.labels),
                    (scanned.images, scanned.labels),
                )
            ]
            print(f"| {t:g} | " + " | ".join(f"{s:.3f}" for s in scores) + " |", flush=True)


if __name__ == "__main__":
    main()
