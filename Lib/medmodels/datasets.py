"""BraTS-layout case folders and split files.

A dataset root holds one folder per case. Files follow either naming:

- BraTS 2018-2020: ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz``
- BraTS 2023 on:   ``<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz``

A split file is JSON: ``{"training": [case, ...], "validation": [case, ...]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.io import read_image
from medmodels.modalities import BY_KEY, MODALITY_KEYS
from medmodels.phantom import case_file_names


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
        raise InputError(f"Case '{name}' lacks its label file '{folder / names['seg']}', needed for training and evaluation.")
    return Case(name, folder, images, label, naming)


def discover_cases(root: str | Path, require_all: bool = True, require_label: bool = False) -> dict[str, Case]:
    """Every case folder under ``root``, by name (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"Dataset folder '{root}' does not exist: give the folder that holds one folder per case.")
    cases = {p.name: find_case(p, require_all, require_label) for p in sorted(root.iterdir())
             if p.is_dir() and not p.name.startswith(".")}
    if not cases:
        raise InputError(f"'{root}' holds no case folders: give the folder that holds one folder per case.")
    return cases


def read_split(path: str | Path) -> dict[str, list[str]]:
    """Read and check a split file."""
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
        raise InputError(f"Split file '{path}' puts {sorted(overlap)} in both training and validation: keep them apart.")
    return {"training": list(split["training"]), "validation": list(split["validation"])}


def write_split(path: str | Path, training: list[str], validation: list[str]) -> None:
    if set(training) & set(validation):
        raise InputError("A case cannot be in both training and validation.")
    Path(path).write_text(json.dumps({"training": training, "validation": validation}, indent=2) + "\n", encoding="utf-8")


def split_cases(root: str | Path, split_file: str | Path, part: str, require_label: bool = True) -> list[Case]:
    """The cases of one part ('training' or 'validation') of a split, checked on disk."""
    split = read_split(split_file)
    if part not in split:
        raise InputError(f"Unknown split part '{part}': use 'training' or 'validation'.")
    cases = discover_cases(root, require_all=True, require_label=require_label)
    missing = [c for c in split[part] if c not in cases]
    if missing:
        raise InputError(
            f"The split file names {len(missing)} {part} case(s) not found in '{root}': {', '.join(missing)}. "
            "Fix the split file or the dataset folder."
        )
    return [cases[c] for c in split[part]]
