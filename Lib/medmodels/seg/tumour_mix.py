"""Tumour mixing: another case's tumour carved out and pasted into a training patch.

Why: with 11 training cases the network sees 11 tumours, each always in the same brain, and
learns them (the training loss falls while validation stays flat, docs/segmentation.md). Pasting
a tumour with a margin of its surrounding tissue into another case's brain makes new
tumour/brain pairs from the same cases: CarveMix (Zhang et al., MICCAI 2021, "CarveMix: a simple
data augmentation method for brain lesion segmentation") does it on whole co-registered volumes,
TumorCP (Yang et al., MICCAI 2021) at new places. Here it works on patches: the donor's crop is
centred on one of its whole-tumour voxels and laid over the recipient's crop, so the tumour lands
near the patch centre wherever the recipient's crop was taken (on tumour or on any brain voxel).

Both crops are z-scores inside their brains (0 outside), so the donor's intensities carry over as
they are. The carved region is the donor's whole tumour grown by ``margin`` voxels (CarveMix's
margin of surrounding tissue, so the pasted edge is not the label's edge), kept inside both brains.
Inside it the patch takes the donor's intensities and regions; outside it the recipient's stay.
"""

from __future__ import annotations

import torch

from medmodels.tumour_carving import carve_region

#: The largest margin drawn, in working voxels (2 at 2.5 mm: up to 5 mm of the donor's tissue).
MAX_MARGIN = 2


def tumour_mix(
    image: torch.Tensor, regions: torch.Tensor, donor_image: torch.Tensor, donor_regions: torch.Tensor, margin: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipient crop with the donor crop's carved tumour pasted in (new tensors; inputs untouched).

    Args:
        image, donor_image: ``(4, Z, Y, X)`` z-scores, 0 outside the brain, the same shape.
        regions, donor_regions: ``(3, Z, Y, X)`` ET, TC, WT (uint8 or bool); WT is the last channel.
        margin: as ``tumour_carving.carve_region``.

    Returns:
        ``(image, regions)``: inside the carved region the donor's, elsewhere the recipient's.
    """
    if image.shape != donor_image.shape or regions.shape != donor_regions.shape:
        raise ValueError(
            f"tumour_mix needs crops of one shape (got {tuple(image.shape)} and {tuple(donor_image.shape)})"
        )
    carve = carve_region(donor_regions[-1].bool(), (donor_image != 0).any(0), (image != 0).any(0), margin)
    return torch.where(carve, donor_image, image), torch.where(carve, donor_regions, regions)
