"""The three BraTS tumour sub-regions as Slicer segments: label, name, colour, terminology.

``medmodels run`` writes ``segmentation.nii.gz`` with BraTS 2018 labels
(1 necrotic core, 2 oedema, 4 enhancing tumour; docs/architecture.md). The
colours are the ones most BraTS figures use (core red, oedema green,
enhancing yellow). Terminology uses SNOMED CT codes where one exists; there is
no SNOMED concept for "enhancing tumour", so that segment is coded as a
neoplasm and its name carries the "enhancing".
"""

from __future__ import annotations

from dataclasses import dataclass

CATEGORY = ("49755003", "SCT", "Morphologically Altered Structure")
REGION = ("12738006", "SCT", "Brain")
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class TumourSegment:
    """One sub-region.

    Args:
        segment_id: stable ID inside the segmentation node.
        label: value in the BraTS 2018 label map.
        name: segment name shown in Slicer.
        color: RGB in 0..1.
        code: (value, scheme, meaning) of the segment's type.
    """

    segment_id: str
    label: int
    name: str
    color: tuple[float, float, float]
    code: tuple[str, str, str]


SEGMENTS: tuple[TumourSegment, ...] = (
    TumourSegment("necrotic_core", 1, "Necrotic tumour core", (1.0, 0.0, 0.0), ("6574001", "SCT", "Necrosis")),
    TumourSegment("edema", 2, "Peritumoral edema", (0.0, 0.8, 0.0), ("79654002", "SCT", "Edema")),
    TumourSegment("enhancing_tumour", 4, "Enhancing tumour", (1.0, 0.9, 0.0), ("108369006", "SCT", "Neoplasm")),
)


def terminology_entry(segment: TumourSegment) -> str:
    """The segment's terminology tag, serialised by Slicer's own terminology logic.

    Slicer's Terminologies logic does the serialising (its format changed
    between releases); a build without it gets no terminology, only name and colour.
    """
    import slicer

    serialize = slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry
    return serialize(
        TERMINOLOGY_CONTEXT,
        CATEGORY[0], CATEGORY[1], CATEGORY[2],
        segment.code[0], segment.code[1], segment.code[2],
        "", "", "",
        REGION_CONTEXT,
        REGION[0], REGION[1], REGION[2],
        "", "", "",
    )
