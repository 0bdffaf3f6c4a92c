"""BraTS-layout case folders, split files, and what a run's input means.

A dataset root holds one folder per case. Files follow either naming:

- BraTS 2018-2020: ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz``
- BraTS 2023 on:   ``<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz``

A split file is JSON: ``{"training": [case, ...], "validation": [case, ...]}``.

``resolve_inputs`` is the one place that turns what a user gives to
``medmodels run`` (files one by one, a folder of volumes named by modality, a
case folder, or a dataset root) into cases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medmodels.atomic import write_new_json
from medmodels.contract import ContractError, Manifest
from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.io import VOLUME_SUFFIXES, is_volume_file, read_image
from medmodels.modalities import (
    BY_KEY,
    MODALITY_KEYS,
    assign_modalities,
    check_distinct_sources,
    classify_name,
    is_label_name,
)


def case_file_names(case: str, naming: str = "2018") -> dict[str, str]:
    """File names of a BraTS case: modality key (and 'seg') -> file name.

    The one naming table: ``find_case`` reads it, the phantom writer follows it.

    Raises:
        InputError: a naming other than '2018' or '2023'.
    """
    if naming == "2018":
        names = {k: f"{case}_{BY_KEY[k].brats2018}.nii.gz" for k in MODALITY_KEYS}
        names["seg"] = f"{case}_seg.nii.gz"
    elif naming == "2023":
        names = {k: f"{case}-{BY_KEY[k].brats2023}.nii.gz" for k in MODALITY_KEYS}
        names["seg"] = f"{case}-seg.nii.gz"
    else:
        raise InputError(
            f"Unknown BraTS naming '{naming}': use '2018' (<case>_flair.nii.gz) or '2023' (<case>-t2f.nii.gz)."
        )
    return names


@dataclass(frozen=True)
class Case:
    """One case: its name, the image file of each modality present, its label file if any."""

    name: str
    folder: Path
    images: dict[str, Path] = field(default_factory=dict)
    label: Path | None = None
    naming: str = "2018"

    def load(self) -> tuple[dict[str, Image], Image | None]:
        """Read the images (and the labels) from disk."""
        images = {k: read_image(p) for k, p in self.images.items()}
        return images, (read_image(self.label) if self.label else None)


def find_case(folder: str | Path, require_all: bool = True, require_label: bool = False) -> Case:
    """Read one case folder in either BraTS naming.

    Raises:
        InputError: naming the missing file and the case.
    """
    folder = Path(folder)
    name = folder.name
    for naming in ("2018", "2023"):
        names = case_file_names(name, naming)
        found = {k: folder / f for k, f in names.items() if (folder / f).exists()}
        if any(k in found for k in MODALITY_KEYS):
            break
    else:
        raise InputError(
            f"Case '{name}' in {folder.parent} has no file in BraTS naming: expected e.g. "
            f"'{case_file_names(name, '2018')['flair']}' or '{case_file_names(name, '2023')['flair']}'."
        )
    images = {k: found[k] for k in MODALITY_KEYS if k in found}
    if require_all:
        for key in MODALITY_KEYS:
            if key not in images:
                raise InputError(
                    f"Case '{name}' lacks its {BY_KEY[key].display} file '{folder / names[key]}': add it, or "
                    "leave the case out of the split."
                )
    label = found.get("seg")
    if require_label and label is None:
        raise InputError(
            f"Case '{name}' lacks its label file '{folder / names['seg']}', needed for training and evaluation."
        )
    return Case(name, folder, images, label, naming)


def discover_cases(root: str | Path, require_all: bool = True, require_label: bool = False) -> dict[str, Case]:
    """Every case folder under ``root``, by name (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"Dataset folder '{root}' does not exist: give the folder that holds one folder per case.")
    cases = {
        p.name: find_case(p, require_all, require_label)
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".")
    }
    if not cases:
        raise InputError(f"'{root}' holds no case folders: give the folder that holds one folder per case.")
    return cases


def read_split(path: str | Path, required: Sequence[str] = ()) -> dict[str, list[str]]:
    """Read and check a split file.

    Args:
        path: the JSON file, ``{"training": [names], "validation": [names]}``.
        required: the parts that must name at least one case (an empty
            validation list would otherwise score no case, or every case).

    Raises:
        InputError: a missing or malformed file, a part that is not a list of
            names, a case in both parts, or an empty part of ``required``.
    """
    path = Path(path)
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"Split file '{path}' does not exist.") from None
    except json.JSONDecodeError as err:
        raise InputError(f"Split file '{path}' is not valid JSON ({err}).") from None
    for part in ("training", "validation"):
        if not isinstance(split.get(part), list) or not all(isinstance(c, str) for c in split[part]):
            raise InputError(f"Split file '{path}' needs a list of case names under '{part}'.")
    overlap = set(split["training"]) & set(split["validation"])
    if overlap:
        raise InputError(
            f"Split file '{path}' puts {sorted(overlap)} in both training and validation: keep them apart."
        )
    empty = [part for part in required if not split[part]]
    if empty:
        raise InputError(
            f"Split file '{path}' lists no {' and no '.join(empty)} cases: add case names under "
            f"{' and '.join(repr(part) for part in empty)}, or give another split file."
        )
    return {"training": list(split["training"]), "validation": list(split["validation"])}


