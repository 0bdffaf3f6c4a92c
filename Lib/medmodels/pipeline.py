"""Synthesis and/or segmentation of one case, from images to output files.

This is what the Slicer module's worker process and ``medmodels run`` call:

    images (any subset, any grids) -> one grid -> M2DN fills the missing
    modalities -> ShaSpec segments (acquired only, or acquired + synthesised)
    -> files in an output folder, ``manifest.json`` written last.

The options are ``medmodels.options.RunOptions``. ``run_cases`` runs the cases
``medmodels.datasets.resolve_inputs`` found, in the one output layout: one
case writes into the output folder itself, several cases each into
``<output folder>/<case>/``.

Output-folder rules (docs/architecture.md): a run claims its output folder
(``medmodels.atomic.claimed_folder``) and checks that none of the files it
will write exists there before it computes anything; it adds files and never
replaces one, not even a previous run's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from medmodels.atomic import check_output_folder, claimed_folder, publish_new, staging_prefix
from medmodels.brain_mask import check_informative
from medmodels.contract import (
    MANIFEST_NAME,
    SEGMENTATION,
    SYNTHESISED,
    UNCERTAINTY,
    Manifest,
    OutputFile,
    planned_outputs,
)
from medmodels.errors import CheckpointError, InputError
from medmodels.grid_chain import GridChain
from medmodels.image import Image, check_direction, check_head_geometry
from medmodels.io import check_memory, read_image, write_image
from medmodels.modalities import BY_KEY, MODALITY_KEYS, AvailabilityMask, ordered
from medmodels.nets.config import DEFAULT_THRESHOLD
from medmodels.options import RunOptions
from medmodels.preparation import prepare_case
from medmodels.progress import emit, within
from medmodels.resampling import reference_key

#: The part (0..PREPARATION_END) of a run's progress that the preparation of its inputs reports in.
PREPARATION_END = 0.15
#: The note (in the manifest, and a WARNING line of the command) for inputs that are not skull-stripped.
NOT_SKULL_STRIPPED = (
    "Warning: the inputs do not look skull-stripped (the background is not zero or a bright scalp rims the "
    "head): the models were trained on skull-stripped brains, so the scalp, skull and orbits may be "
    "synthesised or segmented as tissue or tumour. Skull-strip the inputs first (e.g. HD-BET or SynthStrip) "
    "for reliable results."
)


@dataclass
class PipelineResult:
    reference: str
    synthesised: dict[str, Image] = field(default_factory=dict)
    uncertainty: dict[str, Image] = field(default_factory=dict)
    segmentation: Image | None = None
    notes: list[str] = field(default_factory=list)
    preparation: dict = field(default_factory=dict)  # what preparation.prepare_case found and did


class Models:
    """The models of a run, each loaded on first use and kept for the next case.

    Args:
        options: their checkpoints (``syn_checkpoint``, ``seg_checkpoint``) and device.
    """

    def __init__(self, options: RunOptions):
        self.options = options
        self._synthesizer = None
        self._segmenter = None
        self._regions = None

    def synthesizer(self):
        """The synthesizer; one conditioned on the tumour regions reads them from this run's segmenter
        (``RunOptions.region_map``; without it, an empty map)."""
        if self._synthesizer is None:
            from medmodels.syn.inference import DEFAULT_SYNTHESIZER, load_synthesizer

            checkpoint = self.options.syn_checkpoint or DEFAULT_SYNTHESIZER
            self._synthesizer = load_synthesizer(checkpoint, self.options.device)
            if self._synthesizer.conditioned:
                from medmodels.region_condition import SegmenterRegions
                from medmodels.syn.conditioning import no_regions

                if self.options.region_map:
                    self._regions = SegmenterRegions(self.segmenter())
                self._synthesizer.regions = self._regions or no_regions
        return self._synthesizer

    def segmenter(self):
        if self._segmenter is None:
            from medmodels.seg.inference import load_segmenter

            self._segmenter = load_segmenter(self.options.seg_checkpoint, self.options.device)
        return self._segmenter

    def region_probabilities(self, images: Mapping[str, Image], mask: AvailabilityMask, chain) -> np.ndarray | None:
        """The segmenter's probabilities on exactly these inputs if the synthesis' region map was just
        computed from them (``SegmenterRegions.take``), else None: the segmentation of the acquired
        volumes then reuses them instead of running the segmenter a second time on the same input."""
        return self._regions.take(images, mask, chain) if self._regions is not None else None


#: The note of a run whose study was prepared, so segmented at 0.5 (``prepared_study_threshold``).
PREPARED_THRESHOLD_NOTE = (
    "The segmentation model's probability threshold ({calibrated:g}) was chosen on skull-stripped, co-registered "
    "BraTS-style cases; this study was prepared here (registered, resampled or brain-extracted), so it was "
    "segmented at {used:g}."
)
#: The probability threshold of a study this run prepared (``prepared_study_threshold``): the uncalibrated one.
PREPARED_STUDY_THRESHOLD = DEFAULT_THRESHOLD


def prepared_study_threshold(calibrated: float, changed: bool) -> float:
    """The probability threshold to segment a case at: the checkpoint's own (``calibrated``), except where
    the preparation changed the case (``Prepared.changed``), which gets the uncalibrated 0.5.

    Why: a checkpoint's threshold is chosen on BraTS-preprocessed validation cases (``evaluate-seg
    --calibrate``), and only there is it measured. On studies the preparation registered, resampled and
    brain-extracted, the project's phantoms show a low threshold growing the tumour into the preparation's
    rims (docs/segmentation.md, "The probability threshold"): there the figures were measured at 0.5.

    Args:
        calibrated: the segmenter's threshold (``Segmenter.threshold``).
        changed: whether the preparation changed the case (``Prepared.changed``).
    """
    return PREPARED_STUDY_THRESHOLD if changed else calibrated


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
    check_case_images(images)
    # Load before any work or message: a bad checkpoint fails at once, not after minutes of synthesis.
    synthesizer = models.synthesizer() if options.synthesize and not mask.is_complete else None
    segmenter = models.segmenter() if options.segment else None
    check_memory(
        estimate_run_bytes(images, [m.spacing for m in (synthesizer, segmenter) if m is not None]),
        f"This case ({next(iter(images.values())).describe_grid()})",
    )
    # Inspection, registration, brain extraction and resampling (preparation.py) take seconds to minutes
    # on a scanner's study: a span of their own, so the progress bar moves while they run.
    with within(0.0, PREPARATION_END):
        prepared = prepare_case(images, options.prepare, options.reference, options.seed, options.device)
    common, notes = prepared.images, prepared.notes
    if not prepared.skull_stripped:  # the inspection's verdict, or the brain was extracted
        notes.append(NOT_SKULL_STRIPPED)
    result = PipelineResult(reference_key(common, options.reference), notes=notes, preparation=prepared.record)
    for note in notes:
        emit(PREPARATION_END, note)

    if options.synthesize:
        if mask.is_complete:
            result.notes.append("All four modalities are given: nothing to synthesise.")
        else:
            emit(
                PREPARATION_END,
                f"Synthesising {', '.join(BY_KEY[k].display for k in mask.missing_keys)} from {mask.label}"
                # a conditioned model's enhancement is placed by the segmenter: the log says so
                + _guidance(synthesizer.conditioned, options.region_map),
            )
            with within(PREPARATION_END, 0.85):
                outputs = synthesizer.synthesize(
                    common,
                    mask,
                    steps=options.steps or None,
                    samples=options.samples,
                    seed=options.seed,
                    chain=prepared.chain,
                )
            for key, (mean, std) in outputs.items():
                result.synthesised[key] = mean
                if std is not None:
                    result.uncertainty[key] = std

    if segmenter is not None:
        _segment(result, models, common, prepared, options)
    _onto_input_grid(result, prepared.chain)
    emit(1.0, "Done")
    return result


def _guidance(conditioned: bool, region_map: bool) -> str:
    """The end of the synthesis' log line: what placed the tumour's contrasts."""
    if not conditioned:
        return ""
    if region_map:
        return ", guided by the tumour regions the segmenter finds in them"
    return ", without the segmenter's map of the tumour regions (--no-region-map): little enhancement is drawn"


def _segment(
    result: PipelineResult, models: Models, common: Mapping[str, Image], prepared, options: RunOptions
) -> None:
    """``run_case``'s segmentation, into ``result`` (on the preparation grid): from the acquired images
    (``common``) or, with ``segment_on="all"``, with the synthesised ones; at the checkpoint's threshold,
    or 0.5 for a study the preparation changed (``prepared_study_threshold``, with a note). The acquired
    images' probabilities are reused when the synthesis' region map was computed from them."""
    segmenter = models.segmenter()
    seg_inputs = dict(common)
    if options.segment_on == "all":
        seg_inputs.update(result.synthesised)
    seg_mask = AvailabilityMask.from_keys(seg_inputs.keys())
    start = 0.85 if options.synthesize else PREPARATION_END
    threshold = prepared_study_threshold(segmenter.threshold, prepared.changed)
    if threshold != segmenter.threshold:
        result.notes.append(PREPARED_THRESHOLD_NOTE.format(calibrated=segmenter.threshold, used=threshold))
        emit(start, result.notes[-1])
    emit(start, f"Segmenting from {seg_mask.label}")
    with within(start, 0.99):
        inputs = {k: seg_inputs[k] for k in ordered(seg_inputs)}
        result.segmentation = segmenter.segment(
            inputs,
            seg_mask,
            cleanup=options.cleanup,
            label_convention=options.label_convention,
            chain=prepared.chain,
            threshold=threshold,
            probabilities=models.region_probabilities(inputs, seg_mask, prepared.chain),
        )


def _onto_input_grid(result: PipelineResult, chain: GridChain) -> None:
    """Every output of ``result`` from the preparation grid onto the reference input's, in place.

    The models thresholded and cleaned up on the preparation grid (grid_chain.py says why); this is
    the chain's last step, by each output's kind.

    Args:
        result: the outputs of ``run_case``, on ``chain.preparation``.
        chain: the case's ``GridChain`` (``Prepared.chain``).
    """

    def back(image: Image, kind: str) -> Image:
        return chain.input.with_array(chain.inverse(image.array, kind, to="input", start="preparation"))

    result.synthesised = {k: back(v, "intensity") for k, v in result.synthesised.items()}
    result.uncertainty = {k: back(v, "intensity") for k, v in result.uncertainty.items()}
    if result.segmentation is not None:
        result.segmentation = back(result.segmentation, "label")


def check_case_images(images: Mapping[str, Image]) -> None:
    """Refuse, per modality and before any work, what no model run can use.

    Args:
        images: modality key -> image, as given to ``run_case``.

    Raises:
        InputError: naming the modality: a sheared (non-orthonormal) grid, a
            voxel size or field of view no head has, or a blank or constant
            volume.
    """
    for key, image in images.items():
        name = f"The {BY_KEY[key].display} volume" if key in BY_KEY else f"The volume '{key}'"
        check_direction(image.direction, name)
        check_head_geometry(image.size_xyz, image.spacing, name)
    check_informative(images)


def estimate_run_bytes(images: Mapping[str, Image], model_spacings: Sequence[Sequence[float]]) -> int:
    """A generous estimate of the memory a run of this case needs, from its geometry alone.

    Args:
        images: the case's inputs.
        model_spacings: ``(x, y, z)`` working spacing of each model that will
            run (the working grid spans the inputs' field of view at it).

    Returns:
        bytes: float32 copies of the inputs (read, common grid, z-scores) and
        of the outputs, plus about 16 float32 channels on the finest working grid.
    """
    largest = max(images.values(), key=lambda im: im.array.size)
    inputs = sum(im.array.size for im in images.values()) * 4 * 3
    outputs = largest.array.size * 4 * 2 * (len(MODALITY_KEYS) + 1)
    working = 0
    for spacing in model_spacings:
        extent = np.asarray(largest.size_xyz) * np.asarray(largest.spacing)
        working = max(working, int(np.prod(np.ceil(extent / np.asarray(spacing)))) * 4 * 16)
    return int(inputs + outputs + working)


def write_outputs(
    result: PipelineResult,
    out_dir: str | os.PathLike,
    options: RunOptions,
    inputs: Mapping[str, str] | None = None,
    claim: bool = True,
) -> Path:
    """Write the result into ``out_dir``; ``manifest.json`` comes last.

    Files are first written (and verified) in a hidden folder beside the
    outputs and moved in only when all are written, so an interrupted run
    leaves no half-written file and no manifest. No existing file is
    replaced: one in the way is refused before anything is moved.

    Args:
        result: what ``run_case`` returned.
        out_dir: the output folder (created if missing).
        options: the run's options, recorded in the manifest.
        inputs: modality key -> input path, recorded in the manifest.
        claim: claim ``out_dir`` here (False: the caller holds its claim).
    """
    if claim:
        with claimed_folder(out_dir):
            return write_outputs(result, out_dir, options, inputs, claim=False)
    out_dir = Path(out_dir)
    outputs = [(OutputFile(SYNTHESISED, k), image) for k, image in result.synthesised.items()]
    outputs += [(OutputFile(UNCERTAINTY, k), image) for k, image in result.uncertainty.items()]
    outputs += [(OutputFile(SEGMENTATION), result.segmentation)] if result.segmentation is not None else []
    names = [output.name for output, _ in outputs]
    check_output_folder(out_dir, names + [MANIFEST_NAME])
    from medmodels.runtime import choose_device  # torch: only once there is a result to write

    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=out_dir))
    manifest = Manifest(
        reference=result.reference,
        label_convention=options.label_convention,
        notes=result.notes,
        preparation=result.preparation,
        options=asdict(options),
        inputs=dict(inputs or {}),
        device=choose_device(options.device).name,  # what ran, where options say "auto"
    )
    try:
        for output, image in outputs:
            manifest.list_file(output, write_image(image, staging / output.name).name)
        manifest.write(staging / MANIFEST_NAME)
        _move_in(staging, out_dir, names + [MANIFEST_NAME])
    except OSError as err:
        raise InputError(
            f"Could not write the outputs into '{out_dir}' ({err.strerror or err}): free space on the disk, "
            "or choose a writable output folder."
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / MANIFEST_NAME


def _move_in(staging: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Move ``names`` (manifest last) from ``staging`` into ``out_dir``, replacing nothing;
    on a clash, take back what this call moved in, so no partial result stays."""
    moved: list[Path] = []
    try:
        for name in names:
            publish_new(staging / name, out_dir / name)
            moved.append(out_dir / name)
    except FileExistsError:
        for path in moved:
            path.unlink(missing_ok=True)
        raise InputError(
            f"'{out_dir / name}' appeared while this run was writing: another program writes into '{out_dir}'. "
            "Choose an output folder of this run's own."
        ) from None


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
    # Every case's output folder is checked before the first case is computed: a clash is found in
    # seconds, not after hours of work on the cases before it.
    for name, files in cases:
        check_output_folder(case_output_dir(out_dir, name, several), planned_outputs(list(files), options))
    models = Models(options)
    outcomes = []
    for name, files in cases:
        outcome = CaseOutcome(name)
        case_dir = case_output_dir(out_dir, name, several)
        try:
            with claimed_folder(case_dir):  # held from before the computation until the manifest is in
                check_output_folder(case_dir, planned_outputs(list(files), options))
                result = run_case({k: read_image(p) for k, p in files.items()}, options, models)
                outcome.notes = list(result.notes)
                outcome.manifest = write_outputs(
                    result, case_dir, options, {k: str(p) for k, p in files.items()}, claim=False
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
