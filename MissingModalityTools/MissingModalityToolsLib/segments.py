"""The three BraTS tumour sub-regions as Slicer segments.

The registry itself (segment ID, BraTS 2018 label, name, colour, terminology
code) is ``medmodels.labels.SEGMENTS``, the library's one list, which
``medmodels run``'s ``segmentation.nii.gz`` follows (BraTS 2018 labels: 1
necrotic core, 2 oedema, 4 enhancing tumour; docs/architecture.md). This file
adds only what is Slicer's: the terminology entry string, serialised by
Slicer's own terminology logic.
"""

from __future__ import annotations

from medmodels.labels import SEGMENT_CATEGORY_CODE, SEGMENT_REGION_CODE, SEGMENTS, TumourSegment

__all__ = ["SEGMENTS", "TumourSegment", "terminology_entry"]

#: Slicer terminology contexts the codes are looked up in.
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"


def terminology_entry(segment: TumourSegment) -> str:
    """The segment's terminology tag, serialised by Slicer's own terminology logic.

    Slicer's Terminologies logic does the serialising, because the string's
    format changed between Slicer releases.
    """
    import slicer

    serialize = slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry
    return serialize(
        TERMINOLOGY_CONTEXT,
        *SEGMENT_CATEGORY_CODE,
        *segment.code,
        "",
        "",
        "",
        REGION_CONTEXT,
        *SEGMENT_REGION_CODE,
        "",
        "",
        "",
    )