def write_split(path: str | Path, training: list[str], validation: list[str]) -> None:
    """Write a split file (what ``read_split`` reads) as a new file: whole or absent, never over
    an existing one (``atomic.write_new_json``).

    Args:
        path: the JSON file to create; its folder must exist.
        training, validation: the case names of each part.

    Raises:
        InputError: a case in both parts, or ``path`` exists already.
    """
    if set(training) & set(validation):
        raise InputError("A case cannot be in both training and validation.")
    write_new_json(
        path,
        {"training": list(training), "validation": list(validation)},
        "give the split another file name, or delete the old split first",
    )


def split_cases(root: str | Path, split_file: str | Path, part: str, require_label: bool = True) -> list[Case]:
    """The cases of one part ('training' or 'validation') of a split, checked on disk."""
    if part not in ("training", "validation"):
        raise InputError(f"Unknown split part '{part}': use 'training' or 'validation'.")
    split = read_split(split_file, required=(part,))
    cases = discover_cases(root, require_all=True, require_label=require_label)
    missing = [c for c in split[part] if c not in cases]
    if missing:
        raise InputError(
            f"The split file names {len(missing)} {part} case(s) not found in '{root}': {', '.join(missing)}. "
            "Fix the split file or the dataset folder."
        )
    return [cases[c] for c in split[part]]


def resolve_inputs(
    source: str | Path | None = None, files: Mapping[str, str | Path | None] | None = None
) -> list[tuple[str, dict[str, Path]]]:
    """What the input of a run means, as cases: ``[(case name, {modality key: path})]``.

    Args:
        source: a folder, one of: a BraTS case folder; a folder of volumes
            (files or DICOM series folders) named after their modality
            (``flair.nii.gz``, ``T1.nrrd``, ``*_t1ce.nii.gz``, ``*-t2f.nii.gz``);
            or a dataset root holding one such folder per case. None when
            ``files`` are given.
        files: modality key -> volume file or DICOM folder of one case, given
            one at a time (``--flair/--t1/--t1c/--t2``); None values are
            modalities not given.

    Returns:
        One entry per case, sorted by name, each mapping the modalities
        present (canonical order) to their paths. A single case (files, a
        named-volume folder or a case folder) gives a list of one.

    Raises:
        InputError: both or neither kind of input, a missing file, the same
            file for two modalities, names that fit two volumes to one
            modality, or a folder in which nothing is named like a modality.
    """
    given = {k: Path(v) for k, v in (files or {}).items() if v is not None}
    if source is not None and given:
        raise InputError("Give either a folder or the modalities one by one (--flair/--t1/--t1c/--t2), not both.")
    if given:
        return [_case_from_files(given)]
    if source is None:
        raise InputError("No input: give a folder, or at least one of --flair, --t1, --t1c, --t2.")
    source = Path(source)
    if not source.is_dir():
        raise InputError(
            f"'{source}' is not a folder: give a case folder, a folder of case folders or a folder of "
            "volumes named after their modality, or the files one by one with --flair/--t1/--t1c/--t2."
        )
    single = _case_in_folder(source)
    if single is not None:
        return [single]
    cases = []
    for folder in (p for p in sorted(source.iterdir()) if p.is_dir() and not p.name.startswith(".")):
        case = _case_in_folder(folder)
        if case is None:
            raise InputError(
                f"'{folder}' in the dataset folder '{source}' holds no volume named after a modality "
                "(flair, t1, t1c/t1ce, t2): rename its files, or move it out of the dataset folder."
            )
        cases.append(case)
    if not cases:
        raise InputError(
            f"No volume in '{source}' is named after a modality (flair, t1, t1c/t1ce, t2) and it holds no "
            "case folders: rename the files, or give them one by one with --flair/--t1/--t1c/--t2."
        )
    return cases


def _resolved(path: Path, what: str) -> Path:
    """``path`` with links resolved, or an InputError for a missing path or a link loop."""
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise InputError(f"The {what} '{path}' does not exist (or is a broken link): check the path.") from None
    except (RuntimeError, OSError) as err:  # a symlink loop: RuntimeError up to Python 3.12, OSError after
        raise InputError(
            f"The {what} '{path}' cannot be opened ({err}): fix the link or give the file itself."
        ) from None
    return resolved


def _case_from_files(given: dict[str, Path]) -> tuple[str, dict[str, Path]]:
    """One case given file by file; named after the folder of its first file (a name for messages only)."""
    unknown = [k for k in given if k not in MODALITY_KEYS]
    if unknown:
        raise InputError(f"Unknown modality key(s) {', '.join(unknown)}: use {', '.join(MODALITY_KEYS)}.")
    resolved = {k: _resolved(p, f"{BY_KEY[k].display} input") for k, p in given.items()}
    check_distinct_sources({k: str(p) for k, p in resolved.items()}, what="file")
    images = {k: given[k] for k in MODALITY_KEYS if k in given}
    first = resolved[next(iter(images))]
    return first.parent.name or "case", images


