"""Synthesis conditioned on the tumour regions: where the enhancing tumour, the core and the whole tumour are.

Why: trained on 11 cases, M2DN draws the enhancing rim on its own training tumours and not on a new
one (docs/synthesis.md, "Where the enhancement is lost"): from FLAIR, T1 and T2 alone it cannot tell
where a new tumour enhances. A segmenter can, in part (ET Dice about 0.4 from those three contrasts
on the split), and it has seen the same task on many more patches. So a conditioned network
(``M2DNet(condition_channels=3)``) also reads a map of the regions ET, TC and WT, values in [0, 1].

- Training: the map comes from the case's labels, made to look like a segmenter's probabilities
  (``training_condition``: blurred edges, confidence below 1) and dropped to zeros at random, so the
  network also learns to synthesise without one.
- Inference: the map is a segmenter's probabilities on the acquired modalities, computed by the
  layer above both model families (``medmodels.pipeline``, ``medmodels.region_condition``), since
  ``medmodels.syn`` never imports ``medmodels.seg``; the ``Synthesizer`` is handed a function that
  gives it (``RegionSource``) and brings the map to its working grid like an image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from monai.networks.layers import GaussianFilter

from medmodels.errors import InputError
from medmodels.image import Image
from medmodels.labels import detect_convention, labels_to_regions
from medmodels.modalities import AvailabilityMask

#: The condition's planes, in order (the segmenter's output channels).
REGIONS = ("ET", "TC", "WT")
#: ``config["condition"]`` of a conditioned checkpoint: what its map is and where it comes from at inference.
REGION_CONDITION = {
    "kind": "regions",
    "channels": list(REGIONS),
    "source": "a segmenter's probabilities of ET, TC and WT on the acquired modalities",
}

#: What gives a conditioned synthesizer its map: ``(images, mask, chain) -> (3, Z, Y, X)`` float32
#: probabilities on the grid of ``images`` (the acquired modalities of ``mask``; ``chain`` as for
#: ``Synthesizer.synthesize``), or None for no map (the network then reads zeros, as trained with dropout).
RegionSource = Callable[[Mapping[str, Image], AvailabilityMask, object], np.ndarray | None]


def no_regions(images: Mapping[str, Image], mask: AvailabilityMask, chain: object = None) -> None:
    """The ``RegionSource`` of no map: a conditioned network synthesises as without a segmenter (an
    ablation of the map, or a reader who wants no segmenter's guess in the image)."""
    return None


def condition_channels(config: Mapping) -> int:
    """Planes of the condition map a synthesis checkpoint's network reads (0 = none)."""
    return int(config.get("net", {}).get("condition_channels", 0))


def label_regions(labels: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` BraTS labels (either convention) -> ``(B, 3, H, W)`` float32 ET, TC, WT."""
    array = labels.cpu().numpy()
    regions = labels_to_regions(array, detect_convention(array))  # (3, B, H, W)
    return torch.from_numpy(np.ascontiguousarray(regions.transpose(1, 0, 2, 3))).float()


def soften(
    regions: torch.Tensor, rng: np.random.Generator, max_sigma: float = 2.0, min_confidence: float = 0.6
) -> torch.Tensor:
    """Region masks made to look like a segmenter's probabilities.

    Each item's map is blurred with a Gaussian of sigma drawn uniformly in ``0..max_sigma`` pixels
    (a segmenter's edges are soft) and each of its planes scaled by a confidence drawn uniformly in
    ``min_confidence..1`` (its probabilities inside a region are rarely all 1).

    Args:
        regions: ``(B, 3, H, W)`` float in [0, 1].
        rng: draws the sigmas and confidences.

    Returns:
        ``(B, 3, H, W)`` float32 in [0, 1]; a new tensor.
    """
    out = torch.empty_like(regions)
    for b in range(regions.shape[0]):
        sigma = float(rng.uniform(0.0, max_sigma))
        item = regions[b : b + 1]
        if sigma > 0.05:  # below that the kernel is a single tap
            item = GaussianFilter(spatial_dims=2, sigma=sigma)(item)
        confidence = torch.from_numpy(rng.uniform(min_confidence, 1.0, regions.shape[1])).float()
        out[b] = (item[0] * confidence[:, None, None]).clamp(0, 1)
    return out


def training_condition(labels: torch.Tensor, rng: np.random.Generator, dropout: float) -> torch.Tensor:
    """The condition of a training batch: its labels' regions, softened (``soften``), each item's map
    set to zeros with probability ``dropout`` (no segmenter: the network learns to do without).

    Args:
        labels: ``(B, H, W)`` the batch's labels, after its augmentation (so the map moves with the slice).
        rng: the batch's generator.
        dropout: probability in 0..1.

    Returns:
        ``(B, 3, H, W)`` float32.
    """
    if not 0.0 <= dropout <= 1.0:
        raise InputError(f"--condition-dropout is a probability: give a value in 0..1 (got {dropout}).")
    condition = soften(label_regions(labels), rng)
    keep = torch.from_numpy(rng.random(len(condition)) >= dropout).float()
    return condition * keep[:, None, None, None]


def bind(net: torch.nn.Module, condition: torch.Tensor | None) -> Callable:
    """The network with its condition fixed, called as the variants call a network: ``(x, t, missing,
    context)``. The condition is an input of the network, never noised nor scaled, so the diffusion
    functions need not know it; None: ``net`` itself (an unconditioned network, or no map)."""
    if condition is None:
        return net

    def conditioned(x, t, missing, context=None):
        return net(x, t, missing, context, condition)

    return conditioned
