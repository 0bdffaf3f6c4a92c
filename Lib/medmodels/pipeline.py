"""Synthesis and/or segmentation of one case, from images to output files.

This is what the Slicer module's worker process and ``medmodels run`` call:

    images (any subset, any grids) -> one grid -> M2DN fills the missing
    modalities -> ShaSpec segments (acquired only, or acquired + synthesised)
    -> files in an output folder, ``manifest.json`` written last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.io import write_image
from medmodels.modalities import BY_KEY, AvailabilityMask, ordered
from medmodels.preprocess import reference_key, to_common_grid
from medmodels.progress import emit, within

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PipelineOptions:
    """What to run and how.

    Args:
        synthesize: fill every missing modality with M2DN.
        segment: segment the tumour with ShaSpec.
        segment_on: "acquired" (the given modalities only) or "all" (given +
            synthesised; needs ``synthesize``).
        device: "auto", "cpu" or "cuda".
        steps: sampling steps of the fast sampler (None: the model's default).
        samples: synthesis samples; more than 1 also gives a standard-deviation map.
        cleanup: connected-component clean-up of the segmentation (ShaSpec*).
        seed: makes synthesis reproducible.
        reference: modality whose grid is the output grid (None: the first
            given modality in canonical order).
        label_convention: "2018" (ET = 4) or "2023" (ET = 3).
        seg_checkpoint, syn_checkpoint: checkpoint files (None: bundled weights).
    """

    synthesize: bool = True
    segment: bool = True
    segment_on: str = "acquired"
    device: str = "auto"
    steps: int | None = None
    samples: int = 1
    cleanup: bool = True
    seed: int = 0
    reference: str | None = None
    label_convention: str = "2018"
    seg_checkpoint: str | None = None
    syn_checkpoint: str | None = None

    def check(self) -> None:
        if not (self.synthesize or self.segment):
            raise InputError("Nothing to do: choose synthesis, segmentation, or both.")
        if self.segment_on not in ("acquired", "all"):
            raise InputError(f"segment_on is 'acquired' or 'all', got '{self.segment_on}'.")
        if self.segment and self.segment_on == "all" and not self.synthesize:
            raise InputError("Segmenting on acquired + synthesised volumes needs synthesis: turn synthesis on, "
                             "or segment on the acquired volumes only.")
        if self.samples < 1:
            raise InputError(f"The number of samples must be at least 1, got {self.samples}.")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"The number of sampling steps must be at least 1, got {self.steps}.")


@dataclass
class PipelineResult:
    reference: str
    synthesised: dict[str, Image] = field(default_factory=dict)
    uncertainty: dict[str, Image] = field(default_factory=dict)
    segmentation: Image | None = None
    notes: list[str] = field(default_factory=list)


def run_case(images: Mapping[str, Image], options: PipelineOptions = PipelineOptions()) -> PipelineResult:
    """Run synthesis and/or segmentation on one case held in memory.

    Args:
        images: modality key -> image; any non-empty subset, on any grids
            that overlap (they are resampled onto the reference grid).
    """
    options.check()
    mask = AvailabilityMask.from_keys(images.keys())
    common, notes = to_common_grid(images, options.reference)
    result = PipelineResult(reference_key(common, options.reference), notes=notes)
    for note in notes:
        emit(0.01, note)

    if options.synthesize:
        if mask.is_complete:
            result.notes.append("All four modalities are given: nothing to synthesise.")
        else:
            from medmodels.syn.synthesize import load_synthesizer

            emit(0.02, f"Synthesising {', '.join(BY_KEY[k].display for k in mask.missing_keys)} "
                       f"from {mask.label}")
            synthesizer = load_synthesizer(options.syn_checkpoint, options.device)
            with within(0.02, 0.85):
                outputs = synthesizer.synthesize(common, mask, steps=options.steps, samples=options.samples,
                                                 seed=options.seed)
            for key, (mean, std) in outputs.items():
                result.synthesised[key] = mean
                if std is not None:
                    result.uncertainty[key] = std

    if options.segment:
        from medmodels.seg.inference import load_segmenter

        seg_inputs = dict(common)
        if options.segment_on == "all":
            seg_inputs.update(result.synthesised)
        seg_mask = AvailabilityMask.from_keys(seg_inputs.keys())
        start = 0.85 if options.synthesize else 0.02
        emit(start, f"Segmenting from {seg_mask.label}")
        segmenter = load_segmenter(options.seg_checkpoint, options.device)
        with within(start, 0.99):
            result.segmentation = segmenter.segment({k: seg_inputs[k] for k in ordered(seg_inputs)}, seg_mask,
                                                    cleanup=options.cleanup,
                                                    label_convention=options.label_convention)
    emit(1.0, "Done")
    return result


def write_outputs(result: PipelineResult, out_dir: str | os.PathLike, options: PipelineOptions,
                  inputs: Mapping[str, str] | None = None) -> Path:
    """Write the result into ``out_dir``; ``manifest.json`` comes last.

    Files are first written to a hidden folder beside the outputs and moved
    in only when all are written, so an interrupted run leaves no half-written
    file and no manifest.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MANIFEST).exists():
        raise InputError(f"'{out_dir}' already holds a finished run ({MANIFEST}): choose an empty output folder.")
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    manifest: dict = {"reference": result.reference, "synthesised": {}, "uncertainty": {}, "segmentation": None,
                      "label_convention": options.label_convention, "notes": result.notes,
                      "options": asdict(options), "inputs": dict(inputs or {})}
    try:
        for key, image in result.synthesised.items():
            manifest["synthesised"][key] = write_image(image, staging / f"{key}.nii.gz").name
        for key, image in result.uncertainty.items():
            manifest["uncertainty"][key] = write_image(image, staging / f"{key}_std.nii.gz").name
        if result.segmentation is not None:
            manifest["segmentation"] = write_image(result.segmentation, staging / "segmentation.nii.gz").name
        for item in staging.iterdir():
            os.replace(item, out_dir / item.name)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(staging / MANIFEST, out_dir / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / MANIFEST
