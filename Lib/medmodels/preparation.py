"""The preparation step: from a study as it comes from the scanner to BraTS-style inputs.

    inspect (inspection.py) -> register every modality onto the reference
    (registration.py) -> resample onto the preparation grid -> extract the
    brain (brain_extraction.py) -> the models -> outputs back onto the
    reference input's grid (``Prepared.chain``, a ``grid_chain.GridChain``)

Modes (``RunOptions.prepare``):

- "auto" (default): inspect; register when the inputs are not on one grid
  or do not line up; extract the brain when the inputs are not skull-stripped;
  resample to isotropic voxels when an input has thick slices. BraTS-style
  inputs pass through untouched (bit for bit as without this step). A
  registration that lowers the mutual information, or a brain mask that is
  implausible (``brain_extraction.mask_problems``), stops the run with an
  ``InputError`` that names the fix, rather than segmenting scalp.
- "on": register and extract the brain whatever the inspection says; the
  same problems are reported as warnings and the run goes on.
- "off": only bring the inputs onto the reference grid, as before; the
  inspection's findings are still reported as warnings.

Registration runs on the whole heads, before brain extraction: on the
phantom with a head it recovered the transforms to 0.05-0.12 mm, against
0.4-1.1 mm when registering brain-masked series (docs/preparation.md).

The preparation grid is the reference's field of view and orientation at
isotropic voxels of ``max(PREPARED_SPACING_MM, finest reference spacing)``:
1 mm for a clinical thick-slice series (e.g. 0.5 x 0.5 x 5 mm), coarser
when the reference itself is coarser in-plane (then finer voxels would add
nothing but time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from medmodels.brain_extraction import BrainExtraction, extract_brain
from medmodels.errors import InputError
from medmodels.grid_chain import GridChain
from medmodels.image import Grid, Image
from medmodels.inspection import Inspection, inspect_inputs
from medmodels.modalities import BY_KEY
from medmodels.progress import emit, progress, within
from medmodels.registration import apply_rigid, register_rigid
from medmodels.resampling import to_common_grid, working_geometry

#: Voxel size (mm) of the preparation grid for thick-slice inputs (never finer than the reference in-plane).
PREPARED_SPACING_MM = 1.0
#: A registration may lower the mutual information by this fraction before it counts as failed: series
#: already aligned (e.g. only on other grids) come out 0.1-1 % lower by the optimiser's noise.
MI_LOSS_TOLERANCE = 0.05
#: What a user can do when a registration fails its check (``auto``).
REGISTRATION_FIX = (
    "Register the series with another tool and run with --prepare off, leave the series out, "
    "or run with --prepare on to go on with this registration."
)
#: What a user can do when the brain mask fails its check (``auto``).
EXTRACTION_FIX = (
    "Check that every series shows a whole head; skull-strip the inputs with another tool and run with "
    "--prepare off, or run with --prepare on to go on with this mask."
)


@dataclass
class Prepared:
    """The inputs as the models need them, and the grids to bring outputs back by.

    Attributes:
        images: modality key -> image on the preparation grid.
        reference: the reference modality.
        chain: the case's grids: the reference input's (what the user sees the
            outputs on) and the preparation grid (the reference's unless
            resampled); outputs go back through ``chain.inverse``.
        notes: what was found and done, one sentence each.
        record: the same for the manifest (JSON-ready).
        skull_stripped: whether ``images`` are brains only: the brain was extracted,
            or the inspection found the inputs skull-stripped.
    """

    images: dict[str, Image]
    reference: str
    chain: GridChain
    notes: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    skull_stripped: bool = True

    @property
    def changed(self) -> bool:
        """Whether a step (registration, resampling, brain extraction) changed the inputs: False for
        BraTS-style input, which is used as given."""
        return bool(self.record.get("steps"))


def preparation_grid(reference: Image, thick: bool) -> Grid:
    """The grid the models run on: the reference's own, or (``thick``) its field
    of view and axes at isotropic ``max(PREPARED_SPACING_MM, finest spacing)`` voxels."""
    if not thick:
        return reference.grid
    spacing = max(PREPARED_SPACING_MM, min(reference.spacing))
    return working_geometry(reference, (spacing,) * 3).grid


def _register(images: Mapping[str, Image], inspection: Inspection, grid: Grid, register: set[str], seed: int):
    """Every image on ``grid``: those in ``register`` registered onto the reference first.

    A registration found is always applied (also to an image already on the
    reference's grid: a series the scanner or a viewer resampled can still be
    displaced), unless it does not raise the mutual information; then the
    image is kept as it was and the note says so.

    Returns the images, one note per registered image and the registration records.
    """
    ref_key = inspection.reference
    out, notes, records = {}, [], {}
    for key in progress(list(images), desc="Registering" if register else "Resampling"):
        image, matrix = images[key], np.eye(4)
        if key in register and key != ref_key:
            found = register_rigid(images[ref_key], image, seed=seed)
            applied = found.similarity_after > found.similarity_before
            matrix = found.matrix if applied else matrix
            records[key] = {**found.record(), "applied": applied}
            notes.append(_registration_note(key, ref_key, found, applied))
        moved = not np.array_equal(matrix, np.eye(4))
        if moved:
            out[key] = _moved(image, matrix, grid)
        else:
            out[key] = image if image.same_grid(grid) else apply_rigid(image, matrix, grid)
    return out, notes, records


def registration_problems(records: Mapping[str, dict], reference: str) -> list[str]:
    """Registrations that left their series agreeing less with the reference than before
    (mutual information lower by more than ``MI_LOSS_TOLERANCE``), one sentence each.

    Args:
        records: modality key -> ``RigidResult.record()``.
        reference: the reference modality.
    """
    out = []
    for key, r in records.items():
        before, after = r["mutual_information_before"], r["mutual_information_after"]
        if after < before * (1.0 - MI_LOSS_TOLERANCE):
            out.append(
                f"the registration of {BY_KEY[key].display} onto {BY_KEY[reference].display} lowered the mutual "
                f"information ({before:.3f} -> {after:.3f}): the series may show different parts of the head, "
                "or the head moved too much between them"
            )
    return out


def _report(problems: list[str], mode: str, fix: str, step: str) -> list[str]:
    """``problems`` of ``step`` as warning notes ("on"), or (``auto``) an InputError that names ``fix``."""
    if problems and mode == "auto":
        raise InputError(f"Preparation stopped after {step}: {'; '.join(problems)}. {fix}")
    return [f"Warning: {step}: {p}." for p in problems]


def _extraction_notes(brain: BrainExtraction) -> list[str]:
    """What the brain extraction did, for the log and the manifest's notes."""
    out = [f"Brain extraction fell back to {brain.method}: {brain.fallback}"] if brain.fallback else []
    out.append(
        f"The brain was extracted ({brain.method}, from {', '.join(BY_KEY[k].display for k in brain.used)}; "
        f"{brain.volume_ml:.0f} ml): check the mask where results matter."
    )
    return out


