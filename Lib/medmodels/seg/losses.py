"""Losses of ShaSpec segmentation training.

``total = dice + bce + dao_weight * DAO + dco_weight * DCO`` (paper:
alpha = 0.1, beta = 0.02). Both auxiliary losses use available modalities only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

#: Soft Dice on sigmoid outputs, per region channel over batch and space, then
#: averaged over channels: ``1 - mean_c (2|P∩T| + 1e-5) / (|P| + |T| + 1e-5)``.
_DICE = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _DICE(logits.float(), target.float())


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def dao_loss(shared: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Distribution alignment (L1): mean absolute difference between the
    shared features of every pair of *available* modalities of a sample.

    ``shared``: ``(B, M, C, ...)``; ``mask``: ``(B, M)`` bool. Samples with one
    modality have no pair and contribute nothing; 0 if no sample has a pair.
    """
    B, M = mask.shape
    total = shared.new_zeros(())
    pairs = 0
    for i in range(M):
        for j in range(i + 1, M):
            both = mask[:, i] & mask[:, j]
            if both.any():
                d = (shared[both, i].float() - shared[both, j].float()).abs()
                total = total + d.flatten(1).mean(1).sum()
                pairs += int(both.sum())
    return total / pairs if pairs else total


def dco_loss(domain_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Domain classification: cross-entropy of the head on pooled specific
    features against the modality index, over available modalities."""
    B, M = mask.shape
    target = torch.arange(M, device=mask.device).expand(B, M)
    return F.cross_entropy(domain_logits[mask].float(), target[mask])


def seg_losses(out: dict, target: torch.Tensor, dao_weight: float = 0.1, dco_weight: float = 0.02) -> dict:
    """All terms and the weighted ``total``; DAO/DCO only for outputs that
    carry shared/specific features (ShaSpec), 0 for the baseline."""
    logits = out["logits"]
    losses = {"dice": dice_loss(logits, target), "bce": bce_loss(logits, target)}
    total = losses["dice"] + losses["bce"]
    if "shared" in out:
        losses["dao"] = dao_loss(out["shared"], out["mask"])
        losses["dco"] = dco_loss(out["domain_logits"], out["mask"])
        total = total + dao_weight * losses["dao"] + dco_weight * losses["dco"]
    losses["total"] = total
    return losses
