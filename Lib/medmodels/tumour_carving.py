"""The region a tumour-mixing step carves out of a donor: its tumour grown by a margin, inside both brains.

Shared by segmentation's mixing of 3D patches (``medmodels.seg.tumour_mix``) and synthesis's mixing of
slices with their neighbours (``medmodels.syn.tumour_mix``), so both paste the same region: the tumour
with a margin of its surrounding tissue (CarveMix's margin, so the pasted edge is not the label's edge),
never outside the brain it comes from or the one it goes into.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def carve_region(donor_wt: torch.Tensor, donor_brain: torch.Tensor, recipient_brain: torch.Tensor, margin: int):
    """Where the donor's crop replaces the recipient's.

    Args:
        donor_wt: ``(Z, Y, X)`` bool, the donor crop's whole tumour.
        donor_brain, recipient_brain: ``(Z, Y, X)`` bool, each crop's brain (any modality non-zero).
        margin: voxels of surrounding tissue kept around the tumour (>= 0; a cube's dilation).

    Returns:
        ``(Z, Y, X)`` bool: the tumour grown by ``margin``, inside both brains.
    """
    grown = donor_wt
    if margin > 0:
        k = 2 * int(margin) + 1
        grown = F.max_pool3d(donor_wt[None, None].float(), k, stride=1, padding=int(margin))[0, 0] > 0
    return grown & donor_brain & recipient_brain