def _moved(image: Image, matrix: np.ndarray, grid: Grid) -> Image:
    """``image`` through ``matrix`` onto ``grid``, its zero background kept zero.

    Linear interpolation spreads faint values past the edge of a skull-stripped
    brain; the models take every non-zero voxel for brain, so the image's own
    support (non-zero voxels, moved the same way) decides what stays non-zero.
    """
    values = apply_rigid(image, matrix, grid)
    support = apply_rigid(image.with_array((image.array != 0).astype(np.float32)), matrix, grid)
    return values.with_array(np.where(support.array >= 0.5, values.array, 0).astype(values.array.dtype))


def _registration_note(key: str, ref_key: str, found, applied: bool) -> str:
    """One sentence on a registration (``found``: a ``registration.RigidResult``) and whether it was applied."""
    figures = (
        f"rotation ({', '.join(f'{a:.1f}' for a in found.rotation_deg)}) deg, shift "
        f"({', '.join(f'{t:.1f}' for t in found.translation_mm)}) mm, on average {found.mean_shift_mm:.1f} mm; "
        f"mutual information {found.similarity_before:.3f} -> {found.similarity_after:.3f}"
    )
    if applied:
        return f"{BY_KEY[key].display} was registered onto {BY_KEY[ref_key].display}: {figures}."
    return (
        f"{BY_KEY[key].display} was kept at its scanner position: registration onto "
        f"{BY_KEY[ref_key].display} did not improve the match ({figures})."
    )


