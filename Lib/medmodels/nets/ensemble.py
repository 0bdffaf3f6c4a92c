"""Segmentation networks run side by side, their probabilities averaged.

Why: on the validation cases the bundled ShaSpec and the zero-filling U-Net err in different places
(ShaSpec keeps more of the enhancing tumour, the U-Net more of the whole tumour;
docs/segmentation.md, "Both models together"), and the mean of their probabilities scores
above either. The ensemble is one network to everything downstream: it returns the logit of the
mean probability, so the sliding window, the threshold, the calibration and the clean-up treat it
as they treat a single model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Probabilities are clamped to [EPS, 1 - EPS] before the logit, so that it stays finite.
EPS = 1e-6


class ProbabilityMean(nn.Module):
    """The equal mean of segmentation networks' sigmoid probabilities, as logits.

    ``forward(x, mask)``: ``x`` ``(B, 4, D, H, W)``, ``mask`` as each member takes it (``(4,)`` or
    ``(B, 4)`` bool, True = available); every member gets both. Returns ``{"logits": (B, R, D, H, W)}``,
    the logit of the mean of the members' ``sigmoid(logits)``.

    Args:
        members: two or more networks with that ``forward``, each returning ``{"logits": ...}`` of one
            shape (the same regions in the same order).
    """

    arch = "ensemble"

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two or more members (got {len(members)})")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        probs = torch.stack([torch.sigmoid(m(x, mask)["logits"].float()) for m in self.members]).mean(0)
        return {"logits": torch.logit(probs.clamp(EPS, 1 - EPS))}
