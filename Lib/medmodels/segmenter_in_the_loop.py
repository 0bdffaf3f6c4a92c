"""The segmenter-in-the-loop loss: a frozen tumour segmenter reads the synthesised volume.

The squared error lets a network that cannot place the enhancing rim spread
its brightness thin around it: the synthesised T1c then has no enhancement
(issue 20), and segmenting on it loses the enhancing tumour. This loss asks
for what the segmenter needs instead. A block of consecutive slices (``D``
slices of ``D x D``, ``medmodels.syn.data.sample_block``) is synthesised slice by
slice, stacked into a volume with the acquired modalities, pooled to the
segmenter's working spacing and segmented by the frozen segmenter (the bundled
ShaSpec by default) with all four modalities; the loss is its Dice + BCE on
the enhancing tumour and the tumour core (the regions T1c carries) against the
case's labels. Its gradient reaches the synthesis network through the
segmenter, whose weights never change (as in a BraSyn 2025 entry,
AImageLab-zip/BraSyn25).

Shapes: ``(D, M, D, D)`` slice batches in z-scores, ``M`` = 4 modalities in
``medmodels.modalities`` order; the volume the segmenter reads is ``(1, M, D/p,
D/p, D/p)`` for a pooling factor ``p``.

It needs both families, so it lives above them (as ``downstream.py`` does):
``syn.train`` takes the loss ``block_loss`` builds as an argument, and
``train-syn`` and ``bench-syn --training`` build it from the run's options.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from medmodels.errors import InputError
from medmodels.seg.inference import load_segmenter
from medmodels.seg.losses import bce_loss, dice_loss
from medmodels.syn.config import SynTrainConfig

#: ``(pred, x0, missing, regions) -> loss``: what ``syn.train`` calls on a block (``segmenter_loss``'s
#: arguments without the segmenter and the pooling).
BlockLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: The segmenter's output channels this loss scores: ET and TC (``medmodels.labels.REGIONS`` order).
SCORED_REGIONS = slice(0, 2)


def pooling_factor(synthesis_spacing, segmenter_spacing) -> int:
    """The whole number of synthesis voxels per segmenter voxel along every axis.

    Raises:
        InputError: the segmenter's spacing is not one whole multiple of the synthesis spacing.
    """
    ratios = [float(b) / float(a) for a, b in zip(synthesis_spacing, segmenter_spacing, strict=True)]
    factor = round(ratios[0])
    if factor < 1 or any(abs(r - factor) > 1e-3 for r in ratios):
        raise InputError(
            f"The segmenter works at {tuple(segmenter_spacing)} mm and synthesis at {tuple(synthesis_spacing)} mm: "
            "the segmenter-in-the-loop loss needs the segmenter's spacing to be the same whole multiple of the "
            "synthesis spacing along every axis. Train at such a --spacing or give another --segmenter."
        )
    return factor


def frozen(segmenter: nn.Module) -> nn.Module:
    """The segmenter in evaluation mode with its weights out of every gradient (in place; returned)."""
    segmenter.eval()
    for p in segmenter.parameters():
        p.requires_grad_(False)
    return segmenter


def segmenter_loss(
    segmenter: nn.Module,
    pred: torch.Tensor,
    x0: torch.Tensor,
    missing: torch.Tensor,
    regions: torch.Tensor,
    pool: int = 1,
) -> torch.Tensor:
    """Dice + BCE of the frozen segmenter's ET and TC on the acquired + synthesised block.

    Args:
        segmenter: ``(1, M, d, h, w), (1, M) mask -> {"logits": (1, 3, d, h, w)}`` (ShaSpec or the
            baseline U-Net), frozen (``frozen``).
        pred: ``(D, M, D, D)`` the synthesis network's estimate of the block's slices, z-scores
            (with its gradient).
        x0: ``(D, M, D, D)`` the true slices, z-scores; 0 outside the brain.
        missing: ``(M,)`` or ``(D, M)`` (one pattern for the block), 1 = missing.
        regions: ``(3, D, D, D)`` ET, TC, WT of the block, 0/1.
        pool: synthesis voxels per segmenter voxel (``pooling_factor``); the block's edge must be
            a multiple of it.
    """
    m = (missing if missing.dim() == 1 else missing[0]).bool()
    brain = (x0 != 0).any(dim=1, keepdim=True)  # the segmenter's inputs are 0 outside the brain
    images = torch.where(m[None, :, None, None], pred * brain, x0)
    volume = images.permute(1, 0, 2, 3)[None]  # slices (z) first -> (1, M, D, D, D)
    target = regions[None].to(volume.dtype)
    if pool > 1:
        volume = F.avg_pool3d(volume, pool)
        # a region covers a segmenter voxel when it covers half of it (prepare()'s rule for labels)
        target = (F.avg_pool3d(target, pool) >= 0.5).to(volume.dtype)
    logits = segmenter(volume, torch.ones(1, m.numel(), dtype=torch.bool, device=volume.device))["logits"]
    logits, target = logits[:, SCORED_REGIONS], target[:, SCORED_REGIONS]
    return dice_loss(logits, target) + bce_loss(logits, target)


def block_loss(cfg: SynTrainConfig) -> BlockLoss:
    """The segmenter loss of ``cfg``'s run: ``cfg.segmenter`` loaded (SHA-256 checked, ``weights_only=True``)
    and frozen, and the pooling from ``cfg.spacing`` to its grid. The segmenter follows the blocks to
    their device (the training loop's) on the first call.

    Raises:
        InputError: a segmenter spacing that is not a whole multiple of the synthesis spacing, or a block
            (``cfg.segmenter_block``) that the segmenter's grid cannot take.
    """
    loaded = load_segmenter(cfg.segmenter, device="cpu")
    pool = pooling_factor(cfg.spacing, loaded.spacing)
    if cfg.segmenter_block % (8 * pool):
        raise InputError(
            f"--segmenter-block {cfg.segmenter_block} is not a multiple of {8 * pool} working voxels: the segmenter "
            f"halves its grid three times after pooling by {pool}. Give e.g. {8 * pool * 4}."
        )
    segmenter = frozen(loaded.model)

    def loss(pred: torch.Tensor, x0: torch.Tensor, missing: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        return segmenter_loss(segmenter.to(pred.device), pred, x0, missing, regions, pool)

    return loss
