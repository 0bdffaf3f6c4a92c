"""BraTS labels, the three scored regions, and the one registry of tumour segments.

Label conventions: 2018-2020 use 1 necrotic/non-enhancing core (NCR), 2 edema
(ED), 4 enhancing tumour (ET); 2023 on uses 3 for ET. The regions networks
predict, in channel order, are ET = {ET}, TC = {NCR, ET}, WT = {NCR, ED, ET}.

``SEGMENTS`` is the one list of the three label classes as segments: ID, label
value, name, colour and terminology code. The Slicer module shows them from
here (``MissingModalityToolsLib/segments.py`` only adds Slicer's serialising),
so a name or colour changes in one place. Numpy only, as the Slicer process
imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmodels.errors import InputError

REGIONS = ("ET", "TC", "WT")
ENHANCING_LABEL = {"2018": 4, "2023": 3}
NECROTIC, EDEMA = 1, 2


@dataclass(frozen=True)
class TumourSegment:
    """One label class as a segment.

    Args:
        segment_id: stable ID of the segment inside a segmentation.
        label: its value in a BraTS 2018 label map (``medmodels run`` writes that convention).
        name: the name shown to people.
        color: RGB in 0..1.
        code: ``(value, scheme, meaning)`` of the segment's type, a DICOM/SNOMED CT code.
    """

    segment_id: str
    label: int
    name: str
    color: tuple[float, float, float]
    code: tuple[str, str, str]


#: The three segments, in label order. Colours: the ones most BraTS figures use
#: (core red, edema green, enhancing yellow). Codes are SNOMED CT (scheme "SCT");
#: SNOMED has no concept for "enhancing tumour", so that segment is coded as a
#: neoplasm and its name carries the "enhancing".
SEGMENTS: tuple[TumourSegment, ...] = (
    TumourSegment("necrotic_core", NECROTIC, "Necrotic tumour core", (1.0, 0.0, 0.0), ("6574001", "SCT", "Necrosis")),
    TumourSegment("edema", EDEMA, "Peritumoral edema", (0.0, 0.8, 0.0), ("79654002", "SCT", "Edema")),
    TumourSegment(
        "enhancing_tumour",
        ENHANCING_LABEL["2018"],
        "Enhancing tumour",
        (1.0, 0.9, 0.0),
        ("108369006", "SCT", "Neoplasm"),
    ),
)
#: Terminology category of every segment, and the anatomic region they lie in (SNOMED CT).
SEGMENT_CATEGORY_CODE = ("49755003", "SCT", "Morphologically Altered Structure")
SEGMENT_REGION_CODE = ("12738006", "SCT", "Brain")


def _check(convention: str) -> int:
    if convention not in ENHANCING_LABEL:
        raise InputError(f"Unknown label convention '{convention}': use '2018' (ET=4) or '2023' (ET=3).")
    return ENHANCING_LABEL[convention]


def detect_convention(labels: np.ndarray) -> str:
    """'2023' if the labels use 3 and not 4, else '2018'."""
    values = set(np.unique(labels).tolist())
    unexpected = values - {0, 1, 2, 3, 4}
    if unexpected or {3, 4} <= values:
        raise InputError(
            f"Label values {sorted(values)} are not BraTS labels (0, 1, 2 and 4 in 2018-2020, or 3 for ET from 2023)."
        )
    return "2023" if 3 in values else "2018"


def labels_to_regions(labels: np.ndarray, convention: str | None = None) -> np.ndarray:
    """``(Z, Y, X)`` labels -> ``(3, Z, Y, X)`` bool regions ET, TC, WT."""
    et = _check(convention or detect_convention(labels))
    is_et = labels == et
    tc = is_et | (labels == NECROTIC)
    wt = tc | (labels == EDEMA)
    return np.stack([is_et, tc, wt])


def regions_to_labels(regions: np.ndarray, convention: str = "2018") -> np.ndarray:
    """``(3, Z, Y, X)`` bool regions ET, TC, WT -> uint8 labels.

    Nested by construction, as the paper's code does: WT outside TC is edema,
    TC outside ET is necrotic core, ET is enhancing (ET wins over the rest).
    """
    et_label = _check(convention)
    et, tc, wt = (np.asarray(r, dtype=bool) for r in regions)
    out = np.zeros(et.shape, dtype=np.uint8)
    out[wt] = EDEMA
    out[tc] = NECROTIC
    out[et] = et_label
    return out


def convert_convention(labels: np.ndarray, to: str) -> np.ndarray:
    """Relabel ET between the 2018 (4) and 2023 (3) conventions."""
    target = _check(to)
    source = ENHANCING_LABEL[detect_convention(labels)]
    out = labels.astype(np.uint8).copy()
    out[labels == source] = target
    return out
