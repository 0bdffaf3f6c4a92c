"""The four brain-tumour MRI modalities: canonical order, name aliases, and the
availability mask.

Canonical order is FLAIR, T1, T1c, T2 (the order of the ShaSpec paper's
tables). Every tensor with a modality axis in medmodels uses this order, and
``MODALITY_KEYS`` is its one source.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medmodels.errors import InputError


@dataclass(frozen=True)
class Modality:
    """One MRI contrast.

    Args:
        key: short identifier used in code, file names and command-line flags.
        display: name shown to people ("T1c").
        brats2018: file suffix in BraTS 2018-2020 (``<case>_<suffix>.nii.gz``).
        brats2023: file suffix in BraTS 2023 on (``<case>-<suffix>.nii.gz``).
        description: one line for help texts.
    """

    key: str
    display: str
    brats2018: str
    brats2023: str
    description: str


MODALITIES: tuple[Modality, ...] = (
    Modality("flair", "FLAIR", "flair", "t2f", "T2-weighted fluid-attenuated inversion recovery"),
    Modality("t1", "T1", "t1", "t1n", "native T1-weighted"),
    Modality("t1c", "T1c", "t1ce", "t1c", "T1-weighted after gadolinium contrast"),
    Modality("t2", "T2", "t2", "t2w", "T2-weighted"),
)
MODALITY_KEYS: tuple[str, ...] = tuple(m.key for m in MODALITIES)
BY_KEY: dict[str, Modality] = {m.key: m for m in MODALITIES}


def modality(key: str) -> Modality:
    """The modality with this key; a clear error for an unknown key."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise InputError(f"Unknown modality '{key}'. Use one of: {', '.join(MODALITY_KEYS)}.") from None


# ---------------------------------------------------------------------------
# Name -> modality. Series names come from three worlds: BraTS 2018-2020 file
# suffixes, BraTS 2023 suffixes, and what scanners and PACS write
# ("T1_MPRAGE", "T1 post", "T2_FLAIR", "T2W_TSE"). We split a name into tokens
# and test the modalities in a fixed precedence: FLAIR first (a FLAIR is also
# "T2"-named), then T1c (a post-contrast T1 is also "T1"-named), then T1, then
# T2. So one name maps to at most one modality.
# ---------------------------------------------------------------------------

_CONTRAST_WORDS = {
    "ce",
    "c",
    "+c",
    "c+",
    "+",
    "gd",
    "+gd",
    "gad",
    "gado",
    "post",
    "postcontrast",
    "contrast",
    "enhanced",
    "kontrast",
    "km",
}
_T1_WORDS = {"t1", "t1w", "t1n", "mprage", "spgr", "bravo", "vibe", "t1pre", "t1native"}
_T1C_WORDS = {"t1ce", "t1c", "t1gd", "t1+c", "t1c+", "t1+gd", "t1post", "t1contrast", "t1+", "t1wce", "t1wc", "t1wgd"}
_T2_WORDS = {"t2", "t2w", "t2tse", "t2wtse"}
#: "fla": BrainLes preprocessing's name for FLAIR (``*_fla_bet.nii.gz``).
_FLAIR_WORDS = {"flair", "fla", "t2f", "tirm", "t2flair", "t2wflair", "darkfluid"}


def _tokens(name: str) -> list[str]:
    stem = Path(name).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    tokens = [t for t in re.split(r"[\s_\-\.()\[\]/,]+", stem.lower()) if t]
    # "T1 + C" -> "t1", "+", "c": glue a lone "+" to its neighbours' meaning.
    return tokens


#: Words that make a name a label map (segmentation, mask, label), never an image.
_LABEL_PREFIXES = ("seg", "label")


def is_label_name(name: str) -> bool:
    """True when a name says label map (``*seg*``, ``*mask*``, ``*label*``): such a
    file is never taken as an image (``t1_seg.nii.gz``, ``t1_post_mask.nii.gz``).
    "masked" (an image with a mask applied) is not a mask."""
    return any(t.startswith(_LABEL_PREFIXES) or t.endswith("mask") for t in _tokens(name))


