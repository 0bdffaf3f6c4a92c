"""Synthesis and/or segmentation of one case, from images to output files.

This is what the Slicer module's worker process and ``medmodels run`` call:

    images (any subset, any grids) -> one grid -> M2DN fills the missing
    modalities -> ShaSpec segments (acquired only, or acquired + synthesised)
    -> files in an output folder, ``manifest.json`` written last.

The options are ``medmodels.options.RunOptions``. ``run_cases`` runs the cases
``medmodels.datasets.resolve_inputs`` found, in the one output layout: one
case writes into the output folder itself, several cases each into
``<output folder>/<case>/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from medmodels.errors import CheckpointError, InputError
from medmodels.image import Image
from medmodels.io import read_image, write_image
from medmodels.modalities import BY_KEY, AvailabilityMask, ordered
from medmodels.options import RunOptions
from medmodels.preprocess import reference_key, to_common_grid
from medmodels.progress import emit, within

MANIFEST = "manifest.json"


@dataclass
class PipelineResult:
    reference: str
    synthesised: dict[str, Image] = field(default_factory=dict)
    uncertainty: dict[str, Image] = field(default_factory=dict)
    segmentation: Image | None = None
    notes: list[str] = field(default_factory=list)


class Models:
    """The models of a run, each loaded on first use and kept for the next case.

    Args:
        options: their checkpoints (``syn_checkpoint``, ``seg_checkpoint``) and device.
    """

    def __init__(self, options: RunOptions):
        self.options = options
        self._synthesizer = None
        self._segmenter = None

    def synthesizer(self):
        if self._synthesizer is None:
            from medmodels.syn.synthesize import load_synthesizer

            self._synthesizer = load_synthesizer(self.options.syn_checkpoint, self.options.device)
        return self._synthesizer

    def segmenter(self):
        if self._segmenter is None:
            from medmodels.seg.inference import load_segmenter

            self._segmenter = load_segmenter(self.options.seg_checkpoint, self.options.device)
        return self._segmenter


def run_case(
    images: Mapping[str, Image], options: RunOptions | None = None, models: Models | None = None
) -> PipelineResult:
    """Run synthesis and/or segmentation on one case held in memory.

    Args:
        images: modality key -> image; any non-empty subset, on any grids
            that overlap (they are resampled onto the reference grid).
        options: what to run; ``options.steps == 0`` is the model's own
            number of sampling steps.
        models: models loaded for an earlier case with the same options
            (None: load them here).
    """
    options = options or RunOptions()
    options.check()
    models = models or Models(options)
    mask = AvailabilityMask.from_keys(images.keys())
    # Load before any work or message: a bad checkpoint fails at once, not after minutes of synthesis.
    synthesizer = models.synthesizer() if options.synthesize and not mask.is_complete else None
    segmenter = models.segmenter() if options.segment else None
    common, notes = to_common_grid(images, options.reference)
    result = PipelineResult(reference_key(common, options.reference), notes=notes)
    for note in notes:
        emit(0.01, note)

    if options.synthesize:
        if mask.is_complete:
            result.notes.append("All four modalities are given: nothing to synthesise.")
        else:
            emit(0.02, f"Synthesising {', '.join(BY_KEY[k].display for k in mask.missing_keys)} from {mask.label}")
            with within(0.02, 0.85):
                outputs = synthesizer.synthesize(
                    common, mask, steps=options.steps or None, samples=options.samples, seed=options.seed
                )
            for key, (mean, std) in outputs.items():
                result.synthesised[key] = mean
                if std is not None:
                    result.uncertainty[key] = std

    if segmenter is not None:
        seg_inputs = dict(common)
        if options.segment_on == "all":
            seg_inputs.update(result.synthesised)
        seg_mask = AvailabilityMask.from_keys(seg_inputs.keys())
        start = 0.85 if options.synthesize else 0.02
        emit(start, f"Segmenting from {seg_mask.label}")
        with within(start, 0.99):
            result.segmentation = segmenter.segment(
                {k: seg_inputs[k] for k in ordered(seg_inputs)},
                seg_mask,
                cleanup=options.cleanup,
                label_convention=options.label_convention,
            )
    emit(1.0, "Done")
    return result


def write_outputs(
    result: PipelineResult, out_dir: str | os.PathLike, options: RunOptions, inputs: Mapping[str, str] | None = None
) -> Path:
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
    manifest: dict = {
        "reference": result.reference,
        "synthesised": {},
        "uncertainty": {},
        "segmentation": None,
        "label_convention": options.label_convention,
        "notes": result.notes,
        "options": asdict(options),
        "inputs": dict(inputs or {}),
    }
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


@dataclass
class CaseOutcome:
    """How one case of ``run_cases`` went.

    Attributes:
        name: the case name.
        manifest: its ``manifest.json`` when it finished, else None.
        error: the one-line reason it failed, else None.
        notes: what the run noted on the way (e.g. inputs resampled).
    """

    name: str
    manifest: Path | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def case_output_dir(out_dir: str | os.PathLike, name: str, several: bool) -> Path:
    """The one output layout: one case -> ``out_dir``; several -> ``out_dir/<name>``."""
    return Path(out_dir) / name if several else Path(out_dir)


def run_cases(
    cases: Sequence[tuple[str, Mapping[str, str | os.PathLike]]],
    out_dir: str | os.PathLike,
    options: RunOptions,
    on_case: Callable[[CaseOutcome], None] | None = None,
) -> list[CaseOutcome]:
    """Read, run and write each case, in the layout of ``case_output_dir``.

    Args:
        cases: ``[(case name, {modality key: file or DICOM folder})]``, as
            ``medmodels.datasets.resolve_inputs`` returns them.
        out_dir: the output folder.
        options: what to run (checked before any case is read).
        on_case: called with each case's outcome as soon as it is known
            (the command line prints it).

    Returns:
        One outcome per case, in order. With several cases, a case that
        fails is recorded and the next one goes on; a bad checkpoint fails
        every case alike, so it is raised at once. A single case raises its
        error.
    """
    options.check()
    several = len(cases) > 1
    models = Models(options)
    outcomes = []
    for name, files in cases:
        outcome = CaseOutcome(name)
        try:
            result = run_case({k: read_image(p) for k, p in files.items()}, options, models)
            outcome.notes = list(result.notes)
            outcome.manifest = write_outputs(
                result, case_output_dir(out_dir, name, several), options, {k: str(p) for k, p in files.items()}
            )
        except CheckpointError:
            raise
        except Exception as err:  # any failure of one case (bad file, grids, memory) must not stop the others
            if not several:
                raise
            outcome.error = f"{type(err).__name__}: {err}" if not isinstance(err, InputError) else str(err)
        outcomes.append(outcome)
        if on_case is not None:
            on_case(outcome)
    return outcomes
