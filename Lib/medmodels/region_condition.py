"""A segmenter as the source of a conditioned synthesizer's tumour-region map.

A synthesis network conditioned on the tumour regions (``medmodels.syn.conditioning``) reads, at
inference, a segmenter's probabilities of ET, TC and WT on the acquired modalities. This is
pipeline level, like ``medmodels.downstream``: it uses both ``medmodels.syn`` and ``medmodels.seg``,
which do not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medmodels.image import Image
from medmodels.modalities import AvailabilityMask
from medmodels.seg.inference import Segmenter, load_segmenter, segmenter_file
from medmodels.syn.inference import Synthesizer, load_synthesizer


class SegmenterRegions:
    """``syn.conditioning.RegionSource`` from a segmenter: its probabilities (ET, TC, WT) on the acquired
    modalities, before any threshold (the map the network was trained to read is soft).

    It keeps the last map it gave: asked again for the same inputs (several samples drawn one call at a
    time; ``evaluate-syn``'s two models on one case and pattern) it gives that map again, and a run which
    also segments the same acquired volumes (``medmodels.pipeline``) takes the probabilities from it
    (``take``) instead of running the segmenter twice on one input.

    Args:
        segmenter: a loaded ``Segmenter``; or a checkpoint reference (``seg.inference.load_segmenter``'s;
            None = the default segmenter), whose file is checked now and loaded at the first call, so a
            run whose synthesizer is not conditioned never loads it.
        device: where a segmenter loaded here runs.

    Raises:
        InputError: the reference names no file.
    """

    def __init__(self, segmenter: Segmenter | str | Path | None = None, device: str = "auto") -> None:
        if not isinstance(segmenter, Segmenter):
            segmenter_file(segmenter)  # a wrong path fails now, not after an hour of evaluation
        self._segmenter = segmenter
        self.device = device
        self._last: tuple[tuple, np.ndarray] | None = None

    @property
    def segmenter(self) -> Segmenter:
        if not isinstance(self._segmenter, Segmenter):
            self._segmenter = load_segmenter(self._segmenter, self.device)
        return self._segmenter

    @staticmethod
    def _inputs(images: Mapping[str, Image], mask: AvailabilityMask, chain) -> tuple:
        # the objects themselves (compared by identity), not copies: the same images of the same run
        return (tuple(images[k] for k in mask.keys), mask.bits, chain)

    def __call__(self, images: Mapping[str, Image], mask: AvailabilityMask, chain=None) -> np.ndarray:
        kept = self._kept(images, mask, chain)
        if kept is not None:
            return kept
        probabilities = self.segmenter.probabilities(images, None, mask, chain)
        self._last = (self._inputs(images, mask, chain), probabilities)
        return probabilities

    def take(self, images: Mapping[str, Image], mask: AvailabilityMask, chain=None) -> np.ndarray | None:
        """The map last given for exactly these image objects, mask and chain (then forgotten, so a
        case's probabilities are not held past its segmentation); None if it was for anything else."""
        probabilities = self._kept(images, mask, chain)
        self._last = None
        return probabilities

    def _kept(self, images: Mapping[str, Image], mask: AvailabilityMask, chain) -> np.ndarray | None:
        """The last map if it was for exactly these image objects, mask and chain, else None."""
        if self._last is None or not set(mask.keys) <= set(images):
            return None
        (images_then, bits_then, chain_then), probabilities = self._last
        images_now, bits_now, chain_now = self._inputs(images, mask, chain)
        same = (
            bits_then == bits_now  # the same mask, so the same number of images below
            and chain_then is chain_now
            and all(a is b for a, b in zip(images_then, images_now, strict=True))
        )
        return probabilities if same else None


def segmenter_regions(segmenter: Segmenter | str | Path | None = None, device: str = "auto") -> SegmenterRegions:
    """The ``RegionSource`` of a segmenter (``SegmenterRegions``)."""
    return SegmenterRegions(segmenter, device)


def load_conditioned_synthesizer(
    checkpoint: str | Path | None = None, device: str = "auto", segmenter: Segmenter | str | Path | None = None
) -> Synthesizer:
    """``syn.inference.load_synthesizer`` with ``segmenter`` (``segmenter_regions``'s) as the region source
    of a conditioned network; an unconditioned one never uses it."""
    return load_synthesizer(checkpoint, device, segmenter_regions(segmenter, device))