def _mentioned(tokens: Sequence[str]) -> set[str]:
    """Every modality a token of the name stands for on its own."""
    found = set()
    for t in tokens:
        if t in _FLAIR_WORDS or "flair" in t:
            found.add("flair")
        elif t in _T1C_WORDS:
            found.add("t1c")
        elif t in _T1_WORDS or (t.startswith("t1") and t[2:] in {"pre", "native", "w"}):
            found.add("t1")
        elif t in _T2_WORDS:
            found.add("t2")
    return found


def names_several_modalities(name: str) -> bool:
    """True when a name points at a T1 (native or post-contrast) and at a T2 or
    FLAIR at once (``t1_t2_mix.nii.gz``): such a name is never guessed. A FLAIR
    named "T2 FLAIR" and a T1c named "T1 post" point at one modality."""
    mentioned = _mentioned(_tokens(name))
    return bool(mentioned & {"t1", "t1c"}) and bool(mentioned & {"t2", "flair"})


def classify_name(name: str) -> str | None:
    """The modality key a volume or file name stands for, or None if none,
    for a label map's name (``is_label_name``), or for a name that points at
    several modalities (``names_several_modalities``).

    >>> classify_name("Brats18_2013_2_1_t1ce.nii.gz")
    't1c'
    >>> classify_name("T2_FLAIR")
    'flair'
    """
    if is_label_name(name) or names_several_modalities(name):
        return None
    tokens = _tokens(name)
    joined = set(tokens) | {"".join(tokens)}
    if joined & _FLAIR_WORDS or any("flair" in t for t in tokens) or ("dark" in tokens and "fluid" in tokens):
        return "flair"
    has_t1 = bool(joined & _T1_WORDS)
    if joined & _T1C_WORDS or (has_t1 and joined & _CONTRAST_WORDS):
        return "t1c"
    if has_t1 or any(t.startswith("t1") and t[2:] in {"pre", "native", "w"} for t in tokens):
        return "t1"
    if joined & _T2_WORDS:
        return "t2"
    return None


@dataclass(frozen=True)
class ModalityAssignment:
    """The result of assigning names to modalities.

    Attributes:
        assigned: modality key -> the one name assigned to it.
        ambiguous: modality key -> the several names that all look like it
            (none of them is assigned: the user must choose).
        unknown: names that look like no modality (label maps' names among them).
        conflicting: names that point at several modalities (``t1_t2_mix``):
            never guessed, the user must rename or choose.
    """

    assigned: dict[str, str] = field(default_factory=dict)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)

    def ambiguities(self) -> list[str]:
        """Human-readable sentences for each ambiguity and each name of several modalities."""
        return [
            f"{len(names)} volumes look like {BY_KEY[key].display}: {', '.join(names)}; "
            f"choose one for {BY_KEY[key].display}."
            for key, names in self.ambiguous.items()
        ] + [
            f"'{name}' names several modalities ({', '.join(BY_KEY[k].display for k in ordered(_mentioned(_tokens(name))))}): "
            "rename it after the one it holds, or choose it by hand."
            for name in self.conflicting
        ]


def assign_modalities(names: Iterable[str]) -> ModalityAssignment:
    """Assign each name to at most one modality, never one name to two.

    Deterministic: the result depends only on the names, not their order.
    Where several names look like the same modality, none is assigned and the
    clash is reported in ``ambiguous`` instead of guessing.
    """
    candidates: dict[str, list[str]] = {}
    unknown: list[str] = []
    conflicting: list[str] = []
    for name in sorted(set(names)):
        key = classify_name(name)
        if key is None and not is_label_name(name) and names_several_modalities(name):
            conflicting.append(name)
        elif key is None:
            unknown.append(name)
        else:
            candidates.setdefault(key, []).append(name)
    assigned = {k: v[0] for k, v in candidates.items() if len(v) == 1}
    ambiguous = {k: v for k, v in candidates.items() if len(v) > 1}
    in_order = {k: assigned[k] for k in MODALITY_KEYS if k in assigned}
    ambiguous_in_order = {k: ambiguous[k] for k in MODALITY_KEYS if k in ambiguous}
    return ModalityAssignment(in_order, ambiguous_in_order, unknown, conflicting)