def synthetic_files(folder: Path) -> set[str]:
    """Names of files in ``folder`` that a medmodels run wrote (its ``manifest.json``
    lists them): synthesised volumes, their uncertainty maps, the segmentation.
    They are never taken as acquired images by a later run."""
    try:
        manifest = Manifest.read(folder)
    except ContractError:
        return set()  # no manifest (or not ours): nothing in the folder is known to be synthetic
    return set(manifest.listed_files().values())


def skipped_inputs(cases: list[tuple[str, dict[str, Path]]]) -> list[str]:
    """What ``resolve_inputs`` left out of each case's folder that a user may have meant as an input, and why.

    A modality left out is synthesised instead, so a file passed over must
    not be passed over in silence: a volume named after no modality (e.g. an
    unusual abbreviation), a file the folder's ``manifest.json`` lists as an
    earlier run's output (a stale manifest beside acquired scans), a broken
    link or a link loop. Label maps' names and other files (text, JSON) are
    left out without a word, as expected.

    Args:
        cases: what ``resolve_inputs`` returned for a folder (not for files given one by one,
            whose folders may hold anything).

    Returns:
        one sentence per file left out, naming the file and the fix.
    """
    notes = []
    for _, files in cases:
        if not files:
            continue
        folder = next(iter(files.values())).parent
        used = {p.name for p in files.values()}
        synthetic = synthetic_files(folder)
        for entry in sorted(folder.iterdir()):
            if entry.name in used or entry.name.startswith(".") or is_label_name(entry.name):
                continue
            note = _skipped_reason(entry, synthetic)
            if note:
                notes.append(f"'{entry}' was left out: {note}")
    return notes


def _skipped_reason(entry: Path, synthetic: set[str]) -> str | None:
    """Why ``entry`` (a file or folder beside a case's inputs) is not an input, or None when that goes unsaid."""
    key = classify_name(entry.name)
    volume_name = entry.name.lower().endswith(VOLUME_SUFFIXES)
    if entry.is_symlink() and not entry.exists() and (volume_name or key):
        return "it is a broken link or a link loop. Fix the link, or give the file itself with --flair/--t1/--t1c/--t2."
    if entry.name in synthetic:
        return (
            "the folder's manifest.json lists it as an earlier run's output (synthesised), so it is not taken "
            "as acquired. If it is an acquired scan, move manifest.json out of the folder."
        )
    if is_volume_file(entry) and key is None:
        return (
            "its name says no modality (flair, t1, t1c/t1ce, t2; BraTS 2023 t2f, t1n, t1c, t2w). Rename it after "
            "its modality, or give it with --flair/--t1/--t1c/--t2."
        )
    if key is not None and (is_volume_file(entry) or entry.is_dir()):
        return f"another volume was taken for {BY_KEY[key].display}. Move the one not meant out of the folder."
    return None


def input_label_convention(cases: list[tuple[str, dict[str, Path]]]) -> str | None:
    """ "2023" when every case's files are named in BraTS 2023 style (``-t2f``, ``-t1n``, ``-t1c``,
    ``-t2w``), "2018" when none is, None when the cases are mixed."""
    styles = {
        any(re.search(r"-(t2f|t1n|t1c|t2w)$", _stem(p.name).lower()) for p in files.values()) for _, files in cases
    }
    return None if len(styles) > 1 else ("2023" if styles == {True} else "2018")


def _stem(name: str) -> str:
    """A file name without its image suffix."""
    return next((name[: -len(s)] for s in VOLUME_SUFFIXES if name.lower().endswith(s)), name)


def _case_in_folder(folder: Path) -> tuple[str, dict[str, Path]] | None:
    """A BraTS case folder or a folder of volumes named by modality, as one case; None if neither.

    One rule set: names of label maps (``is_label_name``) and files a previous
    run synthesised (``synthetic_files``) are never images; a name that points
    at several modalities, or several names for one modality, is refused, never guessed.
    """
    synthetic = synthetic_files(folder)
    try:
        case = find_case(folder, require_all=False)
        images = {k: p for k, p in case.images.items() if p.name not in synthetic}
        if images:
            return case.name, images
    except InputError:
        pass  # not in BraTS naming: try the names of the volumes themselves
    # DICOM series come as folders: count a sub-folder only when its name says a modality,
    # so that the case folders of a dataset root are not taken for volumes.
    entries = [
        p
        for p in sorted(folder.iterdir())
        if not p.name.startswith(".")
        and p.name not in synthetic
        and (is_volume_file(p) or (p.is_dir() and classify_name(p.name) is not None))
    ]
    assignment = assign_modalities([p.name for p in entries])
    if assignment.ambiguous or assignment.conflicting:
        raise InputError(
            f"In '{folder}': "
            + " ".join(assignment.ambiguities())
            + " Move the others away, or give the files one by one with --flair/--t1/--t1c/--t2."
        )
    if not assignment.assigned:
        return None
    return folder.name, {k: folder / name for k, name in assignment.assigned.items()}
