"""BraTS labels and the three scored regions.

Label conventions: 2018-2020 use 1 necrotic/non-enhancing core (NCR), 2 edema
(ED), 4 enhancing tumour (ET); 2023 on uses 3 for ET. The regions networks
predict, in channel order, are ET = {ET}, TC = {NCR, ET}, WT = {NCR, ED, ET}.
"""

from __future__ import annotations

import numpy as np

from medmodels.errors import InputError

REGIONS = ("ET", "TC", "WT")
ENHANCING_LABEL = {"2018": 4, "2023": 3}
NECROTIC, EDEMA = 1, 2

#: Segment names and colours (BraTS figures' usual colours) for writers and Slicer.
SEGMENTS = (
    {"label": NECROTIC, "name": "Necrotic tumour core", "color": (0.92, 0.20, 0.20)},
    {"label": EDEMA, "name": "Peritumoral edema", "color": (0.20, 0.80, 0.25)},
    {"label": "ET", "name": "Enhancing tumour", "color": (0.98, 0.85, 0.15)},
)


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