# ---------------------------------------------------------------------------
# Availability mask
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AvailabilityMask:
    """Which of the four modalities were acquired, in canonical order.

    Args:
        available: four booleans (FLAIR, T1, T1c, T2); True = acquired.
            At least one must be True.
    """

    available: tuple[bool, bool, bool, bool]

    def __post_init__(self) -> None:
        flags = tuple(bool(a) for a in self.available)
        if len(flags) != len(MODALITY_KEYS):
            raise InputError(
                f"An availability mask has {len(MODALITY_KEYS)} entries ({', '.join(MODALITY_KEYS)}), got {len(flags)}."
            )
        if not any(flags):
            raise InputError("No modality is available: provide at least one of FLAIR, T1, T1c or T2.")
        object.__setattr__(self, "available", flags)

    @classmethod
    def from_keys(cls, keys: Iterable[str]) -> AvailabilityMask:
        keys = set(keys)
        for k in keys:
            modality(k)  # raises on unknown keys
        return cls(tuple(k in keys for k in MODALITY_KEYS))

    @classmethod
    def from_bits(cls, bits: str) -> AvailabilityMask:
        """From a string like "1011" (canonical order, 1 = acquired)."""
        if len(bits) != 4 or set(bits) - {"0", "1"}:
            raise InputError(f"A mask string is four characters of 0/1 (FLAIR,T1,T1c,T2), got '{bits}'.")
        return cls(tuple(b == "1" for b in bits))

    @classmethod
    def all_subsets(cls) -> list[AvailabilityMask]:
        """The 15 non-empty subsets, in the order of the ShaSpec paper's table:
        single modalities, then pairs, triples and all four."""
        out = []
        for size in range(1, len(MODALITY_KEYS) + 1):
            for combo in itertools.combinations(MODALITY_KEYS, size):
                out.append(cls.from_keys(combo))
        return out

    @classmethod
    def partial_subsets(cls) -> list[AvailabilityMask]:
        """The 14 subsets with at least one modality missing (the synthesis patterns)."""
        return [m for m in cls.all_subsets() if not m.is_complete]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, a in zip(MODALITY_KEYS, self.available) if a)

    @property
    def missing_keys(self) -> tuple[str, ...]:
        return tuple(k for k, a in zip(MODALITY_KEYS, self.available) if not a)

    @property
    def is_complete(self) -> bool:
        return all(self.available)

    @property
    def bits(self) -> str:
        return "".join("1" if a else "0" for a in self.available)

    @property
    def label(self) -> str:
        """ "FLAIR+T1c"-style name for tables."""
        return "+".join(BY_KEY[k].display for k in self.keys)

    def vector(self) -> np.ndarray:
        """float32 (4,), 1 = acquired."""
        return np.asarray(self.available, dtype=np.float32)

    def missing_vector(self) -> np.ndarray:
        """float32 (4,), 1 = missing: the M2DN paper's condition vector."""
        return 1.0 - self.vector()

    def __iter__(self) -> Iterator[bool]:
        return iter(self.available)

    def __str__(self) -> str:
        return self.label


def resolve_mask(images: Mapping[str, object], mask: AvailabilityMask | None = None) -> AvailabilityMask:
    """The mask a model call uses: the given one, or the keys of ``images``.

    Raises:
        InputError: unknown keys, or a modality marked available without an image.
    """
    unknown = set(images) - set(MODALITY_KEYS)
    if unknown:
        raise InputError(f"Unknown modality keys {sorted(unknown)}: use {', '.join(MODALITY_KEYS)}.")
    mask = mask if mask is not None else AvailabilityMask.from_keys(images.keys())
    absent = [k for k in mask.keys if k not in images]
    if absent:
        raise InputError(
            f"The mask marks {', '.join(absent)} available, but no image was given for it: "
            "give the image or mark it missing."
        )
    return mask


def check_distinct_sources(sources: Mapping[str, str], what: str = "volume") -> None:
    """Refuse the same source (file path, node ID) chosen for two modalities."""
    seen: dict[str, str] = {}
    for key, src in sources.items():
        if src in seen:
            raise InputError(
                f"The same {what} '{src}' is chosen for both {BY_KEY[seen[src]].display} and "
                f"{BY_KEY[key].display}: choose a different {what} for one of them, or leave it empty."
            )
        seen[src] = key


def ordered(keys: Sequence[str]) -> list[str]:
    """Keys sorted in canonical order."""
    return [k for k in MODALITY_KEYS if k in set(keys)]