def _to_register(images: Mapping[str, Image], inspection: Inspection, mode: str) -> set[str]:
    """The modalities to register: all (mode "on"), else those off the reference's grid or not lined up with it.

    An image that lines up on the reference's grid stays untouched: a
    registration would only find noise and blur it by interpolation.
    """
    others = {k for k in images if k != inspection.reference}
    if mode == "on":
        return others
    return {k for k in others if not inspection.alignment[k]["same_grid"] or not inspection.alignment[k]["aligned"]}


def prepare_case(
    images: Mapping[str, Image],
    mode: str = "auto",
    preferred: str | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> Prepared:
    """Inspect and, as ``mode`` says, register, resample and brain-extract one case.

    Args:
        images: modality key -> image, any grids (raw, as read).
        mode: "auto", "on" or "off" (see the module's description).
        preferred: the reference modality (None: first of FLAIR, T1, T1c, T2 given).
        seed: seed of the registration's random sampling.
        device: the run's ``--device`` word ("auto", "cpu", "cuda", "cuda:N") for the learned brain extractor.

    Returns:
        the images on the grid the models run on, and how to bring outputs back.

    Raises:
        InputError: (``auto``) a registration or brain mask failed its check.
    """
    emit(0.0, "Inspecting the inputs (skull-stripped? co-registered?)")
    inspection = inspect_inputs(images, preferred)
    ref_key = inspection.reference
    reference = images[ref_key]
    record: dict = {"mode": mode, "inspection": inspection.record(), "steps": []}
    if mode == "off":
        common, notes = to_common_grid(images, ref_key)
        warnings = [f"Warning: {f.message}" for f in inspection.findings]
        chain = GridChain.on(reference)
        return Prepared(common, ref_key, chain, warnings + notes, record, inspection.skull_stripped)
    notes = [f.message for f in inspection.findings]
    register = _to_register(images, inspection, mode)
    extract = mode == "on" or not inspection.skull_stripped
    grid = preparation_grid(reference, inspection.thick_slices)
    record["grid"] = {"spacing": list(grid.spacing), "size_xyz": list(grid.size_xyz)}
    if register or not grid.same_grid(reference) or not inspection.one_grid:
        emit(0.2, "Registering the modalities onto the reference" if register else "Resampling")
        with within(0.2, 0.8):  # registration reports inside its share of the bar
            prepared, moved, records = _register(images, inspection, grid, register, seed)
        notes += moved
        if register:
            record["steps"].append("registration")
            record["registration"] = records
            notes += _report(registration_problems(records, ref_key), mode, REGISTRATION_FIX, "registration")
        if not grid.same_grid(reference):
            record["steps"].append("resampling")
            notes.append(f"The inputs were resampled to {grid.describe_grid()} for the models.")
    else:
        prepared = dict(images)
    if extract:
        emit(0.8, "Extracting the brain (deepbet)")
        brain = extract_brain(prepared, device)
        record["steps"].append("brain_extraction")
        record["brain_extraction"] = brain.record()
        step = f"brain extraction ({brain.method}, from {', '.join(BY_KEY[k].display for k in brain.used)})"
        notes += _extraction_notes(brain) + _report(list(brain.mask_problems), mode, EXTRACTION_FIX, step)
        mask = brain.mask.array.astype(bool)
        prepared = {k: v.with_array(np.where(mask, v.array, 0).astype(v.array.dtype)) for k, v in prepared.items()}
    emit(1.0, "Inputs prepared")
    chain = GridChain(reference.grid, grid)
    return Prepared(prepared, ref_key, chain, notes, record, extract or inspection.skull_stripped)
